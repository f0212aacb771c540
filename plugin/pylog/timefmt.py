"""RFC 3339 timestamps as integer nanoseconds (``datetime`` holds only microseconds)."""

from __future__ import annotations

import calendar
import re

from .errors import RequestError

_RFC3339_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))$"
)
ZERO_TIME = "0001-01-01T00:00:00Z"


def parse_rfc3339_ns(value: str | None) -> int | None:
    """Nanoseconds since the epoch, or None for Go's zero time / empty (meaning "unset")."""
    if not value or value == ZERO_TIME:
        return None
    m = _RFC3339_RE.match(value)
    if not m:
        raise RequestError(f"invalid RFC3339 timestamp {value!r}")
    year, mon, day, hh, mm, ss = (int(m.group(i)) for i in range(1, 7))
    if year <= 1:
        return None
    frac = int((m.group(7) or "0").ljust(9, "0"))
    secs = calendar.timegm((year, mon, day, hh, mm, ss, 0, 0, 0))
    if m.group(9):
        offset = (int(m.group(10)) * 60 + int(m.group(11))) * 60
        secs -= offset if m.group(9) == "+" else -offset
    return secs * 1_000_000_000 + frac
