"""Record and time helpers only the tests need: the plain forms the package's fast paths are
checked against."""

from __future__ import annotations

import time
from typing import Any

from pylog.entry import LogEntry
from pylog.record import ContainerContext, TimestampFormatter


def format_rfc3339_ns(ns: int) -> str:
    """UTC with exactly nine fractional digits, as Elasticsearch ``date_nanos`` wants."""
    secs, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"


def record_dict(line: LogEntry, ctx: ContainerContext, ts: TimestampFormatter) -> dict[str, Any]:
    """A line's record as a dict, built from the context's fields."""
    out: dict[str, Any] = {"@timestamp": ts(line.time_nano),
                           "message": line.line.decode("utf-8", "replace"),
                           "stream": line.source}
    out.update(ctx.record_fields())
    return out


def sharing_summary(ctx: ContainerContext) -> dict[str, list[str]]:
    """For each namespace the container shares, who it shares it with."""
    return {t: list(v.shared_with) for t, v in (ctx.namespaces or {}).items() if v.shared_with}
