"""From stored batches to what one sink is sent, and how far its cursor may then move.

Every delivery reassembles dockerd's 16 KiB pieces into lines; a container with multiline rules
also has its lines joined into events (:mod:`pylog.multiline`), and one with a rate limit has
the lines over it held back (:mod:`pylog.ratelimit`). The store keeps the lines as written, so
``docker logs`` never sees any of this. The cursor never moves past a line that is
only partly sent: a piece of a line not yet whole, or the first line of an event not yet ended.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from .frames import Columns
from .multiline import Joiner, MultilineRules
from .position import Position
from .ratelimit import Limiter, RateRules
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

    def __init__(self, start: Position, max_line: int, multiline: MultilineRules | None = None,
                 rate: RateRules | None = None) -> None:
        self.reassembler = Reassembler(max_line)
        self.joiner: Joiner[Position] | None = Joiner(multiline) if multiline else None
        self.limiter = Limiter(rate) if rate else None
        self._safe = start  # the newest position with no line half-read before it

    @property
    def columns(self) -> bool:
        """The next batch may be read as columns (whole lines, sent as they are)."""
        return self.joiner is None and self.limiter is None and not self.reassembler.pending

    def take(self, batch: Batch) -> Taken:
        if self.joiner is None:
            lines, safe = _lines_of(batch, self.reassembler)
            at = Position(batch.seq, safe) if safe is not None else None
            return self._limit(lines), at
        lines, holds = self._lines_and_holds(batch)
        events = self.joiner.push(lines, holds)
        if lines:  # another stream's lines say how long an event's stream has been silent
            events += self.joiner.due(lines[-1].time_nano)
        return self._limit(events), self._cursor()

    def _limit(self, lines: Sequence[Line]) -> Sequence[Line]:
        if self.limiter is None or not lines:
            return lines
        out = self.limiter.take(lines)
        return out + self.limiter.due(lines[-1].time_nano)

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
        """Seconds until an open event times out or a notice is due (None: nothing waits)."""
        due = [d for d in (self.joiner and self.joiner.next_due(),
                           self.limiter and self.limiter.next_due()) if d]
        return None if not due else max(0.0, (min(due) - time.time_ns()) / 1e9)

    def due(self) -> Taken:
        """The events whose stream has been silent for the timeout, and the notices whose
        interval has passed, by the clock."""
        now = time.time_ns()
        events: Sequence[Line] = self.joiner.due(now) if self.joiner else []
        if self.limiter is not None:
            events = self.limiter.take(events) + self.limiter.due(now)
        return events, self._cursor() if self.joiner else None

    def end(self) -> list[Line]:
        """Everything held (the container stopped): an unfinished line, open events, notices."""
        rest = self.reassembler.flush()
        if self.joiner is not None:
            rest = self.joiner.push(rest, [self._safe] * len(rest)) + self.joiner.flush()
        if self.limiter is not None:
            rest = self.limiter.take(rest) + self.limiter.flush()
        return rest

    def notices(self) -> list[Line]:
        """The rate limit's notices not sent yet (pylog shuts down: its counts would be lost)."""
        return self.limiter.flush() if self.limiter else []

    def _cursor(self) -> Position:
        assert self.joiner is not None
        hold = self.joiner.hold()
        return self._safe if hold is None else hold
