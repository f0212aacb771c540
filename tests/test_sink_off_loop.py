"""Every sink encodes a batch in a worker, not on the event loop (whose thread reads the FIFOs):
the encoding costs a step a line. A small batch, cheaper than the handoff, is encoded where it
is. Each sink here sends to the same receivers as its own tests."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import pylog.sinks.elasticsearch
import pylog.sinks.fluentd
import pylog.sinks.loki
import pylog.sinks.otlp
from pylog.entry import LogEntry
from pylog.sinks.base import SMALL_LINES
from pylog.sinks.syslog import SyslogSink
from tests.peers.fluentd_receiver import FluentdReceiver
from tests.peers.loki_receiver import LokiReceiver
from tests.peers.otlp_receiver import OtlpReceiver
from tests.test_sink_elasticsearch import FakeTransport, make_sink
from tests.test_sink_fluentd import ctx
from tests.test_sink_fluentd import sink as fluentd_sink
from tests.test_sink_loki import sink as loki_sink
from tests.test_sink_otlp import sink as otlp_sink
from tests.test_sink_syslog import StreamServer, until
from tests.test_sink_syslog import sink as syslog_sink

BIG = 1000


def batch(n: int) -> list[LogEntry]:
    return [LogEntry(source="stdout", time_nano=1_795_000_000_000_000_000 + i,
                     line=b"line %d" % i) for i in range(n)]


class Threads:
    """Wraps an encoding function and notes, per call, whether it ran on the loop's thread."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> None:
        self.on_loop: list[bool] = []
        loop_thread = threading.get_ident()
        real: Callable[..., Any] = getattr(owner, name)

        def watched(*args: Any, **kwargs: Any) -> Any:
            self.on_loop.append(threading.get_ident() == loop_thread)
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, watched)


async def send_big_then_small(s: Any, *stop: Callable[[], Any],
                               arrived: Callable[[], Any] | None = None) -> None:
    """A batch of BIG lines, then one of 3; then ``arrived`` awaited, the sink closed and the
    receiver stopped."""
    try:
        await s.send(batch(BIG), ctx())
        await s.send(batch(3), ctx())
        if arrived is not None:
            await arrived()
    finally:
        await s.close()
        for f in stop:
            await f()


def test_a_small_batch_is_small() -> None:
    assert 3 <= SMALL_LINES < BIG


async def test_fluentd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    threads = Threads(monkeypatch, pylog.sinks.fluentd, "encode_parts")
    peer = FluentdReceiver()
    await send_big_then_small(fluentd_sink(tmp_path, await peer.start()), peer.stop)
    assert len(peer.events) == BIG + 3
    assert threads.on_loop == [False, True]


async def test_syslog(monkeypatch: pytest.MonkeyPatch) -> None:
    threads = Threads(monkeypatch, SyslogSink, "encode")
    server = StreamServer()
    await server.start()
    await send_big_then_small(syslog_sink(f"tcp://127.0.0.1:{server.port}"), server.stop,
                              arrived=lambda: until(lambda: server.connections and server
                                                    .connections[0].count(b"line ") == BIG + 3))
    assert threads.on_loop == [False, True]


async def test_elasticsearch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    threads = Threads(monkeypatch, pylog.sinks.elasticsearch, "bulk_documents")
    s = make_sink(tmp_path, FakeTransport())
    await send_big_then_small(s)
    assert s.created == BIG + 3
    assert threads.on_loop == [False, True]


@pytest.mark.parametrize("module, name, receiver, make, received", [
    (pylog.sinks.otlp, "request_body", OtlpReceiver, otlp_sink, lambda p: len(p.records)),
    (pylog.sinks.loki, "push_bodies", LokiReceiver, loki_sink, lambda p: len(p.entries)),
], ids=["otlp", "loki"])
async def test_http_push(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: Any,
                         name: str, receiver: Any, make: Any, received: Any) -> None:
    threads = Threads(monkeypatch, module, name)
    peer = receiver()
    await peer.start()
    await send_big_then_small(make(tmp_path, peer.url), peer.stop)
    assert received(peer) == BIG + 3
    assert threads.on_loop == [False, True]
