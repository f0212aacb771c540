"""The Loki sink against a receiver that decodes snappy + Loki's push proto (and JSON), as Loki's
distributor does (tests/peers/loki_receiver.py): labels, structured metadata, both formats, push
size, what each answer does."""

from __future__ import annotations

import base64
import json
import ssl
from pathlib import Path

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st

from pylog.entry import LogEntry
from pylog.errors import OptionError
from pylog.options import parse_log_options
from pylog.proto.loki_push_pb2 import EntryAdapter, LabelPairAdapter, PushRequest, StreamAdapter
from pylog.record import ContainerContext, NamespaceView, build_context
from pylog.sinks import SinkError, configured_sinks
from pylog.sinks.loki import LokiSink
from pylog.sinks.loki_encode import _proto_body, label_text
from tests.peers.loki_receiver import LokiReceiver, Reply, parse_labels
from tests.peers.rsyslog import TlsFiles

CID = "c0ffee" + "2" * 58
T0 = 1_795_000_000_123_456_789


@pytest.fixture(autouse=True)
def no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LOKI_USERNAME", "LOKI_PASSWORD", "LOKI_BEARER_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def ctx(identity: str = "keys", orchestration: dict[str, str] | None = None
        ) -> ContainerContext:
    ns = {"net": NamespaceView("net", 4026532260, 5064, False, ("web",), key="k" * 14),
          "user": NamespaceView("user", 4026531837, None, True, key="u" * 14)}
    return ContainerContext(CID, "sidecar", "busybox:test", "sha256:e67c", "tag1", "vm",
                            labels={"app": "shop"}, env={"MODE": "prod"}, pid=4242,
                            namespaces=ns, host_id="machine1", boot_id="boot1",
                            identity=identity, orchestration=orchestration or {})


def lines(n: int, source: str = "stdout") -> list[LogEntry]:
    return [LogEntry(source=source, time_nano=T0 + i, line=f"line {i} ü".encode())
            for i in range(n)]


def sink(tmp_path: Path, url: str, **opts: str) -> LokiSink:
    config = LokiSink.configure(parse_log_options({"loki-url": url, **opts}).values)
    assert config is not None
    return LokiSink(config, tmp_path)


@pytest.fixture
async def loki():
    p = LokiReceiver()
    await p.start()
    yield p
    await p.stop()


@pytest.mark.parametrize("fmt", ["protobuf", "json"])
async def test_few_labels_and_the_rest_as_structured_metadata(tmp_path: Path, loki: LokiReceiver,
                                                              fmt: str) -> None:
    s = sink(tmp_path, loki.url, **{"loki-format": fmt,
                                    "loki-external-labels": "job=docker,name={{.Name}}"})
    batch = lines(3) + lines(2, "stderr")
    try:
        await s.send(batch, ctx())
    finally:
        await s.close()
    got = loki.entries
    assert sorted((e.time_ns, e.line) for e in got) == sorted(
        (e.time_nano, e.line.decode()) for e in batch)
    for e in got:
        assert set(e.labels) == {"job", "name", "host", "source"}  # nothing per run
        assert e.labels["job"] == "docker" and e.labels["name"] == "sidecar"
        assert e.labels["host"] == "vm" and e.labels["source"] in ("stdout", "stderr")
        assert e.metadata == {"container_id": CID, "image_name": "busybox:test",
                              "tag": "tag1", "pid": "4242", "label_app": "shop",
                              "env_MODE": "prod", "ns_net": "k" * 14, "ns_net_shared": "web",
                              "ns_user": "u" * 14, "host_ns": "user"}
    stdout = [e for e in got if e.labels["source"] == "stdout"]
    assert [e.time_ns for e in stdout] == sorted(e.time_ns for e in stdout)  # order kept
    headers = {k.lower(): v for k, v in loki.requests[0]["headers"].items()}
    assert headers["content-type"] == ("application/json" if fmt == "json"
                                       else "application/x-protobuf")


async def test_identity_full_adds_inodes_and_compose_labels_replace_nothing(
        tmp_path: Path, loki: LokiReceiver) -> None:
    s = sink(tmp_path, loki.url)
    compose = {"compose_service": "web", "compose_project": "shop"}
    try:
        await s.send(lines(1), ctx("full", compose))
    finally:
        await s.close()
    e = loki.entries[0]
    assert e.labels == {"container_name": "sidecar", "compose_service": "web",
                        "compose_project": "shop", "host": "vm", "source": "stdout"}
    assert e.metadata["ns_net_inode"] == "4026532260" and e.metadata["ns_net_id"] == "5064"
    assert e.metadata["host_id"] == "machine1" and e.metadata["boot_id"] == "boot1"


def test_compose_labels_are_taken_from_the_container() -> None:
    info = {"ContainerID": CID, "ContainerName": "/shop-web-1",
            "ContainerLabels": {"com.docker.compose.service": "web",
                                "com.docker.compose.project": "shop", "other": "x"}}
    c = build_context(info, parse_log_options({}))
    assert c.orchestration == {"compose_service": "web", "compose_project": "shop"}
    from pylog.record import context_from_fields
    assert context_from_fields(c.fields()).orchestration == c.orchestration  # saved


async def test_pushes_are_bounded_by_batch_size(tmp_path: Path, loki: LokiReceiver) -> None:
    s = sink(tmp_path, loki.url, **{"loki-batch-size": "2000"})
    try:
        await s.send(lines(100), ctx())
    finally:
        await s.close()
    assert len(loki.requests) > 3
    assert sum(r["entries"] for r in loki.requests) == 100
    assert [e.line for e in loki.entries] == [e.line.decode() for e in lines(100)]


async def test_tenant_and_credentials_come_as_headers(tmp_path: Path, loki: LokiReceiver,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOKI_USERNAME", "u")
    monkeypatch.setenv("LOKI_PASSWORD", "p4ss")
    s = sink(tmp_path, loki.url, **{"loki-tenant-id": "team-a"})
    try:
        await s.send(lines(1), ctx())
    finally:
        await s.close()
    headers = {k.lower(): v for k, v in loki.requests[0]["headers"].items()}
    assert headers["x-scope-orgid"] == "team-a"
    assert headers["authorization"] == "Basic " + base64.b64encode(b"u:p4ss").decode()


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_429_and_5xx_are_sent_again(tmp_path: Path, loki: LokiReceiver,
                                          status: int) -> None:
    loki.replies.append(Reply(status, {"Retry-After": "3"}, "busy"))
    s = sink(tmp_path, loki.url)
    try:
        with pytest.raises(SinkError, match=f"{status} busy") as err:
            await s.send(lines(2), ctx())
        assert err.value.retry_after == 3.0
        await s.send(lines(2), ctx())
    finally:
        await s.close()
    assert len(loki.entries) == 2


async def test_entries_loki_ignored_are_counted_and_the_rest_taken(
        tmp_path: Path, loki: LokiReceiver) -> None:
    text = ("entry with timestamp 2026-12-06 ignored, reason: 'entry too far behind' for "
            "stream: {source=\"stdout\"},\ntotal ignored: 2 out of 5")
    loki.replies.append(Reply(400, text=text))
    s = sink(tmp_path, loki.url)
    try:
        await s.send(lines(5), ctx())  # settled: not raised, not retried
    finally:
        await s.close()
    assert s.rejected == {CID: 2} and s.ignored == 2 and s.accepted == 3
    row = json.loads((tmp_path / "dead-letter" / f"{s.key}.ndjson").read_text())
    assert row["ignored"] == 2 and row["records"] == 5 and "too far behind" in row["error"]


async def test_other_refusals_are_dead_lettered(tmp_path: Path, loki: LokiReceiver) -> None:
    loki.replies.append(Reply(400, text="error parsing labels"))
    s = sink(tmp_path, loki.url)
    try:
        await s.send(lines(2), ctx())
    finally:
        await s.close()
    rows = [json.loads(x) for x in (tmp_path / "dead-letter" / f"{s.key}.ndjson").read_text()
            .splitlines()]
    assert [r["body"] for r in rows] == [e.line.decode() for e in lines(2)]
    assert s.rejected == {CID: 2}


def test_label_text_round_trips_through_lokis_form() -> None:
    labels = {"container_name": 'we"ird\\name', "host": "vm", "source": "stdout",
              "x": "ü\n"}
    assert parse_labels(label_text(labels)) == labels


def test_options_are_checked_naming_the_option(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "http://127.0.0.1:3100/loki/api/v1/push"
    for opts, pattern in [
        ({"loki-url": "ftp://x"}, "'loki-url'"),
        ({"loki-url": "http://u:secret@x:3100/loki/api/v1/push"}, "credentials must not"),
        ({"loki-url": url, "loki-format": "avro"}, "'loki-format'"),
        ({"loki-url": url, "loki-batch-size": "lots"}, "'loki-batch-size'"),
        ({"loki-url": url, "loki-timeout": "soon"}, "'loki-timeout'"),
        ({"loki-url": url, "loki-external-labels": "bad label=x"}, "'loki-external-labels'"),
        ({"loki-url": url, "loki-external-labels": "source=x"}, "set by pylog"),
        ({"loki-url": url, "loki-external-labels": "a={{.Nope}}"}, "Nope"),
        ({"loki-url": url, "loki-tenant-id": "a b"}, "'loki-tenant-id'"),
        ({"loki-url": url, "loki-tls-ca-file": "/nonexistent.pem"}, "'loki-tls-ca-file'"),
        ({"loki-url": url, "loki-tls-insecure-skip-verify": "maybe"},
         "'loki-tls-insecure-skip-verify'"),
    ]:
        with pytest.raises(OptionError, match=pattern) as err:
            configured_sinks(parse_log_options(opts))
        assert "secret" not in str(err.value)
    monkeypatch.setenv("LOKI_USERNAME", "u")
    with pytest.raises(OptionError, match="LOKI_PASSWORD"):
        configured_sinks(parse_log_options({"loki-url": url}))


@given(st.lists(st.tuples(st.sampled_from(["stdout", "stderr"]),
                          st.integers(min_value=-2**62, max_value=2**63 - 1),
                          st.binary(max_size=40)), min_size=1, max_size=20),
       st.dictionaries(st.from_regex(r"[a-z_]{1,8}", fullmatch=True), st.text(max_size=12),
                       max_size=4))
def test_the_push_written_by_hand_is_the_message_classes_push(
        batch: list[tuple[str, int, bytes]], meta: dict[str, str]) -> None:
    by_source: dict[str, list[int]] = {}
    for i, (s, _, _) in enumerate(batch):
        by_source.setdefault(s, []).append(i)
    labels = {s: {"source": s, "host": "vm"} for s in by_source}
    times, texts = [t for _, t, _ in batch], [b for _, _, b in batch]
    mine = PushRequest.FromString(_proto_body(by_source, labels, times, texts, meta))
    reference = PushRequest.FromString(
        proto_body_reference(by_source, labels, times, texts, meta))
    assert mine == reference


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return TlsFiles.make(tmp_path_factory.mktemp("tls"))


@pytest.mark.parametrize("host, opts, works", [
    ("localhost", {}, False),  # verified by default
    ("localhost", {"loki-tls-ca-file": "ca.pem"}, False),  # the server wants a client cert
    ("localhost", {"loki-tls-ca-file": "ca.pem", "loki-tls-cert-file": "client.pem",
                   "loki-tls-key-file": "client.key"}, True),
    ("127.0.0.1", {"loki-tls-ca-file": "ca.pem", "loki-tls-cert-file": "client.pem",
                   "loki-tls-key-file": "client.key"}, False),  # the cert names localhost
    ("127.0.0.1", {"loki-tls-ca-file": "ca.pem", "loki-tls-cert-file": "client.pem",
                   "loki-tls-key-file": "client.key", "loki-tls-server-name": "localhost"},
     True),
    ("localhost", {"loki-tls-insecure-skip-verify": "true", "loki-tls-cert-file": "client.pem",
                   "loki-tls-key-file": "client.key"}, True),
])
async def test_tls_verified_by_default_with_client_certificates(
        tmp_path: Path, tls: TlsFiles, host: str, opts: dict[str, str], works: bool) -> None:
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tls.server_pem, tls.server_key)
    server.load_verify_locations(tls.ca_pem)
    server.verify_mode = ssl.CERT_REQUIRED
    peer = LokiReceiver()
    port = await peer.start(ssl_context=server)
    opts = {k: str(tls.directory / v) if k.endswith("-file") else v for k, v in opts.items()}
    s = sink(tmp_path, f"https://{host}:{port}/loki/api/v1/push", **opts)
    try:
        if works:
            await s.send(lines(2), ctx())
            assert len(peer.entries) == 2
        else:
            with pytest.raises(SinkError):
                await s.send(lines(2), ctx())
            assert not peer.entries
    finally:
        await s.close()
        await peer.stop()


def proto_body_reference(by_source: dict[str, list[int]], labels: dict[str, dict[str, str]],
                         times: list[int], texts: list[bytes], meta: dict[str, str]) -> bytes:
    """The same request built with the message classes (for the tests)."""
    pairs = [LabelPairAdapter(name=k, value=v) for k, v in meta.items()]
    streams = []
    for s, idx in by_source.items():
        entries = [EntryAdapter(timestamp=Timestamp(seconds=times[i] // 1_000_000_000,
                                                    nanos=times[i] % 1_000_000_000),
                                line=texts[i].decode("utf-8", "replace"),
                                structuredMetadata=pairs) for i in idx]
        streams.append(StreamAdapter(labels=label_text(labels[s]), entries=entries))
    data: bytes = PushRequest(streams=streams).SerializeToString()
    return data
