"""From stored batches to what one sink is sent, and how far its cursor may then move.

Every delivery reassembles dockerd's 16 KiB pieces into lines; a container with multiline rules
also has its lines joined into events (:mod:`pylog.multiline`), one with a rate limit has
the lines over it held back (:mod:`pylog.ratelimit`), and with ``parse=json`` the lines that
are JSON objects become fields (:mod:`pylog.jsonlines`), in that order. The store keeps the lines as written, so
``docker logs`` never sees any of this. The cursor never moves past a line that is
only partly sent: a piece of a line not yet whole, or the first line of an event not yet ended.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from itertools import accumulate, repeat
from operator import add
from typing import Any

from .frames import Columns
from .jsonlines import JsonParser, ParseRules, ParseStats, parse_rules
from .jsonpack import PackingParser
from .multiline import Joiner, MultilineRules, multiline_rules
from .position import Position
from .ratelimit import Limiter, LimitStats, RateRules, rate_rules
from .reader import Batch
from .reassembly import Line, Reassembler

Taken = tuple[Sequence[Line], Position | None]  # lines to send; where the cursor may go after


@dataclass(frozen=True)
class LineRules:
    """What a container's log-opts ask of the lines its sinks are sent."""

    multiline: MultilineRules | None = None
    rate: RateRules | None = None
    parse: ParseRules | None = None


@dataclass
class ShapingCounts:
    """What a delivery's rules did, over all its starts (read at scrape time)."""

    limit: LimitStats = field(default_factory=LimitStats)
    parse: ParseStats = field(default_factory=ParseStats)

    def add(self, other: ShapingCounts) -> None:
        """Go on from a finished delivery's counts (they never go backwards)."""
        for mine, theirs in ((self.limit, other.limit), (self.parse, other.parse)):
            for f in fields(mine):
                setattr(mine, f.name, getattr(mine, f.name) + getattr(theirs, f.name))


def line_rules(values: Any) -> LineRules:
    """The container's line rules from its parsed log-opts. Raises OptionError."""
    return LineRules(multiline_rules(values), rate_rules(values), parse_rules(values))


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

    def __init__(self, start: Position, max_line: int, rules: LineRules | None = None,
                 counts: ShapingCounts | None = None, structs: bool = False) -> None:
        rules, counts = rules or LineRules(), counts or ShapingCounts()
        self.reassembler = Reassembler(max_line)
        self.joiner: Joiner[Position] | None = (Joiner(rules.multiline) if rules.multiline
                                                else None)
        self.limiter = Limiter(rules.rate, counts.limit) if rules.rate else None
        self.parser: JsonParser | None = None
        if rules.parse:  # a sink that packs parsed lines itself (fluentd) has them transcoded
            self.parser = (PackingParser(rules.parse, counts.parse) if structs
                           else JsonParser(rules.parse, counts.parse))
        self._safe = start  # the newest position with no line half-read before it

    @property
    def plain(self) -> bool:
        """Only reassembly (cheap enough for the event loop): no rule of the container's."""
        return self.joiner is None and self.limiter is None and self.parser is None

    @property
    def columns(self) -> bool:
        """The next batch may be read as columns (whole lines: sent as they are, or joined)."""
        return self.limiter is None and not self.reassembler.pending  # (multiline, parse too)

    def take(self, batch: Batch) -> Taken:
        if self.joiner is None:
            lines, safe = _lines_of(batch, self.reassembler)
            at = Position(batch.seq, safe) if safe is not None else None
            return self._shape(lines), at
        cols = batch.entries
        newest: int | None
        if isinstance(cols, Columns) and cols.sizes:  # whole lines: each one's place, in C
            end = batch.ends[-1]
            offsets = list(accumulate(map(add, cols.sizes, repeat(4)),
                                      initial=end - 4 * len(cols.sizes) - sum(cols.sizes)))
            seq = batch.seq
            events = self.joiner.push_columns(cols.sources, cols.times, cols.lines,
                                              lambda i: Position(seq, offsets[i]))
            self._safe, newest = Position(seq, end), cols.times[-1]  # (the notices' clock)
        else:
            lines, holds = self._lines_and_holds(batch)
            events = self.joiner.push(lines, holds)
            newest = lines[-1].time_nano if lines else None
        return self._shape(events, newest), self._cursor()

    def _shape(self, lines: Sequence[Line], now: int | None = None,
               final: bool = False) -> Sequence[Line]:
        """The rate limit (its notices due at ``now``, or all of them if ``final``), then JSON
        parsing of what is sent."""
        notices = 0
        if self.limiter is not None:
            before = self.limiter.stats.notices
            out = self.limiter.take(lines) if lines else []
            if final:
                out += self.limiter.flush()
            elif lines or now is not None:
                out += self.limiter.due(lines[-1].time_nano if now is None else now)
            notices, lines = self.limiter.stats.notices - before, out
        if self.parser is not None and lines:
            lines = self.parser.parse(lines)
            self.parser.stats.not_object -= notices  # pylog's notices are not the container's
        return lines

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
        return self._shape(events, now), self._cursor() if self.joiner else None

    def end(self) -> Sequence[Line]:
        """Everything held (the container stopped): an unfinished line, open events, notices
        (a parse=json batch as it is: a list of it would be its lines as text)."""
        rest = self.reassembler.flush()
        if self.joiner is not None:
            rest = self.joiner.push(rest, [self._safe] * len(rest)) + self.joiner.flush()
        return self._shape(rest, final=True)

    def notices(self) -> list[Line]:
        """The rate limit's notices not sent yet (pylog shuts down: its counts would be lost)."""
        return self.limiter.flush() if self.limiter else []

    def _cursor(self) -> Position:
        assert self.joiner is not None
        hold = self.joiner.hold()
        return self._safe if hold is None else hold
