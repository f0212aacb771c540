"""The fluentd sink against a receiver that decodes every message (tests/peers), in process:
Docker 29's fluentd-read-timeout bounds the wait for an ack."""

from __future__ import annotations

from pathlib import Path

import pytest

from pylog.entry import LogEntry
from pylog.options import parse_log_options
from pylog.record import ContainerContext
from pylog.sinks.base import SinkError
from pylog.sinks.fluentd import FluentdSink
from tests.peers.fluentd_receiver import FluentdReceiver

CID = "cea5473d46e89ae41d5b1672731285f919468b5b251442d7092dd21e35e109d1"


def sink(tmp_path: Path, port: int, **opts: str) -> FluentdSink:
    values = parse_log_options({"fluentd-address": f"tcp://127.0.0.1:{port}", **opts}).values
    config = FluentdSink.configure(values)
    assert config is not None
    return FluentdSink(config, tmp_path)


def ctx() -> ContainerContext:
    return ContainerContext(CID, "web", "busybox", "sha256:e67c", CID[:12], "vm")


LINES = [LogEntry(source="stdout", time_nano=1_795_000_000_000_000_000 + i, line=b"l%d" % i)
         for i in range(3)]


@pytest.mark.parametrize("ack", [True, False])
async def test_an_ack_that_does_not_come_is_an_error_after_the_read_timeout(
        tmp_path: Path, ack: bool) -> None:
    peer = FluentdReceiver(ack=ack)
    port = await peer.start()
    s = sink(tmp_path, port, **{"fluentd-read-timeout": "200ms"})
    try:
        if ack:
            await s.send(LINES, ctx())
        else:
            with pytest.raises(SinkError, match=r"no ack within fluentd-read-timeout \(0.2 s\)"):
                await s.send(LINES, ctx())
        assert len(peer.events) == 3  # it arrived either way; without the ack it is retried
    finally:
        await s.close()
        await peer.stop()


def test_docker_29_and_older_fluentd_options_are_accepted() -> None:
    values = parse_log_options({"fluentd-address": "tcp://h:24224", "fluentd-read-timeout": "3s",
                                "fluentd-write-timeout": "2s", "fluentd-async-connect": "true"}
                               ).values
    config = FluentdSink.configure(values)
    assert config is not None
    assert config["fluentd-read-timeout"] == 3.0 and config["fluentd-async-connect"] is True
