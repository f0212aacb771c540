"""The benchmark's receivers do a real consumer's work on every record, whoever sent it: they
decode what pylog's sinks send (and fail on a damaged record, which a byte search would pass)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import aiohttp
import msgpack
import pytest

from pylog.entry import LogEntry
from pylog.options import parse_log_options
from pylog.record import ContainerContext, NamespaceView
from pylog.sinks.es_documents import bulk_documents
from pylog.sinks.fluentd import FluentdSink
from pylog.sinks.loki_encode import push_bodies
from pylog.sinks.otlp_encode import content_type, request_body
from pylog.sinks.syslog import Encoder, octet_frame
from tests.peers.fluentd_receiver import forward_events

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.peers import (  # noqa: E402
    Counter,
    CountingForward,
    SyslogProtocol,
    bulk_texts,
    parse_syslog,
    start_loki,
    start_otlp,
)

CID = "c0ffee" * 10 + "abcd"


def ctx() -> ContainerContext:
    ns = {t: NamespaceView(t, 4026531840 + i, None, i % 2 == 0, key=f"{i:020x}")
          for i, t in enumerate(("cgroup", "ipc", "mnt", "net", "pid", "user", "uts"))}
    return ContainerContext(CID, 'we"b]\\x', "busybox", "sha256:e67c", "tag1", "vm",
                            labels={"a": "1"}, pid=42, namespaces=ns)


def lines(n: int) -> list[LogEntry]:
    return [LogEntry(source="stdout" if i % 3 else "stderr", time_nano=1_700_000_000_000_000_000
                     + i, line=b"line %07d" % i) for i in range(n)]


def fluentd_messages(tmp_path: Path) -> list[bytes]:
    config = FluentdSink.configure(parse_log_options({"fluentd-address": "127.0.0.1:1"}).values)
    assert config is not None
    sink = FluentdSink(config, tmp_path)
    return [bytes(body + option) for body, option, _chunk in sink.messages(lines(500), ctx())]


def test_forward_unpacks_every_record_of_pylogs_messages(tmp_path: Path) -> None:
    receiver = CountingForward()
    receiver.counter = Counter()
    unpacker = msgpack.Unpacker(raw=False)
    for packed in fluentd_messages(tmp_path):
        unpacker.feed(packed)
    chunks = [receiver._handle(msg) for msg in unpacker]
    assert all(chunks)  # each is acked
    tally = receiver.counter.tags["tag1"].as_dict()
    assert (tally["events"], tally["distinct"], tally["dups"]) == (500, 500, 0)


def test_forward_fails_on_a_damaged_record(tmp_path: Path) -> None:
    tag, blob, option = msgpack.unpackb(fluentd_messages(tmp_path)[0], raw=False)
    _tag, entries, _option = forward_events([tag, blob, option])
    assert entries[0][1]["pylog"]["ns_key"]["net"] == f"{3:020x}"
    at = blob.index(b"container_name") + 14
    broken = blob[:at] + b"\xc1" + blob[at + 1:]  # 0xc1: never used in msgpack
    with pytest.raises(ValueError):
        forward_events([tag, broken, option])


def test_syslog_parses_header_structured_data_and_message() -> None:
    enc = Encoder("rfc5424micro", 1)
    c = ctx()
    msgs = enc.encode_all(["stdout"] * 3, [1_700_000_000_000_000_000 + i for i in range(3)],
                          [b"a 0000001", b"b] \"x\" 0000002", b""], enc.middle(c))
    parsed = [parse_syslog(m) for m in msgs]
    app, sd, text = parsed[1]
    assert (app, text) == ("tag1", b"b] \"x\" 0000002")
    (params,) = sd.values()
    assert params[b"container_name"] == b'we"b]\\x'
    assert params[b"ns_net_key"] == f"{3:020x}".encode()
    assert parsed[2][2] == b""
    counter = Counter()
    wire = b"".join(map(octet_frame, msgs))
    SyslogProtocol(counter).data_received(wire)
    assert counter.tags["tag1"].as_dict()["distinct"] == 2
    assert counter.bytes == len(wire)  # bytes per line: what came on the wire


def test_elasticsearch_parses_every_document() -> None:
    body = bulk_documents(lines(50), ctx()).body()
    texts = bulk_texts(body)
    assert texts == {"tag1": [f"line {i:07d}" for i in range(50)]}
    broken = body.replace(b'"message":"line 0000007"', b'"message":"line 0000007')
    with pytest.raises(json.JSONDecodeError):
        bulk_texts(broken)


@pytest.mark.parametrize("protocol", ["http/protobuf", "http/json"])
async def test_otlp_parses_every_record(protocol: str) -> None:
    counter = Counter()
    port = await start_otlp(counter, 0)
    headers = {"content-type": content_type(protocol), "content-encoding": "gzip"}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"http://127.0.0.1:{port}/v1/logs", headers=headers,
                                data=request_body(lines(50), ctx(), protocol, True)) as resp:
            assert resp.status == 200
        async with session.post(f"http://127.0.0.1:{port}/v1/logs", data=b"\xff garbage",
                                headers={"content-type": content_type(protocol)}) as resp:
            assert resp.status >= 400  # an undecodable request fails, counting nothing
    tally = counter.tags["tag1"].as_dict()
    assert tally["events"] == 50 and tally["distinct"] == 50 and counter.messages == 2


@pytest.mark.parametrize("fmt", [False, True])
async def test_loki_decodes_every_entry(fmt: bool) -> None:
    counter = Counter()
    port = await start_loki(counter, 0)
    body = push_bodies(lines(50), ctx(), (), fmt, 1 << 20)[0][1]
    headers = {"content-type": "application/json" if fmt else "application/x-protobuf"}
    if fmt:
        headers["content-encoding"] = "gzip"
    async with aiohttp.ClientSession() as session:
        async with session.post(f"http://127.0.0.1:{port}/loki/api/v1/push", data=body,
                                headers=headers) as resp:
            assert resp.status == 204
    tally = counter.tags["tag1"].as_dict()
    assert tally["events"] == 50 and tally["distinct"] == 50
