"""The fluentd sink packs EventTime itself; its bytes are fluent-logger's (docs/fluentd.md)."""

from __future__ import annotations

import msgpack
from fluent.sender import EventTime

from pylog.sinks.fluentd import event_time


def test_event_time_is_fluent_loggers_bytes() -> None:
    for ns in (0, 1, 999_999_999, 1_000_000_000, 1_764_900_000_123_456_789, (2**32 - 1) * 10**9):
        assert event_time(ns) == msgpack.packb(EventTime.from_unix_nano(ns)), ns
