"""The OTLP/HTTP sink against a receiver that parses every request with the opentelemetry-proto
classes (tests/peers/otlp_receiver.py): fields, both encodings, compression, headers from the
environment, what each answer does (retry with Retry-After, dead-letter, partial success)."""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from pylog.delivery import MAX_RETRY_AFTER
from pylog.entry import LogEntry
from pylog.errors import OptionError
from pylog.frames import Columns
from pylog.options import parse_log_options
from pylog.record import ContainerContext, NamespaceView
from pylog.sinks import SinkError, configured_sinks
from pylog.sinks.http_push import retry_after
from pylog.sinks.otlp import OtlpSink
from pylog.sinks.otlp_encode import _status_message, export_request, protobuf_request
from pylog.sinks.otlp_settings import env_headers, parse_headers
from tests.peers.otlp_receiver import Answer, OtlpReceiver
from tests.peers.rsyslog import TlsFiles

CID = "c0ffee" + "1" * 58
T0 = 1_795_000_000_123_456_789


@pytest.fixture(autouse=True)
def no_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_HEADERS", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_LOGS_HEADERS", raising=False)


def ctx() -> ContainerContext:
    ns = {"net": NamespaceView("net", 4026532260, 5064, False, ("web",), key="k" * 14),
          "user": NamespaceView("user", 4026531837, None, True, key="u" * 14)}
    return ContainerContext(CID, "sidecar", "busybox:test", "sha256:e67c", "tag1", "vm",
                            labels={"app": "shop", "com.example.team": "a"},
                            env={"MODE": "prod"}, pid=4242, namespaces=ns,
                            host_id="machine1", boot_id="boot1", host_pid_ns_ino=4026531836)


def lines(n: int, source: str = "stdout") -> list[LogEntry]:
    return [LogEntry(source=source, time_nano=T0 + i, line=f"line {i} ü".encode())
            for i in range(n)]


def sink(tmp_path: Path, url: str, **opts: str) -> OtlpSink:
    config = OtlpSink.configure(parse_log_options({"otlp-endpoint": url, **opts}).values)
    assert config is not None
    return OtlpSink(config, tmp_path)


@pytest.fixture
async def peer():
    p = OtlpReceiver()
    await p.start()
    yield p
    await p.stop()


@pytest.mark.parametrize("protocol", ["http/protobuf", "http/json"])
@pytest.mark.parametrize("compression", ["gzip", "none"])
async def test_every_field_arrives_in_either_encoding(tmp_path: Path, peer: OtlpReceiver,
                                                      protocol: str, compression: str) -> None:
    s = sink(tmp_path, peer.url, **{"otlp-protocol": protocol, "otlp-compression": compression})
    batch = lines(3) + lines(1, "stderr")
    try:
        await s.send(batch, ctx())
    finally:
        await s.close()
    assert len(peer.requests) == 1
    req = peer.requests[0]
    assert req["path"] == "/v1/logs"
    assert req["media"] == ("application/json" if protocol == "http/json"
                            else "application/x-protobuf")
    assert ("content-encoding" in {k.lower() for k in req["headers"]}) == (compression == "gzip")
    got = peer.records
    assert [r.body for r in got] == [e.line.decode() for e in batch]
    assert [r.time_unix_nano for r in got] == [e.time_nano for e in batch]
    assert [r.attributes for r in got] == [{"log.iostream": e.source} for e in batch]
    assert all(r.observed_time_unix_nano >= got[0].time_unix_nano - 10**12 for r in got)
    assert {r.severity_number for r in got} == {0}  # no severity guessed from the stream
    assert got[0].scope == "pylog"
    res = got[0].resource
    assert res["container.id"] == CID and res["container.name"] == "sidecar"
    assert res["container.image.name"] == "busybox:test"
    assert res["container.label.app"] == "shop"
    assert res["container.label.com.example.team"] == "a"  # keys as they are: no nesting here
    assert res["host.name"] == "vm" and res["host.id"] == "machine1"
    assert res["process.pid"] == 4242 and res["pylog.env.MODE"] == "prod"
    assert res["pylog.ns.net.key"] == "k" * 14 and res["pylog.ns.net.inode"] == 4026532260
    assert res["pylog.ns.net.id"] == 5064 and res["pylog.ns.net.is_host"] is False
    assert res["pylog.ns.net.shared_with"] == ["web"]
    assert res["pylog.ns.user.is_host"] is True and "pylog.ns.user.id" not in res
    assert res["pylog.host.boot_id"] == "boot1"


async def test_columns_are_encoded_as_entries() -> None:
    batch = lines(5)
    cols = Columns([e.source for e in batch], [e.time_nano for e in batch],
                   [e.line for e in batch])
    assert export_request(cols, ctx(), 7) == export_request(batch, ctx(), 7)


async def test_a_base_path_gets_v1_logs_appended(tmp_path: Path, peer: OtlpReceiver) -> None:
    s = sink(tmp_path, peer.url + "/otlp/")
    try:
        await s.send(lines(1), ctx())
    finally:
        await s.close()
    assert peer.requests[0]["path"] == "/otlp/v1/logs"


async def test_headers_come_from_the_environment_and_logs_ones_win(
        tmp_path: Path, peer: OtlpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "Authorization=Basic%20abc,x-tenant=one")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_HEADERS", "x-tenant=logs")
    s = sink(tmp_path, peer.url)
    try:
        await s.send(lines(1), ctx())
    finally:
        await s.close()
    headers = {k.lower(): v for k, v in peer.requests[0]["headers"].items()}
    assert headers["authorization"] == "Basic abc" and headers["x-tenant"] == "logs"


@pytest.mark.parametrize("status", [429, 502, 503, 504])
async def test_retryable_answers_fail_the_batch_with_the_servers_retry_after(
        tmp_path: Path, peer: OtlpReceiver, status: int) -> None:
    peer.replies.append(Answer(status, {"Retry-After": "7"}, message="slow down"))
    s = sink(tmp_path, peer.url)
    try:
        with pytest.raises(SinkError, match=f"{status} slow down") as err:
            await s.send(lines(2), ctx())
        assert err.value.retry_after == 7.0
        await s.send(lines(2), ctx())  # the delivery's retry: taken
    finally:
        await s.close()
    assert len(peer.records) == 2 and not (tmp_path / "dead-letter").exists()


@pytest.mark.parametrize("status", [400, 401, 404, 500])
async def test_other_errors_are_final_and_dead_lettered(tmp_path: Path, peer: OtlpReceiver,
                                                        status: int) -> None:
    peer.replies.append(Answer(status, message="bad things"))
    s = sink(tmp_path, peer.url)
    try:
        await s.send(lines(3), ctx())  # no exception: the batch is settled, not retried
    finally:
        await s.close()
    assert s.rejected == {CID: 3}
    rows = [json.loads(x) for x in (tmp_path / "dead-letter" / f"{s.key}.ndjson").read_text()
            .splitlines()]
    assert [r["body"] for r in rows] == [e.line.decode() for e in lines(3)]
    assert {(r["status"], r["error"], r["container_id"]) for r in rows} == {
        (status, "bad things", CID)}
    assert oct((tmp_path / "dead-letter" / f"{s.key}.ndjson").stat().st_mode & 0o777) == "0o600"


async def test_a_partial_success_is_counted_and_dead_lettered(tmp_path: Path,
                                                              peer: OtlpReceiver) -> None:
    peer.replies.append(Answer(200, rejected=2, message="2 too old"))
    s = sink(tmp_path, peer.url)
    try:
        await s.send(lines(5), ctx())
    finally:
        await s.close()
    assert s.rejected == {CID: 2} and s.accepted == 3 and s.partially_rejected == 2
    row = json.loads((tmp_path / "dead-letter" / f"{s.key}.ndjson").read_text())
    assert row["rejected_log_records"] == 2 and row["error"] == "2 too old"
    assert row["records"] == 5 and row["first_time_unix_nano"] == T0


async def test_a_request_too_large_is_halved(tmp_path: Path, peer: OtlpReceiver) -> None:
    peer.replies.append(Answer(413))
    s = sink(tmp_path, peer.url)
    try:
        await s.send(lines(4), ctx())
    finally:
        await s.close()
    assert [r["records"] for r in peer.requests] == [0, 2, 2]
    assert len(peer.records) == 4


async def test_a_refused_connection_is_retried(tmp_path: Path, peer: OtlpReceiver) -> None:
    url = peer.url
    await peer.stop()
    s = sink(tmp_path, url)
    try:
        with pytest.raises(SinkError, match="POST"):
            await s.send(lines(1), ctx())
    finally:
        await s.close()


def test_options_are_checked_naming_the_option(monkeypatch: pytest.MonkeyPatch) -> None:
    for opts, pattern in [
        ({"otlp-endpoint": "ftp://x"}, "otlp-endpoint"),
        ({"otlp-endpoint": "http://u:secret@x:4318"}, "credentials must not"),
        ({"otlp-endpoint": "http://x:4318", "otlp-protocol": "grpc"}, "otlp-protocol"),
        ({"otlp-endpoint": "http://x:4318", "otlp-compression": "zstd"}, "otlp-compression"),
        ({"otlp-endpoint": "http://x:4318", "otlp-timeout": "soon"}, "otlp-timeout"),
        ({"otlp-endpoint": "http://x:4318", "otlp-tls-skip-verify": "maybe"},
         "otlp-tls-skip-verify"),
        ({"otlp-endpoint": "http://x:4318", "otlp-ca-cert": "relative.pem"}, "otlp-ca-cert"),
    ]:
        with pytest.raises(OptionError, match=pattern) as err:
            configured_sinks(parse_log_options(opts))
        assert "secret" not in str(err.value)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_HEADERS", "novalue")
    with pytest.raises(OptionError, match="OTEL_EXPORTER_OTLP_LOGS_HEADERS"):
        configured_sinks(parse_log_options({"otlp-endpoint": "http://x:4318"}))


def test_header_values_are_never_in_an_error() -> None:
    assert parse_headers("a=1, b = two%2C ,", "V") == {"a": "1", "b": "two,"}
    with pytest.raises(OptionError) as err:
        parse_headers("api-key=topsecret,broken", "V")
    assert "topsecret" not in str(err.value)
    assert env_headers({}) == {}


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert retry_after("12") == 12.0
    assert retry_after(None) is None and retry_after("soon") is None
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: now
    assert MAX_RETRY_AFTER >= 60


def test_a_status_message_is_read_off_the_wire() -> None:
    # google.rpc.Status{code: 3, message: "bad"}
    assert _status_message(b"\x08\x03\x12\x03bad") == "bad"
    assert _status_message(b"not a status at all") is None


@given(st.lists(st.tuples(st.sampled_from(["stdout", "stderr"]),
                          st.integers(min_value=-2**63, max_value=2**63 - 1),
                          st.binary(max_size=300)), min_size=1, max_size=20))
def test_the_protobuf_written_by_hand_is_the_message_classes_request(
        batch: list[tuple[str, int, bytes]]) -> None:
    entries = [LogEntry(source=s, time_nano=t, line=b) for s, t, b in batch]
    mine = ExportLogsServiceRequest.FromString(protobuf_request(entries, ctx(), 99))
    assert mine == export_request(entries, ctx(), 99)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return TlsFiles.make(tmp_path_factory.mktemp("tls"))


def server_context(tls: TlsFiles, client_ca: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tls.server_pem, tls.server_key)
    if client_ca:
        ctx.load_verify_locations(tls.ca_pem)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


@pytest.mark.parametrize("opts, works", [
    ({}, False),  # verified by default: the test CA is not the system's
    ({"otlp-ca-cert": "ca"}, True),
    ({"otlp-ca-cert": "wrong-ca"}, False),
    ({"otlp-tls-skip-verify": "true"}, True),
])
async def test_tls_is_verified_by_default(tmp_path: Path, tls: TlsFiles, opts: dict[str, str],
                                          works: bool) -> None:
    peer = OtlpReceiver()
    port = await peer.start(ssl_context=server_context(tls))
    opts = {k: str(tls.directory / f"{v}.pem") if k == "otlp-ca-cert" else v
            for k, v in opts.items()}
    s = sink(tmp_path, f"https://localhost:{port}", **opts)
    try:
        if works:
            await s.send(lines(2), ctx())
            assert len(peer.records) == 2
        else:
            with pytest.raises(SinkError, match="(?i)certificate"):
                await s.send(lines(2), ctx())
            assert not peer.records
    finally:
        await s.close()
        await peer.stop()
