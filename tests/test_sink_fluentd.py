"""The fluentd sink against a receiver that decodes every message (tests/peers), in process:
Docker 29's fluentd-read-timeout bounds the wait for an ack."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgpack
import pytest

from pylog.entry import LogEntry
from pylog.frames import Columns
from pylog.jsonlines import JsonParser, ParseRules
from pylog.namespaces import NamespaceIdentity
from pylog.nsregistry import namespace_key
from pylog.options import parse_log_options
from pylog.record import ContainerContext, NamespaceView
from pylog.sinks.base import SinkError
from pylog.sinks.fluentd import FluentdSink
from pylog.sinks.fluentd_json import Packed
from tests.peers.fluentd_receiver import FluentdReceiver, forward_events

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


def test_a_record_with_eight_namespaces_is_at_most_three_times_dockers(tmp_path: Path) -> None:
    """Docker's keys once (not again under ``container``), each namespace by its key."""
    ns = {t: NamespaceView(t, 4026532184 + i, 8589934601 + i, t in ("cgroup", "user"),
                           key=namespace_key("b", NamespaceIdentity(t, 4026532184 + i, 4, None)))
          for i, t in enumerate(("cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts"))}
    c = ContainerContext(CID, "web", "busybox:1.36", "sha256:" + "e6" * 32, CID[:12], "node-1",
                         pid=4242, namespaces=ns, host_id="ab" * 16, boot_id="b" * 36)
    lines = [LogEntry(source="stdout", time_nano=1_795_000_000_000_000_000 + i, line=b"hi")
             for i in range(100)]
    ((body, option, _chunk),) = sink(tmp_path, 1).messages(lines, c)
    message = msgpack.unpackb(body + option, raw=False)
    _tag, entries, _option = forward_events(message)
    record = entries[0][1]
    assert record["container_id"] == CID and record["container_name"] == "/web"
    assert record["container"] == {"image": {"name": "busybox:1.36"}}
    assert record["pylog"]["ns_key"] == {t: v.key for t, v in ns.items()}
    dockers = msgpack.packb([msgpack.ExtType(0, bytes(8)), {
        "container_id": CID, "container_name": "/web", "source": "stdout", "log": "hi"}])
    per_line = len(message[1]) / len(lines)  # the entries, each [EventTime, record]
    assert per_line <= 3 * len(dockers), (per_line, len(dockers))


def test_docker_29_and_older_fluentd_options_are_accepted() -> None:
    values = parse_log_options({"fluentd-address": "tcp://h:24224", "fluentd-read-timeout": "3s",
                                "fluentd-write-timeout": "2s", "fluentd-async-connect": "true"}
                               ).values
    config = FluentdSink.configure(values)
    assert config is not None
    assert config["fluentd-read-timeout"] == 3.0 and config["fluentd-async-connect"] is True


class HoldingAcks:
    """A Forward peer that acks nothing until ``hold`` messages have arrived (then every one,
    in order): a sender that waits for each ack before the next message never gets one."""

    def __init__(self, hold: int, reply: bytes | None = None) -> None:
        self.hold = hold
        self.reply = reply  # sent instead of the first ack
        self.arrived: list[list[object]] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        unpacker = msgpack.Unpacker(raw=False)
        acked = 0
        while data := await reader.read(1 << 16):
            unpacker.feed(data)
            self.arrived.extend(unpacker)
            if len(self.arrived) < self.hold:
                continue
            for msg in self.arrived[acked:]:
                answer = self.reply if self.reply and not acked else msgpack.packb(
                    {"ack": msg[2]["chunk"]})
                writer.write(answer)
                acked += 1
            await writer.drain()
        writer.close()


async def test_several_messages_are_in_flight_and_all_are_acked(tmp_path: Path) -> None:
    peer = HoldingAcks(hold=4)
    server = await asyncio.start_server(peer.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    # 40 messages: one line each (a buffer limit smaller than any entry)
    s = sink(tmp_path, port, **{"fluentd-buffer-limit": "1", "fluentd-read-timeout": "5s"})
    lines = [LogEntry(source="stdout", time_nano=1_795_000_000_000_000_000 + i,
                      line=b"l%d" % i) for i in range(40)]
    try:
        await s.send(lines, ctx())
        assert len(peer.arrived) == 40
        entries = [msgpack.unpackb(m[1], raw=False, ext_hook=lambda c, d: d)  # type: ignore[index]
                   for m in peer.arrived]
        assert [e[1]["log"] for e in entries] == [f"l{i}" for i in range(40)]  # in order
    finally:
        await s.close()
        server.close()


async def test_an_ack_of_no_chunk_in_flight_is_an_error(tmp_path: Path) -> None:
    peer = HoldingAcks(hold=1, reply=msgpack.packb({"ack": "not-a-chunk-we-sent"}))
    server = await asyncio.start_server(peer.serve, "127.0.0.1", 0)
    s = sink(tmp_path, server.sockets[0].getsockname()[1])
    try:
        with pytest.raises(SinkError, match="not an ack of a chunk in flight"):
            await s.send(LINES, ctx())
    finally:
        await s.close()
        server.close()


async def test_a_parse_json_batch_with_text_lines_is_packed_in_the_worker_too(
        tmp_path: Path) -> None:
    """A parse=json batch the one-call packing does not take (a line in it is not an object)
    is packed by the general encoding in ``prepare``, so the loop does not encode it: the same
    records as sending the parsed batch."""
    texts = [b'{"level":"INFO","msg":"served","n":%d}' % i if i % 7 else b"plain %d" % i
             for i in range(100)]
    cols = Columns(["stdout"] * 100, [1_795_000_000_000_000_000 + i for i in range(100)], texts)
    parsed = JsonParser(ParseRules()).parse(cols)
    peer = FluentdReceiver()
    s = sink(tmp_path, await peer.start(), **{"fluentd-buffer-limit": "2k"})
    try:
        packed = s.prepare(parsed, ctx())
        assert isinstance(packed, Packed) and len(packed.messages) > 3 and len(packed) == 100
        await s.send(packed, ctx())
        await s.send(parsed, ctx())
        await peer.wait_for(200)
        first, again = peer.events[:100], peer.events[100:]
        assert [e.record for e in first] == [e.record for e in again]
        assert first[7].record["log"] == "plain 7" and "json" not in first[7].record
        assert first[8].record["json"] == {"n": 8}
    finally:
        await s.close()
        await peer.stop()


async def test_a_parse_json_batch_packed_in_the_worker_sends_the_same_records(
        tmp_path: Path) -> None:
    """``prepare`` (the delivery's worker) packs a parse=json batch of objects: what ``send``
    then writes is what it writes for the batch as parsed; a batch of text stays as it is."""
    texts = [b'{"level":"INFO","msg":"served","time":"t","n":%d}' % i for i in range(300)]
    rules = ParseRules()
    cols = Columns(["stdout"] * 300, [1_795_000_000_000_000_000 + i for i in range(300)], texts)
    peer = FluentdReceiver()
    s = sink(tmp_path, await peer.start(), **{"fluentd-buffer-limit": "4k"})
    try:
        assert s.prepare(LINES, ctx()) is LINES
        packed = s.prepare(JsonParser(rules).parse(cols), ctx())
        assert isinstance(packed, Packed) and len(packed.messages) > 3
        assert len(packed) == 300 and packed[-1].time_nano == cols.times[-1]
        await s.send(packed, ctx())
        await s.send(packed, ctx())  # a retry: the same messages, new chunk ids
        await s.send(JsonParser(rules).parse(cols), ctx())
        renamed = ContainerContext(CID, "api", "busybox", "sha256:e67c", CID[:12], "vm")
        await s.send(packed, renamed)  # a context changed since: packed again, for it
        await peer.wait_for(1200)
        first, again, parsed, later = (peer.events[i:i + 300] for i in range(0, 1200, 300))
        assert [e.record for e in first] == [e.record for e in again] == [
            e.record for e in parsed]
        assert [e.record["json"]["n"] for e in first] == list(range(300))
        assert first[7].record["message"] == "served" and first[7].record["level"] == "INFO"
        assert {e.record["container_name"] for e in later} == {"/api"}
        assert [{**e.record, "container_name": "/web"} for e in later] == [
            e.record for e in first]
        with pytest.raises(TypeError):
            packed.sliced(0, 1)
    finally:
        await s.close()
        await peer.stop()
