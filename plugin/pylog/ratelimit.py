"""A per-container rate limit on what sinks are sent (``rate-limit``, ``rate-burst``).

A token bucket of ``rate-burst`` lines, refilled at ``rate-limit`` lines a second **by the lines'
own times**: every sink of a container keeps and holds back the same lines, live or catching up
after an outage. A line held back is not sent to sinks; the store keeps it (``docker logs`` has
it). For each stream that had lines held back, each sink gets one notice record per
``rate-notice-interval`` saying how many, stamped with the last one's time.

With multiline rules the limit counts events (the records sinks receive), not lines.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .entry import LogEntry
from .errors import OptionError
from .reassembly import Line


@dataclass(frozen=True)
class RateRules:
    rate: float  # lines a second
    burst: int
    interval_ns: int = 10_000_000_000  # how often a notice may be sent per stream


def rate_rules(values: Any) -> RateRules | None:
    """The container's rate limit, or None when it has none. Raises OptionError."""
    rate, burst = values["rate-limit"], values["rate-burst"]
    if rate is None:
        if burst is not None:
            raise OptionError("log opt 'rate-burst' needs 'rate-limit' (lines a second)")
        return None
    if values["rate-notice-interval"] <= 0:
        raise OptionError("invalid value for log opt 'rate-notice-interval': must be more than 0")
    return RateRules(float(rate), burst if burst is not None else rate,
                     int(values["rate-notice-interval"] * 1e9))


@dataclass(slots=True)
class LimitStats:
    held: int = 0  # lines held back
    notices: int = 0


@dataclass(slots=True)
class _Held:
    count: int
    first_nano: int
    last_nano: int


class Limiter:
    """Feed lines in order; get back those within the limit, with a notice where lines were
    held back (at most one per stream per interval)."""

    def __init__(self, rules: RateRules, stats: LimitStats | None = None) -> None:
        self.rules = rules
        self.stats = LimitStats() if stats is None else stats
        self._tokens = float(rules.burst)
        self._last_nano: int | None = None
        self._held: dict[str, _Held] = {}  # per stream: held back since its last notice

    def take(self, lines: Iterable[Line]) -> list[Line]:
        out: list[Line] = []
        rate, burst, interval = self.rules.rate, self.rules.burst, self.rules.interval_ns
        tokens, last = self._tokens, self._last_nano
        for line in lines:
            t = line.time_nano
            if last is not None and t > last:
                tokens = min(burst, tokens + (t - last) * rate / 1e9)
            last = t if last is None or t > last else last
            held = self._held.get(line.source)
            if held is not None and t - held.first_nano >= interval:
                out.append(self._notice(line.source))
                held = None
            if tokens >= 1.0:
                tokens -= 1.0
                out.append(line)
                continue
            self.stats.held += 1
            if held is None:
                self._held[line.source] = _Held(1, t, t)
            else:
                held.count += 1
                held.last_nano = t
        self._tokens, self._last_nano = tokens, last
        return out

    def due(self, now_nano: int) -> list[Line]:
        """Notices whose interval has passed at ``now_nano`` (the clock, or the newest line)."""
        late = [s for s, h in self._held.items() if now_nano - h.first_nano >= self.rules.interval_ns]
        return [self._notice(s) for s in late]

    def next_due(self) -> int | None:
        if not self._held:
            return None
        return min(h.first_nano for h in self._held.values()) + self.rules.interval_ns

    def flush(self) -> list[Line]:
        """Every notice pending (the container stopped, or pylog shuts down)."""
        return [self._notice(s) for s in list(self._held)]

    def _notice(self, source: str) -> Line:
        h = self._held.pop(source)
        self.stats.notices += 1
        text = (f"pylog: rate-limit held back {h.count} {source} line"
                f"{'' if h.count == 1 else 's'} from {_utc(h.first_nano)} to "
                f"{_utc(h.last_nano)} (limit {self.rules.rate:g}/s, burst "
                f"{self.rules.burst}); docker logs has them")
        return LogEntry(source=source, time_nano=h.last_nano, line=text.encode())


def _utc(ns: int) -> str:
    secs, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"
