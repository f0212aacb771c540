"""From stored batches to what one sink is sent, and how far its cursor may then move.

Every delivery reassembles dockerd's 16 KiB pieces into lines; a container with multiline rules
also has its lines joined into events (:mod:`pylog.multiline`). The store keeps the lines as
written, so ``docker logs`` never sees any of this. The cursor never moves past a line that is
only partly sent: a piece of a line not yet whole, or the first line of an event not yet ended.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from .frames import Columns
from .multiline import Joiner, MultilineRules
from .position import Position
from .reader import Batch
from .reassembly import Line, Reassembler

Taken = tuple[Sequence[Line], Position | None]  # lines to send; where the cursor may go after


def _lines_of(batch: Batch, reassembler: Reassembler) -> tuple[Sequence[Line], int | None]:
    """A batch's lines for the sink, and the offset the cursor may move to after them (only
    where no line is half-read; None: nowhere in this batch)."""
    entries, ends = batch.entries, batch.ends
    if isinstance(entries, Columns):
        return entries, ends[-1]  # whole lines, as columns
    if not reassembler.pending and not any([e.partial for e in entries]):  # noqa: C419
        return entries, ends[-1]  # whole lines already: the common case
    lines: list[Line] = []
    safe = None
    for entry, end in zip(entries, ends):
        line = reassembler.push(entry)
        if line is not None:
            lines.append(line)
        if not reassembler.pending:
            safe = end
    return lines, safe


class Shaper:
    """One delivery's lines, batch by batch, from the position it started reading at."""

    def __init__(self, start: Position, max_line: int,
                 multiline: MultilineRules | None = None) -> None:
        self.reassembler = Reassembler(max_line)
        self.joiner: Joiner[Position] | None = Joiner(multiline) if multiline else None
        self._safe = start  # the newest position with no line half-read before it

    @property
    def columns(self) -> bool:
        """The next batch may be read as columns (whole lines, sent as they are)."""
        return self.joiner is None and not self.reassembler.pending

    def take(self, batch: Batch) -> Taken:
        if self.joiner is None:
            lines, safe = _lines_of(batch, self.reassembler)
            return lines, (Position(batch.seq, safe) if safe is not None else None)
        lines, holds = self._lines_and_holds(batch)
        events = self.joiner.push(lines, holds)
        if lines:  # another stream's lines say how long an event's stream has been silent
            events += self.joiner.due(lines[-1].time_nano)
        return events, self._cursor()

    def _lines_and_holds(self, batch: Batch) -> tuple[list[Line], list[Position]]:
        """The batch's lines, each with where reading must start again to see it whole (the
        newest position before its first piece with no other line half-read)."""
        lines: list[Line] = []
        holds: list[Position] = []
        clean, seq, push = self._safe, batch.seq, self.reassembler.push
        for entry, end in zip(batch.entries, batch.ends):
            line = push(entry)
            if line is not None:
                lines.append(line)
                holds.append(clean)
            if not self.reassembler.pending:
                clean = Position(seq, end)
        self._safe = clean
        return lines, holds

    def wait_s(self) -> float | None:
        """Seconds until an open event times out (None: none is open)."""
        due = self.joiner.next_due() if self.joiner else None
        return None if due is None else max(0.0, (due - time.time_ns()) / 1e9)

    def due(self) -> Taken:
        """The events whose stream has been silent for the timeout, by the clock."""
        assert self.joiner is not None
        return self.joiner.due(time.time_ns()), self._cursor()

    def end(self) -> list[Line]:
        """Everything held (the container stopped): an unfinished line, open events."""
        rest = self.reassembler.flush()
        if self.joiner is None:
            return rest
        return self.joiner.push(rest, [self._safe] * len(rest)) + self.joiner.flush()

    def _cursor(self) -> Position:
        assert self.joiner is not None
        hold = self.joiner.hold()
        return self._safe if hold is None else hold
