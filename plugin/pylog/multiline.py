"""Multi-line events (a stack trace) joined into one line for the sinks, per stream.

``multiline-pattern`` (a regex searched in each line) or ``multiline-datetime-format`` (an
strftime format, matched at the line's start, as Docker's ``awslogs-datetime-format``) says which
lines start an event; the lines that follow are appended to it, joined by ``\\n``. An event ends
when its stream's next event starts, after ``multiline-timeout`` of silence on its stream (by the
lines' own times, so a sink catching up joins exactly as a live one), at
``multiline-max-lines`` / ``multiline-max-bytes``, and when the container stops. Its time is its
first line's. The store is never touched: ``docker logs`` shows the lines as written.

An event still open holds the delivery's cursor back to just before its first line (``hold``):
after a restart of pylog it is read and joined again, whole.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .entry import LogEntry
from .errors import OptionError
from .reassembly import Line

T = TypeVar("T")

# Docker's awslogs driver's strftime directives, as regexes (daemon/logger/awslogs).
STRFTIME = {
    "%a": r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)",
    "%A": r"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)",
    "%w": r"[0-6]",
    "%d": r"(?:0[1-9]|[12][0-9]|3[01])",
    "%b": r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)",
    "%B": r"(?:January|February|March|April|May|June|July|August|September|October|November"
          r"|December)",
    "%m": r"(?:0[1-9]|1[0-2])",
    "%Y": r"\d{4}",
    "%y": r"\d{2}",
    "%H": r"(?:[01][0-9]|2[0-3])",
    "%I": r"(?:0[0-9]|1[0-2])",
    "%p": r"[AP]M",
    "%M": r"[0-5][0-9]",
    "%S": r"[0-5][0-9]",
    "%f": r"\d{6}",
    "%z": r"[+-]\d{4}",
    "%Z": r"[A-Z]{1,4}T",
    "%j": r"(?:0[0-9][1-9]|[12][0-9][0-9]|3[0-5][0-9]|36[0-6])",
    "%L": r"\.\d{3}",
}
_DIRECTIVE = re.compile(r"%[a-zA-Z%]")


def datetime_regex(name: str, value: str) -> re.Pattern[str]:
    """An strftime-style format as a regex anchored at the line's start (``%%`` is ``%``)."""
    parts, pos = [], 0
    for m in _DIRECTIVE.finditer(value):
        parts.append(re.escape(value[pos:m.start()]))
        d = m.group()
        if d == "%%":
            parts.append("%")
        elif d in STRFTIME:
            parts.append(STRFTIME[d])
        else:
            raise OptionError(f"invalid value {value!r} for log opt {name!r}: unknown directive "
                              f"{d!r}; known: {' '.join(sorted(STRFTIME))}")
        pos = m.end()
    parts.append(re.escape(value[pos:]))
    return re.compile("^" + "".join(parts))


@dataclass(frozen=True)
class MultilineRules:
    """How one container's lines make events (from its log-opts)."""

    start: re.Pattern[str]
    timeout_ns: int = 1_000_000_000
    max_lines: int = 1000
    max_bytes: int = 1 << 20

    @property
    def search(self) -> Callable[[bytes], Any]:
        """The start pattern's search on a line's bytes: an ASCII pattern (every datetime
        format) searches the bytes themselves (``\\d``, ``\\w``, ``\\s`` then match ASCII
        only), any other the line decoded."""
        if self.start.pattern.isascii():
            try:
                return _bytes_pattern(self.start.pattern, self.start.flags).search
            except re.error:  # (?u), \\uXXXX, \\N{...}: only for text
                pass
        text_search = self.start.search
        return lambda b: text_search(b.decode("utf-8", "replace"))


_NEVER = 1 << 126  # a time no line has


@functools.lru_cache(maxsize=64)
def _bytes_pattern(pattern: str, flags: int) -> re.Pattern[bytes]:
    return re.compile(pattern.encode(), flags & ~re.UNICODE)


def multiline_rules(values: Any) -> MultilineRules | None:
    """The container's multiline rules, or None when it has none. Raises OptionError."""
    pattern, fmt = values["multiline-pattern"], values["multiline-datetime-format"]
    if pattern is not None and fmt is not None:
        raise OptionError("log opts 'multiline-pattern' and 'multiline-datetime-format' "
                          "cannot both be set: each says where an event starts")
    start = pattern if pattern is not None else fmt
    if start is None:
        return None
    if values["multiline-timeout"] <= 0:
        raise OptionError("invalid value for log opt 'multiline-timeout': must be more than 0")
    return MultilineRules(start, int(values["multiline-timeout"] * 1e9),
                          values["multiline-max-lines"], values["multiline-max-bytes"])


@dataclass(slots=True)
class _Event(Generic[T]):
    time_nano: int  # the first line's
    last_nano: int  # the newest line's
    hold: T  # where to read again from to see this event's first line
    parts: list[bytes] = field(default_factory=list)
    size: int = 0  # of the parts joined


@dataclass(slots=True)
class MultilineStats:
    events: int = 0  # events sent
    joined_lines: int = 0  # lines that went into an event of two or more lines
    timeouts: int = 0  # events ended by silence
    cut: int = 0  # events ended by max-lines / max-bytes


class Joiner(Generic[T]):
    """Feed whole lines in stream order; get back events. ``T``: the caller's read position."""

    def __init__(self, rules: MultilineRules) -> None:
        self.rules = rules
        self.stats = MultilineStats()
        self._open: dict[str, _Event[T]] = {}  # per stream, in the order they opened

    def push(self, lines: Sequence[Line], holds: Sequence[T]) -> list[Line]:
        """The events these lines end; ``holds``: for each line, where reading must start again
        to see it whole."""
        return self.push_columns([x.source for x in lines], [x.time_nano for x in lines],
                                 [x.line for x in lines], holds.__getitem__)

    def push_columns(self, sources: list[str], times: list[int], texts: list[bytes],
                     hold_of: Callable[[int], T]) -> list[Line]:
        """:meth:`push` of a batch as columns; ``hold_of(i)`` is asked only for the lines that
        start an event. The starts are found by one C call mapped over the batch."""
        out: list[Line] = []
        rules, opened = self.rules, self._open
        starts = list(map(rules.search, texts))
        next_due = self.next_due() or _NEVER
        for i, text in enumerate(texts):
            source, t = sources[i], times[i]
            if t >= next_due:  # an event silent at this line's time ends before it, whatever
                out += self.due(t)  # the batches: every sink sees the same events, in order
                next_due = self.next_due() or _NEVER
            ev = opened.get(source)
            if ev is not None:
                silent = t - ev.last_nano >= rules.timeout_ns
                full = ev.size + 1 + len(text) > rules.max_bytes
                if silent or full or starts[i] is not None:
                    self.stats.timeouts += silent
                    self.stats.cut += full and not silent
                    out.append(self._close(source))
                    ev = None
            if ev is None:
                ev = opened[source] = _Event(t, t, hold_of(i), [text], len(text))
                next_due = min(next_due, t + rules.timeout_ns)
            else:
                ev.parts.append(text)
                ev.size += 1 + len(text)
                ev.last_nano = t
            if len(ev.parts) >= rules.max_lines:
                self.stats.cut += 1
                out.append(self._close(source))
        return out

    def due(self, now_nano: int) -> list[Line]:
        """Events whose stream has been silent for the timeout at ``now_nano``."""
        late = [s for s, ev in self._open.items() if now_nano - ev.last_nano >= self.rules.timeout_ns]
        self.stats.timeouts += len(late)
        return [self._close(s) for s in late]

    def next_due(self) -> int | None:
        """When the first open event times out (ns), if any is open."""
        if not self._open:
            return None
        return min(ev.last_nano for ev in self._open.values()) + self.rules.timeout_ns

    def flush(self) -> list[Line]:
        """Every open event (the container stopped)."""
        return [self._close(s) for s in list(self._open)]

    def hold(self) -> T | None:
        """Where reading must start again for the open events to be whole (None: none open)."""
        return next(iter(self._open.values())).hold if self._open else None

    def _close(self, source: str) -> Line:
        ev = self._open.pop(source)
        self.stats.events += 1
        if len(ev.parts) > 1:
            self.stats.joined_lines += len(ev.parts)
        return LogEntry(source=source, time_nano=ev.time_nano, line=b"\n".join(ev.parts))
