"""The fluentd sink packs EventTime itself; its bytes are fluent-logger's (docs/fluentd.md)."""

from __future__ import annotations

import msgpack
from fluent.sender import EventTime

from pylog.entry import LogEntry
from pylog.record import ContainerContext
from pylog.sinks.fluentd_encode import encode_parts

CTX = ContainerContext(container_id="c" * 64, name="web", image_name="img", image_id="sha256:0",
                       tag="web", host_name="host")


def test_event_time_is_fluent_loggers_bytes() -> None:
    times = (0, 1, 999_999_999, 1_000_000_000, 1_764_900_000_123_456_789, (2**32 - 1) * 10**9)
    lines = [LogEntry(source="stdout", time_nano=ns, line=b"x") for ns in times]
    parts, _ = encode_parts(lines, CTX, True)
    for ns, head in zip(times, parts[0::4]):  # each entry's [time, record] header and time
        assert head == b"\x92" + msgpack.packb(EventTime.from_unix_nano(ns)), ns


def test_times_eventtime_cannot_hold_are_clamped_by_fluent_loggers_packer() -> None:
    times = (-5, 2**32 * 10**9 + 7)
    parts, _ = encode_parts([LogEntry(source="stdout", time_nano=ns, line=b"x") for ns in times],
                            CTX, True)
    assert parts[0::4] == [b"\x92" + msgpack.packb(EventTime.from_unix_nano(0)),
                           b"\x92" + msgpack.packb(EventTime.from_unix_nano(2**32 * 10**9 - 1))]
