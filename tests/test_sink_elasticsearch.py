"""The Elasticsearch sink without a cluster: options, credentials, the template, the bulk body,
every bulk item outcome (with a fake transport), the dead-letter file; and, against small local
HTTP(S) servers, what elasticsearch-py's transport really sends (headers, auth, TLS, failover)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
import shutil
import socket
import ssl
import stat
import struct
import subprocess
import sys
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Any

import certifi
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from pylog.entry import LogEntry
from pylog.errors import OptionError
from pylog.frames import Columns
from pylog.options import parse_log_options
from pylog.record import ContainerContext, NamespaceView
from pylog.sinks import SINK_TYPES, SinkError, configured_sinks
from pylog.sinks.elasticsearch import (
    DEFAULT_INDEX,
    AllCreated,
    Credentials,
    CredentialsError,
    Docs,
    ElasticsearchSink,
    all_created,
    bulk_documents,
    chunks,
    document_ids,
    index_template,
    load_credentials,
)
from pylog.sinks.es_documents import Doc

SECRET = "s3cr3t-Pa55word"
API_KEY = "VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw=="
CRED_VARS = ("ELASTICSEARCH_USERNAME", "ELASTICSEARCH_PASSWORD", "ELASTICSEARCH_API_KEY",
             "ELASTICSEARCH_CREDENTIALS_FILE")
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")
CID = "c0ffee" + "0" * 58


def payload(doc: Doc) -> str:
    """A document's action line and record line, each ending with a newline."""
    return doc[1]


@pytest.fixture(autouse=True)
def no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from no credential settings, whatever the shell has."""
    for name in CRED_VARS:
        monkeypatch.delenv(name, raising=False)


def ctx(container_id: str = CID) -> ContainerContext:
    ns = {"net": NamespaceView("net", 4026532260, 5064, False, ("web",)),
          "user": NamespaceView("user", 4026531837, 4099, True)}
    return ContainerContext(container_id, "sidecar", "pylog-busybox:test", "sha256:e67c", "tag1",
                            "vm", labels={"app": "shop"}, env={"MODE": "prod"}, pid=4242,
                            namespaces=ns)


def lines(n: int, start: int = 0, source: str = "stdout") -> list[LogEntry]:
    return [LogEntry(source=source, time_nano=1_795_000_000_000_000_000 + i,
                     line=f"line {i}".encode()) for i in range(start, start + n)]


def es_config(**opts: str):
    values = {"elasticsearch-url": "http://127.0.0.1:9200", **opts}
    config = ElasticsearchSink.configure(parse_log_options(values).values)
    assert config is not None
    return config


# ------------------------------------------------------------------------------ options


def test_registered_and_switched_on_by_the_url_only() -> None:
    assert SINK_TYPES["elasticsearch"] is ElasticsearchSink
    assert [c.kind for c in configured_sinks(parse_log_options({}))] == []
    configs = configured_sinks(parse_log_options({"elasticsearch-url": "http://es:9200"}))
    assert [c.kind for c in configs] == ["elasticsearch"]
    assert configs[0]["elasticsearch-index"] == DEFAULT_INDEX == "logs-pylog-default"
    assert configs[0]["elasticsearch-tls-skip-verify"] is False  # verification on by default
    assert configs[0]["elasticsearch-ca-cert"] is None


@pytest.mark.parametrize("value, expected", [
    ("http://es", ("http://es:9200",)),
    ("https://es.example.com:443/", ("https://es.example.com:443",)),
    ("http://10.0.0.1:9201/prefix/", ("http://10.0.0.1:9201/prefix",)),
    ("http://[::1]:9200", ("http://[::1]:9200",)),
    (" http://a:1 , https://b:2 ,http://c", ("http://a:1", "https://b:2", "http://c:9200")),
])
def test_url_list_is_normalised(value: str, expected: tuple[str, ...]) -> None:
    assert parse_log_options({"elasticsearch-url": value})["elasticsearch-url"] == expected


@pytest.mark.parametrize("value, why", [
    ("ftp://es:9200", "scheme"), ("es:9200", "scheme"), ("http://", "no host"),
    ("http://a:1,,http://b:2", "empty"), ("http://a:99999", "port"), ("http://a:x", "port"), ("http://a:0", "port"),
    ("http://a:1/?q=1", "query"), ("", "empty"),
])
def test_bad_urls_name_the_option(value: str, why: str) -> None:
    with pytest.raises(OptionError) as exc:
        parse_log_options({"elasticsearch-url": value})
    assert "'elasticsearch-url'" in str(exc.value) and why in str(exc.value)


def test_credentials_in_the_url_are_refused_without_echoing_them() -> None:
    with pytest.raises(OptionError) as exc:
        parse_log_options({"elasticsearch-url": f"https://elastic:{SECRET}@es:9200"})
    msg = str(exc.value)
    assert "'elasticsearch-url'" in msg and "ELASTICSEARCH_PASSWORD" in msg
    assert SECRET not in msg and "elastic:" not in msg


@pytest.mark.parametrize("value", ["logs-pylog-default", "logs-nginx.access-prod",
                                   "logs-my_app-team_a", "pylog", "app.logs-2026", "0idx"])
def test_good_index_names(value: str) -> None:
    assert parse_log_options({"elasticsearch-index": value})["elasticsearch-index"] == value


@pytest.mark.parametrize("value", ["logs-a-b-c", "logs-app", "logs--x", "logs-A-b", "Pylog",
                                   "_x", "-x", "a b", "a*", "a/b", "", "x" * 256, "logs-a-"])
def test_bad_index_names_name_the_option(value: str) -> None:
    with pytest.raises(OptionError) as exc:
        parse_log_options({"elasticsearch-index": value})
    assert "'elasticsearch-index'" in str(exc.value)


@pytest.mark.parametrize("value, expected", [("true", True), ("1", True), ("false", False),
                                             ("False", False)])
def test_skip_verify_is_a_real_boolean(value: str, expected: bool) -> None:
    opts = parse_log_options({"elasticsearch-tls-skip-verify": value})
    assert opts["elasticsearch-tls-skip-verify"] is expected


def test_skip_verify_refuses_other_words() -> None:
    with pytest.raises(OptionError, match="'elasticsearch-tls-skip-verify'"):
        parse_log_options({"elasticsearch-tls-skip-verify": "yes please"})


def test_ca_cert_is_checked(tmp_path: Path) -> None:
    assert parse_log_options({"elasticsearch-ca-cert": certifi.where()})[
        "elasticsearch-ca-cert"] == certifi.where()
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    for bad, why in [("ca.pem", "absolute"), (str(tmp_path / "none.pem"), "no such file"),
                     (str(junk), "PEM")]:
        with pytest.raises(OptionError) as exc:
            parse_log_options({"elasticsearch-ca-cert": bad})
        assert "'elasticsearch-ca-cert'" in str(exc.value) and why in str(exc.value)


def test_no_credential_log_opt_exists() -> None:
    for name in ("elasticsearch-password", "elasticsearch-username", "elasticsearch-api-key"):
        with pytest.raises(OptionError, match="unknown log opt"):
            parse_log_options({"elasticsearch-url": "http://es", name: SECRET})


def test_sink_key_is_stable_and_carries_no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    a = es_config()
    monkeypatch.setenv("ELASTICSEARCH_USERNAME", "elastic")
    monkeypatch.setenv("ELASTICSEARCH_PASSWORD", SECRET)
    b = es_config()
    assert a.key == b.key and a.key.startswith("elasticsearch-")
    assert SECRET not in repr(b.values)
    assert es_config(**{"elasticsearch-index": "other"}).key != a.key


# ------------------------------------------------------------------------------ credentials


def test_no_credentials() -> None:
    c = load_credentials({})
    assert c.header() is None and c.kind == "none"


def test_basic_auth_from_the_environment() -> None:
    c = load_credentials({"ELASTICSEARCH_USERNAME": "elastic",
                          "ELASTICSEARCH_PASSWORD": SECRET})
    assert c.header() == "Basic " + base64.b64encode(f"elastic:{SECRET}".encode()).decode()
    assert SECRET not in repr(c) and c.kind == "basic"


def test_api_key_from_the_environment_encoded_or_as_id_and_key() -> None:
    assert load_credentials({"ELASTICSEARCH_API_KEY": API_KEY}).header() == f"ApiKey {API_KEY}"
    c = load_credentials({"ELASTICSEARCH_API_KEY": f"myid:{SECRET}"})
    assert c.header() == "ApiKey " + base64.b64encode(f"myid:{SECRET}".encode()).decode()
    assert SECRET not in repr(c)


def test_credentials_file(tmp_path: Path) -> None:
    f = tmp_path / "es-credentials"
    f.write_text(f"# pylog's Elasticsearch account\nusername = pylog\npassword={SECRET}\n\n")
    f.chmod(0o600)
    c = load_credentials({"ELASTICSEARCH_CREDENTIALS_FILE": str(f)})
    assert (c.username, c.password, c.api_key) == ("pylog", SECRET, None)
    assert c.source == f"file {f}"
    f.write_text(f"ELASTICSEARCH_API_KEY={API_KEY}\n")
    assert load_credentials({"ELASTICSEARCH_CREDENTIALS_FILE": str(f)}).header() == \
        f"ApiKey {API_KEY}"


def test_a_readable_credentials_file_is_warned_about(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    f = tmp_path / "creds"
    f.write_text(f"api_key={API_KEY}\n")
    f.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        load_credentials({"ELASTICSEARCH_CREDENTIALS_FILE": str(f)})
    assert "chmod 600" in caplog.text and API_KEY not in caplog.text


@pytest.mark.parametrize("env, file_text, why", [
    ({"ELASTICSEARCH_USERNAME": "elastic"}, None, "no password"),
    ({"ELASTICSEARCH_PASSWORD": SECRET}, None, "no username"),
    ({"ELASTICSEARCH_API_KEY": API_KEY, "ELASTICSEARCH_USERNAME": "u",
      "ELASTICSEARCH_PASSWORD": SECRET}, None, "both"),
    ({"ELASTICSEARCH_USERNAME": "a:b", "ELASTICSEARCH_PASSWORD": SECRET}, None, "':'"),
    ({"ELASTICSEARCH_PASSWORD": SECRET}, f"api_key={API_KEY}\n", "both"),
    ({}, f"{SECRET}\n", "line 1: expected key=value"),
    ({}, f"user={SECRET}\n", "unknown key"),
    ({}, f"username=u\n# c\npassword={SECRET}\napi_key={API_KEY}\n", "both"),
])
def test_unusable_credentials_are_refused_without_the_secret(
        tmp_path: Path, env: dict[str, str], file_text: str | None, why: str) -> None:
    env = dict(env)
    if file_text is not None:
        f = tmp_path / "creds"
        f.write_text(file_text)
        env["ELASTICSEARCH_CREDENTIALS_FILE"] = str(f)
    with pytest.raises(CredentialsError) as exc:
        load_credentials(env)
    assert why in str(exc.value)
    assert SECRET not in str(exc.value) and API_KEY not in str(exc.value)


def test_missing_or_relative_credentials_file() -> None:
    with pytest.raises(CredentialsError, match="No such file"):
        load_credentials({"ELASTICSEARCH_CREDENTIALS_FILE": "/nonexistent/creds"})
    with pytest.raises(CredentialsError, match="absolute"):
        load_credentials({"ELASTICSEARCH_CREDENTIALS_FILE": "creds"})


def test_unusable_credentials_fail_docker_run_naming_the_url_option(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ELASTICSEARCH_PASSWORD", SECRET)
    with pytest.raises(OptionError) as exc:
        parse_log_options({"elasticsearch-url": "http://es:9200"})
    assert "'elasticsearch-url'" in str(exc.value) and "no username" in str(exc.value)
    assert SECRET not in str(exc.value)
    parse_log_options({})  # the sink is off: nothing to check


# ------------------------------------------------------------------------------ template


def test_template_for_a_data_stream() -> None:
    t = index_template("logs-pylog-default", data_stream=True)
    assert t["index_patterns"] == ["logs-pylog-default"]
    assert t["priority"] > 100 and t["data_stream"] == {}
    m = t["template"]["mappings"]
    props = m["properties"]
    assert props["@timestamp"] == {"type": "date_nanos"}
    assert props["message"]["type"] == "text"
    for path in (("stream",), ("tag",), ("container", "id"), ("container", "name"),
                 ("container", "image", "name"), ("container", "image", "id"),
                 ("host", "name")):
        node: Any = props
        for p in path[:-1]:
            node = node[p]["properties"]
        assert node[path[-1]]["type"] == "keyword", path
    dyn = {next(iter(d.values()))["path_match"]: next(iter(d.values()))["mapping"]["type"]
           for d in m["dynamic_templates"]}
    assert dyn == {"pylog.ns_key.*": "keyword", "pylog.ns_shared.*": "keyword",
                   "pylog.ns_inode.*": "long", "pylog.ns_id.*": "long",
                   "container.labels.*": "keyword", "pylog.env.*": "keyword"}
    assert props["pylog"]["properties"]["host_ns"]["type"] == "keyword"


def test_template_for_a_plain_index_has_no_data_stream() -> None:
    t = index_template("pylog", data_stream=False)
    assert "data_stream" not in t and t["index_patterns"] == ["pylog"]
    json.dumps(t)  # serialisable as is


# ------------------------------------------------------------------------------ bulk body


def test_bulk_body_is_create_actions_with_the_records() -> None:
    batch = lines(3) + [LogEntry(source="stderr", time_nano=5, line=b"bad \xff utf8 \"q\"\n")]
    docs = bulk_documents(batch, ctx())
    assert len(docs) == 4
    for doc, line in zip(docs, batch):
        action, record, end = payload(doc).split("\n")
        assert end == "" and json.loads(action) == {"create": {"_id": doc.id}}
        r = json.loads(record)
        assert TS_RE.match(r["@timestamp"]) and r["stream"] == line.source
        assert r["message"] == line.line.decode("utf-8", "replace")
        assert r["container"]["id"] == CID and r["container"]["labels"] == {"app": "shop"}
        # no key in this context: the inode stands in (a context saved before keys existed)
        assert r["pylog"]["ns_key"] == {"net": "ino4026532260", "user": "ino4026531837"}
        assert r["pylog"]["host_ns"] == ["user"] and r["pylog"]["ns_shared"] == {"net": ["web"]}
        assert r["pylog"]["env"] == {"MODE": "prod"} and r["process"]["pid"] == 4242
    assert json.loads(docs[0].source)["@timestamp"].endswith(".000000000Z")


def test_document_ids_are_deterministic_and_distinct() -> None:
    batch = lines(1000)
    ids = document_ids(batch, CID)
    assert ids == document_ids(batch, CID)  # a retried batch gets the same ids
    assert len(set(ids)) == 1000
    assert document_ids(batch, "f" * 64) != ids  # per container
    e = batch[0]
    variants = [LogEntry(source="stderr", time_nano=e.time_nano, line=e.line),
                LogEntry(source="stdout", time_nano=e.time_nano + 1, line=e.line),
                LogEntry(source="stdout", time_nano=e.time_nano, line=e.line + b" ")]
    assert ids[0] not in document_ids(variants, CID)
    # The same bytes at the same nanosecond twice in one batch are still two documents.
    twice = document_ids([e, e, e], CID)
    assert twice == [ids[0], ids[0] + b".1", ids[0] + b".2"]


def reference_ids(lines: list[LogEntry], container_id: str) -> list[str]:
    """document_ids written plainly, one line at a time (what it would be without working a
    column at a time): the ids must not change, or a batch retried across an upgrade would be
    indexed twice."""
    out: list[str] = []
    seen: dict[str, int] = {}
    for line in lines:
        crc = zlib.crc32(container_id.encode() + line.source.encode() + b"\0" + line.line)
        raw = struct.pack(">qI", line.time_nano, crc) + bytes.fromhex(container_id[:6])
        doc_id = base64.urlsafe_b64encode(raw).decode()
        n = seen.get(doc_id)
        seen[doc_id] = 0 if n is None else n + 1
        out.append(doc_id if n is None else f"{doc_id}.{n + 1}")
    return out


def test_document_ids_sort_by_time_and_keep_the_container_apart() -> None:
    """Big-endian time first: later lines sort after earlier ones (what Lucene looks up
    fastest); the same line at the same time in two containers gets two ids."""
    batch = lines(50)
    ids = document_ids(batch, CID)
    assert all(len(i) == 20 for i in ids)
    assert sorted(ids, key=lambda i: base64.urlsafe_b64decode(i)) == ids
    other = "0" * 64
    assert set(document_ids(batch, other)).isdisjoint(ids)
    same_prefix = CID[:6] + "1" * 58  # the same 3-byte prefix: the CRC still tells them apart
    assert set(document_ids(batch, same_prefix)).isdisjoint(ids)


@given(st.lists(st.tuples(st.sampled_from(["stdout", "stderr"]),
                          st.integers(min_value=-2**63, max_value=2**63 - 1),
                          st.binary(max_size=30)), max_size=30),
       st.integers(min_value=0, max_value=3))
def test_document_ids_of_any_batch_are_the_line_by_line_ids(
        batch: list[tuple[str, int, bytes]], repeats: int) -> None:
    entries = [LogEntry(source=s, time_nano=t, line=b) for s, t, b in batch]
    entries += entries[:repeats]  # the same line twice (or more) in one batch
    ids = document_ids(entries, CID)
    assert ids == [i.encode() for i in reference_ids(entries, CID)]
    cols = Columns([e.source for e in entries], [e.time_nano for e in entries],
                   [e.line for e in entries])
    assert document_ids(cols, CID) == ids
    assert len(set(ids)) == len(ids)


def test_bulk_documents_of_columns_are_those_of_entries() -> None:
    batch = lines(50) + [LogEntry(source="stderr", time_nano=5, line=b"bad \xff utf8 \"q\"\n")]
    cols = Columns([e.source for e in batch], [e.time_nano for e in batch],
                   [e.line for e in batch])
    assert bulk_documents(cols, ctx()) == bulk_documents(batch, ctx())


@given(st.lists(st.tuples(st.sampled_from(["stdout", "stderr", "other"]),
                          st.integers(min_value=-2**63, max_value=2**63 - 1),
                          st.binary(min_size=1, max_size=30)), min_size=1, max_size=30),
       st.integers(min_value=0, max_value=3))
def test_the_size_of_a_batch_is_that_of_its_body(batch: list[tuple[str, int, bytes]],
                                                 repeats: int) -> None:
    """Counted without a running total (what a request taken whole needs): the same bytes as
    the body, with repeated ids (``.1``), odd streams and lines that need escaping."""
    entries = [LogEntry(source=s, time_nano=t, line=b) for s, t, b in batch]
    entries += entries[:repeats]
    docs = bulk_documents(entries, ctx())
    assert docs.size() == len(docs.body()) == docs.ends[-1]
    each = [len(payload(docs[i]).encode()) for i in range(len(docs))]
    assert docs.ends == list(accumulate(each))
    assert chunks(docs, docs.size()) == [docs]
    assert sum(len(c.body()) for c in chunks(docs, max(1, docs.size() // 3))) == docs.size()


def test_nothing_left_of_a_request_costs_no_running_total() -> None:
    """What a request taken whole leaves to send again is empty, made without the running
    total of its documents' sizes (a sum over the whole batch, for nothing)."""
    docs = bulk_documents(lines(100), ctx())
    for empty in (docs[:0], docs[50:50], docs[60:40]):
        assert len(empty) == 0 and empty.size() == 0 and empty.body() == b""
        assert empty.ids == [] and empty.sizes() == [] and Docs.concat([empty, empty]) == empty
    assert docs._ends is None  # noqa: SLF001 - the total was never made
    assert Docs.concat([docs[:0], docs]) == docs


def test_big_batches_are_split_into_bounded_requests() -> None:
    docs = bulk_documents(lines(1000, start=1000), ctx())
    size = len(payload(docs[0]).encode())
    assert {len(payload(d).encode()) for d in docs} == {size}
    parts = chunks(docs, 10 * size + 5)
    assert [len(p) for p in parts] == [10] * 100
    assert [d for p in parts for d in p] == list(docs)
    assert [len(p) for p in chunks(docs[:3], 1)] == [1, 1, 1]  # too big alone: one each
    assert [len(p) for p in chunks(docs[5:], 10 * size)] == [10] * 99 + [5]  # a slice's own


def test_requests_are_bounded_in_bytes_not_characters() -> None:
    """Non-ASCII messages: the request size counts UTF-8 bytes (3 for each of these)."""
    wide = [LogEntry(source="stdout", time_nano=i, line="€".encode() * 300) for i in range(40)]
    docs = bulk_documents(lines(40) + wide, ctx())
    sizes = [len(payload(d).encode()) for d in docs]
    assert docs.sizes() == sizes
    assert sizes[-1] - len(payload(docs[-1])) == 600  # 300 characters of 3 bytes
    limit = 4 * sizes[-1]
    parts = chunks(docs, limit)
    assert [d for p in parts for d in p] == list(docs)
    for p in parts:
        assert len(p.body()) <= limit
        assert p.body() == b"".join(payload(d).encode() for d in p)
    assert max(map(len, parts[-9:])) == 4  # the wide ones: at most 4 to a request
    assert [len(p) for p in chunks(bulk_documents(wide, ctx()), limit)] == [4] * 10


@pytest.mark.parametrize("indices", [[], [0], [3, 1], [0, 1, 2, 3, 4], [4, 2, 0]])
def test_picked_and_concatenated_documents_are_those_documents(indices: list[int]) -> None:
    """What is sent again (some items of a request, the retries of several) is exactly those
    documents, with sizes that bound the next requests right."""
    wide = [LogEntry(source="stderr", time_nano=7, line="é".encode() * (i + 1)) for i in range(2)]
    docs = bulk_documents(lines(3) + wide, ctx())
    picked = docs.pick(indices)
    assert list(picked) == [docs[i] for i in indices]
    assert picked.ids == [docs.ids[i] for i in indices]
    assert picked.sizes() == [docs.sizes()[i] for i in indices]
    assert picked.body() == b"".join(payload(docs[i]).encode() for i in indices)
    both = Docs.concat([picked, docs[1:3], docs.pick(indices[::-1])])
    assert list(both) == list(picked) + list(docs[1:3]) + [docs[i] for i in indices[::-1]]
    assert both.sizes() == [len(payload(d).encode()) for d in both]
    assert both.body() == b"".join(payload(d).encode() for d in both)


# ------------------------------------------------------------------------------ item handling


@dataclass
class Req:
    method: str
    path: str
    body: bytes | None
    ndjson: bool

    def docs(self) -> list[tuple[str, dict[str, Any]]]:
        assert self.body is not None and self.body.endswith(b"\n")
        rows = self.body.split(b"\n")[:-1]
        return [(json.loads(a)["create"]["_id"], json.loads(d)) for a, d in zip(rows[::2],
                                                                                 rows[1::2])]


ItemRule = Callable[[str, dict[str, Any], int], int]


@dataclass
class FakeTransport:
    """Answers like Elasticsearch; ``item`` says each document's status (by id, record and how
    many times that id was sent before)."""

    item: ItemRule = lambda doc_id, doc, tries: 201
    bulk_status: list[int] = field(default_factory=list)  # whole-request statuses, in turn
    template_status: int = 200
    data_stream: tuple[int, Any] = (200, {"acknowledged": True})
    fail_connect: bool = False
    credentials: Credentials = field(default_factory=lambda: load_credentials({}))
    requests: list[Req] = field(default_factory=list)
    sent: dict[str, int] = field(default_factory=dict)
    closed: bool = False

    async def request(self, method: str, path: str, body: bytes | None = None,
                      ndjson: bool = False) -> tuple[int, Any]:
        req = Req(method, path, body, ndjson)
        self.requests.append(req)
        await asyncio.sleep(0)  # a request goes out and waits for its answer, as over a socket
        if self.fail_connect:
            raise SinkError("POST /_bulk: Connection error caused by: refused")
        if path.startswith("/_index_template/"):
            return self.template_status, {"acknowledged": True} if self.template_status == 200 \
                else {"error": {"type": "security_exception", "reason": "no"}}
        if path.startswith("/_data_stream/"):
            return self.data_stream
        assert "/_bulk" in path and ndjson
        if self.bulk_status:
            status = self.bulk_status.pop(0)
            if status != 200:
                return status, {"error": {"type": "x", "reason": f"whole request {status}"}}
        items = []
        for doc_id, doc in req.docs():
            tries = self.sent.get(doc_id, 0)
            self.sent[doc_id] = tries + 1
            st = self.item(doc_id, doc, tries)
            item: dict[str, Any] = {"status": st}
            if st >= 300:
                item["error"] = {"type": {409: "version_conflict_engine_exception",
                                          400: "mapper_parsing_exception",
                                          429: "es_rejected_execution_exception"}.get(st, "e"),
                                 "reason": f"status {st} for {doc['message']}"}
            items.append({"create": item})
        return 200, {"errors": any(i["create"]["status"] >= 300 for i in items), "items": items}

    async def close(self) -> None:
        self.closed = True

    def bulks(self) -> list[Req]:
        return [r for r in self.requests if "/_bulk" in r.path]


def make_sink(tmp_path: Path, fake: FakeTransport, **opts: str) -> ElasticsearchSink:
    sink = ElasticsearchSink(es_config(**opts), tmp_path / "state")
    sink.ITEM_RETRY_WAIT = 0.0  # the backoff itself is not under test here

    async def make_transport(credentials: Credentials) -> FakeTransport:
        fake.credentials = credentials
        return fake

    sink.make_transport = make_transport  # type: ignore[method-assign]
    return sink


def message_of(doc: dict[str, Any]) -> int:
    return int(doc["message"].split()[1])


async def test_first_use_installs_the_template_then_the_data_stream(tmp_path: Path) -> None:
    fake = FakeTransport()
    sink = make_sink(tmp_path, fake)
    await sink.send(lines(5), ctx())
    await sink.send(lines(5, 5), ctx())
    paths = [(r.method, r.path.split("?")[0]) for r in fake.requests]
    assert paths[:2] == [("PUT", "/_index_template/pylog-logs-pylog-default"),
                         ("PUT", "/_data_stream/logs-pylog-default")]
    assert paths[2:] == [("POST", "/logs-pylog-default/_bulk")] * 2  # setup only once
    body = json.loads(fake.requests[0].body or b"")
    assert body["data_stream"] == {} and body["priority"] == 200
    assert not fake.requests[0].ndjson and fake.requests[2].ndjson
    assert sink.created == 10 and sink.setup_notes == []


async def test_a_server_without_data_streams_gets_a_plain_index(tmp_path: Path) -> None:
    fake = FakeTransport(data_stream=(400, {"error": {
        "type": "unsupported_operation_exception",
        "reason": "data streams are not supported by osmem"}}))
    sink = make_sink(tmp_path, fake)
    await sink.send(lines(3), ctx())
    templates = [json.loads(r.body or b"") for r in fake.requests if "_index_template" in r.path]
    assert len(templates) == 2 and "data_stream" in templates[0]
    assert "data_stream" not in templates[1]
    assert "does not support data streams" in sink.setup_notes[0]
    assert sink.created == 3


async def test_a_server_that_does_not_know_data_stream_templates(tmp_path: Path) -> None:
    fake = FakeTransport()
    templates: list[dict[str, Any]] = []
    original = fake.request

    async def request(method: str, path: str, body: bytes | None = None,
                      ndjson: bool = False) -> tuple[int, Any]:
        if path.startswith("/_index_template/"):
            templates.append(json.loads(body or b""))
            if "data_stream" in templates[-1]:
                return 400, {"error": {"type": "x_content_parse_exception",
                                       "reason": "[1:2] [index_template] unknown field "
                                                 "[data_stream]"}}
        return await original(method, path, body, ndjson)

    fake.request = request  # type: ignore[method-assign]
    sink = make_sink(tmp_path, fake)
    await sink.send(lines(2), ctx())
    assert ["data_stream" in t for t in templates] == [True, False]
    assert not any("_data_stream" in r.path for r in fake.requests)
    assert "data stream templates" in sink.setup_notes[0] and sink.created == 2


async def test_a_server_without_composable_templates_gets_a_legacy_one(tmp_path: Path) -> None:
    fake = FakeTransport(template_status=404)
    original = fake.request

    async def request(method: str, path: str, body: bytes | None = None,
                      ndjson: bool = False) -> tuple[int, Any]:
        if path.startswith("/_template/"):
            fake.requests.append(Req(method, path, body, ndjson))
            return 200, {"acknowledged": True}
        return await original(method, path, body, ndjson)

    fake.request = request  # type: ignore[method-assign]
    sink = make_sink(tmp_path, fake)
    await sink.send(lines(2), ctx())
    legacy = next(r for r in fake.requests if r.path.startswith("/_template/"))
    body = json.loads(legacy.body or b"")
    assert body["index_patterns"] == [DEFAULT_INDEX] and body["order"] > 100
    assert body["mappings"]["properties"]["@timestamp"] == {"type": "date_nanos"}
    assert "legacy template" in sink.setup_notes[0] and sink.created == 2


async def test_an_existing_data_stream_is_fine(tmp_path: Path) -> None:
    fake = FakeTransport(data_stream=(400, {"error": {
        "type": "resource_already_exists_exception", "reason": "data_stream exists"}}))
    sink = make_sink(tmp_path, fake)
    await sink.send(lines(1), ctx())
    assert sink.setup_notes == [] and len(fake.bulks()) == 1


async def test_a_refused_template_is_noted_and_logs_still_flow(tmp_path: Path) -> None:
    fake = FakeTransport(template_status=403)
    sink = make_sink(tmp_path, fake, **{"elasticsearch-index": "pylog"})
    await sink.send(lines(2), ctx())
    assert "could not install index template" in sink.setup_notes[0]
    assert not any("_data_stream" in r.path for r in fake.requests)  # a plain index
    assert [r.path.split("?")[0] for r in fake.bulks()] == ["/pylog/_bulk"]
    assert sink.created == 2


async def test_a_template_failure_from_an_overloaded_server_is_retried(tmp_path: Path) -> None:
    fake = FakeTransport(template_status=503)
    sink = make_sink(tmp_path, fake)
    with pytest.raises(SinkError, match="503"):
        await sink.send(lines(2), ctx())
    assert fake.bulks() == [] and not sink.setup_done
    fake.template_status = 200
    await sink.send(lines(2), ctx())
    assert sink.setup_done and sink.created == 2


async def test_all_created(tmp_path: Path) -> None:
    fake = FakeTransport()
    sink = make_sink(tmp_path, fake)
    await sink.send(lines(100), ctx())
    assert (sink.created, sink.duplicates, sink.dead_letters.count) == (100, 0, 0)
    assert len(fake.bulks()) == 1 and len(fake.bulks()[0].docs()) == 100
    assert not sink.dead_letters.path.exists()


async def test_409_is_a_duplicate_and_counts_as_delivered(tmp_path: Path) -> None:
    fake = FakeTransport(item=lambda i, d, t: 409 if message_of(d) % 2 else 201)
    sink = make_sink(tmp_path, fake)
    await sink.send(lines(10), ctx())
    assert (sink.created, sink.duplicates, sink.dead_letters.count) == (5, 5, 0)
    assert len(fake.bulks()) == 1


async def test_a_resent_batch_makes_duplicates_not_copies(tmp_path: Path) -> None:
    store: set[str] = set()

    def es(doc_id: str, doc: dict[str, Any], tries: int) -> int:
        if doc_id in store:
            return 409
        store.add(doc_id)
        return 201

    fake = FakeTransport(item=es)
    sink = make_sink(tmp_path, fake)
    batch = lines(50)
    await sink.send(batch, ctx())
    await sink.send(batch, ctx())  # e.g. after a crash before the cursor was saved
    assert len(store) == 50 and (sink.created, sink.duplicates) == (50, 50)


async def test_429_and_5xx_items_are_retried_alone(tmp_path: Path) -> None:
    status = {3: 429, 5: 500, 7: 503}
    fake = FakeTransport(item=lambda i, d, t: status.get(message_of(d), 201) if t == 0 else 201)
    sink = make_sink(tmp_path, fake)
    await sink.send(lines(10), ctx())
    first, second = fake.bulks()
    assert len(first.docs()) == 10
    assert sorted(message_of(d) for _, d in second.docs()) == [3, 5, 7]
    assert (sink.created, sink.item_retries, sink.dead_letters.count) == (10, 3, 0)


async def test_a_whole_request_503_is_retried(tmp_path: Path) -> None:
    fake = FakeTransport(bulk_status=[503, 429, 200])
    sink = make_sink(tmp_path, fake)
    await sink.send(lines(4), ctx())
    assert len(fake.bulks()) == 3 and sink.created == 4


async def test_items_refused_too_long_raise_and_the_retry_sends_only_the_rest(
        tmp_path: Path) -> None:
    down = {"on": True}
    fake = FakeTransport(item=lambda i, d, t: 503 if down["on"] and message_of(d) >= 8 else
                         (400 if message_of(d) == 1 else 201))
    sink = make_sink(tmp_path, fake)
    batch = lines(10)
    with pytest.raises(SinkError, match="2 of 10 documents still not taken.*503"):
        await sink.send(batch, ctx())
    assert len(fake.bulks()) == sink.ITEM_RETRIES + 1
    assert sink.created == 7 and sink.dead_letters.count == 1
    # The delivery sends the same batch again: only the two unsettled documents go.
    down["on"] = False
    await sink.send(batch, ctx())
    assert sorted(message_of(d) for _, d in fake.bulks()[-1].docs()) == [8, 9]
    assert sink.created == 9 and sink.dead_letters.count == 1
    assert len(sink.dead_letters.path.read_text().splitlines()) == 1  # not written twice
    times = {message_of(d): fake.sent[i] for i, d in fake.bulks()[0].docs()}
    assert times == {m: (sink.ITEM_RETRIES + 2 if m >= 8 else 1) for m in range(10)}


async def test_rejected_documents_go_to_the_dead_letter_file(tmp_path: Path) -> None:
    fake = FakeTransport(item=lambda i, d, t: 400 if message_of(d) in (2, 4) else 201)
    sink = make_sink(tmp_path, fake)
    await sink.send(lines(6), ctx())
    await sink.send(lines(2, 10), ctx())  # no more rejections: the file is only appended to
    assert (sink.created, sink.dead_letters.count) == (6, 2)
    assert len(fake.bulks()) == 2  # rejected documents are never sent again
    path = tmp_path / "state" / "dead-letter" / f"{sink.key}.ndjson"
    assert path == sink.dead_letters.path and sink.key.startswith("elasticsearch-")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert [r["document"]["message"] for r in rows] == ["line 2", "line 4"]
    for r in rows:
        assert r["status"] == 400 and r["error"]["type"] == "mapper_parsing_exception"
        assert r["index"] == "logs-pylog-default" and r["sink"] == sink.key
        assert r["document"]["container"]["id"] == CID and TS_RE.match(
            r["document"]["@timestamp"])
        assert r["_id"] in fake.sent


async def test_mixed_201_409_429_500_400(tmp_path: Path) -> None:
    plan = {0: 201, 1: 409, 2: 429, 3: 500, 4: 400}
    fake = FakeTransport(item=lambda i, d, t: plan[message_of(d) % 5] if t == 0 else 201)
    sink = make_sink(tmp_path, fake)
    await sink.send(lines(50), ctx())
    assert (sink.created, sink.duplicates, sink.dead_letters.count) == (30, 10, 10)
    assert sink.item_retries == 20 and len(fake.bulks()) == 2
    assert len(sink.dead_letters.path.read_text().splitlines()) == 10


async def test_a_dead_letter_file_that_cannot_be_written_fails_the_batch(
        tmp_path: Path) -> None:
    fake = FakeTransport(item=lambda i, d, t: 400 if message_of(d) == 0 else 201)
    sink = make_sink(tmp_path, fake)
    sink.dead_letters.path.mkdir(parents=True)  # a directory where the file should be
    with pytest.raises(SinkError, match="could not be kept"):
        await sink.send(lines(3), ctx())
    sink.dead_letters.path.rmdir()
    await sink.send(lines(3), ctx())  # the rejected one was not lost: it is tried again
    assert sink.dead_letters.count == 1 and sink.created == 2
    assert len(fake.bulks()[-1].docs()) == 1


@pytest.mark.parametrize("status", [403, 404])
async def test_items_refused_for_reasons_not_their_own_are_not_dead_lettered(
        tmp_path: Path, status: int) -> None:
    fake = FakeTransport(item=lambda i, d, t: status)
    sink = make_sink(tmp_path, fake)
    with pytest.raises(SinkError, match=str(status)):
        await sink.send(lines(3), ctx())
    assert sink.dead_letters.count == 0 and not sink.dead_letters.path.exists()


async def test_an_unreachable_cluster_raises(tmp_path: Path) -> None:
    fake = FakeTransport(fail_connect=True)
    sink = make_sink(tmp_path, fake)
    with pytest.raises(SinkError, match="Connection error"):
        await sink.send(lines(3), ctx())
    fake.fail_connect = False
    await sink.send(lines(3), ctx())
    assert sink.created == 3


async def test_a_413_halves_the_request(tmp_path: Path) -> None:
    fake = FakeTransport(bulk_status=[413, 413, 200, 200, 200])
    sink = make_sink(tmp_path, fake)
    await sink.send(lines(8), ctx())
    assert [len(r.docs()) for r in fake.bulks()] == [8, 4, 2, 2, 4]
    assert sink.created == 8


async def test_a_single_document_too_big_for_the_server_is_dead_lettered(tmp_path: Path) -> None:
    fake = FakeTransport(bulk_status=[413, 200])
    sink = make_sink(tmp_path, fake)
    await sink.send(lines(1), ctx())
    assert sink.dead_letters.count == 1
    assert json.loads(sink.dead_letters.path.read_text())["status"] == 413


async def test_requests_stay_under_the_bound(tmp_path: Path) -> None:
    fake = FakeTransport()
    sink = make_sink(tmp_path, fake)
    sink.BULK_MAX_BYTES = 64 * 1024
    await sink.send(lines(2000), ctx())
    sizes = [len(r.body or b"") for r in fake.bulks()]
    assert len(sizes) > 5 and max(sizes) <= 64 * 1024
    parsed = await asyncio.to_thread(lambda: sum(len(r.docs()) for r in fake.bulks()))
    assert parsed == 2000 == sink.created


async def test_a_malformed_answer_raises(tmp_path: Path) -> None:
    fake = FakeTransport()
    sink = make_sink(tmp_path, fake)

    async def short(method: str, path: str, body: bytes | None = None,
                    ndjson: bool = False) -> tuple[int, Any]:
        if "/_bulk" in path:
            return 200, {"errors": False, "items": [{"create": {"status": 201}}]}
        return 200, {}

    fake.request = short  # type: ignore[method-assign]
    with pytest.raises(SinkError, match="1 items for 3 documents"):
        await sink.send(lines(3), ctx())


async def test_401_reloads_the_credential_settings(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    creds = tmp_path / "creds"
    creds.write_text(f"username=pylog\npassword={SECRET}\n")
    creds.chmod(0o600)
    monkeypatch.setenv("ELASTICSEARCH_CREDENTIALS_FILE", str(creds))
    fake = FakeTransport(bulk_status=[401])
    made: list[Credentials] = []
    sink = make_sink(tmp_path, fake)
    original = sink.make_transport

    async def counting(credentials: Credentials) -> Any:
        made.append(credentials)
        return await original(credentials)

    sink.make_transport = counting  # type: ignore[method-assign]
    with pytest.raises(SinkError) as exc:
        await sink.send(lines(2), ctx())
    assert "credentials" in str(exc.value) and SECRET not in str(exc.value)
    creds.write_text(f"username=pylog\npassword={SECRET}-rotated\n")
    await sink.send(lines(2), ctx())
    assert [c.password for c in made] == [SECRET, f"{SECRET}-rotated"]
    assert sink.created == 2
    assert SECRET not in caplog.text and "pylog" in caplog.text


async def test_broken_credential_settings_at_send_time_raise_without_the_secret(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sink = make_sink(tmp_path, FakeTransport())
    monkeypatch.setenv("ELASTICSEARCH_PASSWORD", SECRET)  # no username
    with pytest.raises(SinkError) as exc:
        await sink.send(lines(1), ctx())
    assert "no username" in str(exc.value) and SECRET not in str(exc.value)


async def test_close_closes_the_transport(tmp_path: Path) -> None:
    fake = FakeTransport()
    sink = make_sink(tmp_path, fake)
    await sink.send(lines(1), ctx())
    await sink.close()
    assert fake.closed and sink.transport is None


# ------------------------------------------------------------------------------ real transport


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class FakeES:
    """A minimal Elasticsearch over HTTP(S) on 127.0.0.1 that records what it is sent."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.seen: list[Seen] = []
        self.tls = tls
        # the _bulk answer's bytes for n documents (default: json.dumps' spaced form)
        self.bulk_answer: Callable[[int], bytes] | None = None
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append(Seen(request.method, request.path_qs, dict(request.headers), body))
        if request.path.endswith("/_bulk"):
            n = body.count(b"\n") // 2
            if self.bulk_answer is not None:
                return web.Response(body=self.bulk_answer(n), content_type="application/json")
            return web.json_response({"errors": False,
                                      "items": [{"create": {"status": 201}}] * n})
        return web.json_response({"acknowledged": True})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=self.tls)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def fake_es() -> AsyncIterator[FakeES]:
    es = FakeES()
    await es.start()
    yield es
    await es.stop()


def dead_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connections are refused
    return port


def real_sink(tmp_path: Path, url: str, **opts: str) -> ElasticsearchSink:
    return ElasticsearchSink(es_config(**{"elasticsearch-url": url, **opts}), tmp_path / "state")


@contextlib.asynccontextmanager
async def opened_sink(tmp_path: Path, url: str, **opts: str) -> AsyncIterator[ElasticsearchSink]:
    """A real sink, closed (its transport's session) when the block is left, however."""
    sink = real_sink(tmp_path, url, **opts)
    try:
        yield sink
    finally:
        await sink.close()


async def test_transport_sends_plain_json_headers_and_basic_auth(
        tmp_path: Path, fake_es: FakeES, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("ELASTICSEARCH_USERNAME", "pylog")
    monkeypatch.setenv("ELASTICSEARCH_PASSWORD", SECRET)
    async with opened_sink(tmp_path, f"http://127.0.0.1:{fake_es.port}") as sink:
        await sink.send(lines(3), ctx())
    assert [(s.method, s.path.split("?")[0]) for s in fake_es.seen] == [
        ("PUT", "/_index_template/pylog-logs-pylog-default"),
        ("PUT", "/_data_stream/logs-pylog-default"), ("POST", "/logs-pylog-default/_bulk")]
    basic = "Basic " + base64.b64encode(f"pylog:{SECRET}".encode()).decode()
    for s in fake_es.seen:
        assert s.headers["Authorization"] == basic
        assert "compatible-with" not in s.headers.get("Accept", "")
        assert "compatible-with" not in s.headers.get("Content-Type", "")
    assert fake_es.seen[0].headers["Content-Type"] == "application/json"
    assert fake_es.seen[2].headers["Content-Type"] == "application/x-ndjson"
    assert fake_es.seen[2].body.count(b'{"create":{"_id":') == 3
    assert SECRET not in caplog.text and basic.split()[1] not in caplog.text


async def test_a_bulk_body_written_in_pieces_arrives_whole_with_its_length(
        tmp_path: Path, fake_es: FakeES, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pieces far smaller than the body (and than a document): the server gets exactly the
    bytes the sink made, under a Content-Length (not chunked)."""
    from pylog.sinks.es_transport import BulkBody
    monkeypatch.setattr(BulkBody, "PIECE", 7)
    pieces: list[int] = []
    write = BulkBody.write_with_length

    async def counted(self: BulkBody, writer: Any, length: int | None) -> None:
        real = writer.write

        async def each(chunk: Any, **kw: Any) -> None:
            pieces.append(len(chunk))
            await real(chunk, **kw)
        writer.write = each
        try:
            await write(self, writer, length)
        finally:
            writer.write = real
    monkeypatch.setattr(BulkBody, "write_with_length", counted)
    batch = lines(40)
    async with opened_sink(tmp_path, f"http://127.0.0.1:{fake_es.port}") as sink:
        await sink.send(batch, ctx())
    bulk = fake_es.seen[-1]
    assert bulk.body == bulk_documents(batch, ctx()).body()
    assert bulk.headers["Content-Length"] == str(len(bulk.body))
    assert "Transfer-Encoding" not in bulk.headers
    assert sum(pieces) == len(bulk.body) and max(pieces) == 7 and len(pieces) > 40


async def test_transport_sends_the_api_key(tmp_path: Path, fake_es: FakeES,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ELASTICSEARCH_API_KEY", API_KEY)
    async with opened_sink(tmp_path, f"http://127.0.0.1:{fake_es.port}") as sink:
        await sink.send(lines(1), ctx())
    assert {s.headers["Authorization"] for s in fake_es.seen} == {f"ApiKey {API_KEY}"}


async def test_without_credentials_no_authorization_header(tmp_path: Path,
                                                           fake_es: FakeES) -> None:
    async with opened_sink(tmp_path, f"http://127.0.0.1:{fake_es.port}") as sink:
        await sink.send(lines(1), ctx())
    assert fake_es.seen and all("Authorization" not in s.headers for s in fake_es.seen)


async def test_a_dead_first_node_fails_over_to_the_next(tmp_path: Path, fake_es: FakeES) -> None:
    urls = f"http://127.0.0.1:{dead_port()},http://127.0.0.1:{fake_es.port}"
    async with opened_sink(tmp_path, urls) as sink:
        for i in range(3):
            await sink.send(lines(10, 10 * i), ctx())
    assert sink.created == 30
    assert sum(s.body.count(b'"create"') for s in fake_es.seen) == 30


async def test_no_live_node_is_a_sink_error(tmp_path: Path) -> None:
    async with opened_sink(tmp_path, f"http://127.0.0.1:{dead_port()},http://127.0.0.1:{dead_port()}") as sink:
        with pytest.raises(SinkError, match="_index_template"):
            await sink.send(lines(1), ctx())


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is not installed (scripts/setup-host.sh --for-tests installs it)")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return str(cert), str(key)


@pytest.fixture
async def tls_es(tls_files: tuple[str, str]) -> AsyncIterator[FakeES]:
    ctx_ = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx_.load_cert_chain(*tls_files)
    es = FakeES(tls=ctx_)
    await es.start()
    yield es
    await es.stop()


async def test_tls_verifies_with_the_ca_cert(tmp_path: Path, tls_es: FakeES,
                                             tls_files: tuple[str, str]) -> None:
    url = f"https://127.0.0.1:{tls_es.port}"
    trusted = real_sink(tmp_path, url, **{"elasticsearch-ca-cert": tls_files[0]})
    untrusted = real_sink(tmp_path, url)
    skipping = real_sink(tmp_path, url, **{"elasticsearch-tls-skip-verify": "true"})
    try:
        await trusted.send(lines(2), ctx())
        assert trusted.created == 2
        with pytest.raises(SinkError, match="(?i)certificate"):
            await untrusted.send(lines(2), ctx())
        await skipping.send(lines(2), ctx())
        assert skipping.created == 2
    finally:
        for s in (trusted, untrusted, skipping):
            await s.close()
    assert sum(s.body.count(b'"create"') for s in tls_es.seen) == 4


def test_importing_the_sink_does_not_import_elasticsearch() -> None:
    """pylog's CLI imports every sink; elasticsearch-py takes ~0.4 s to import."""
    code = ("import sys, pylog.sinks; "
            "sys.exit(1 if 'elasticsearch' in sys.modules else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, check=False)
    assert r.returncode == 0, r.stderr


# ----------------------------------------------------------------------------- the usual answer

COMPACT_ITEM = b'{"create":{"status":201}}'


def compact_answer(n: int) -> bytes:
    """What Elasticsearch writes for n created documents with the sink's filter_path."""
    return b'{"errors":false,"items":[' + b",".join([COMPACT_ITEM] * n) + b"]}"


def test_all_created_counts_only_the_exact_usual_answer() -> None:
    assert all_created(compact_answer(1)) == 1
    assert all_created(compact_answer(5000)) == 5000
    assert isinstance(all_created(compact_answer(3)), AllCreated)
    for other in (
            compact_answer(3).replace(b"201", b"409", 1),  # a duplicate among them
            compact_answer(3)[:-2] + b',{"create":{"status":400,"error":{}}}]}',
            compact_answer(3) + b" ",  # anything more
            compact_answer(3).replace(b"},{", b"}, {", 1),
            compact_answer(3).replace(b"false", b"true"),
            json.dumps({"errors": False, "items": [{"create": {"status": 201}}] * 3}).encode(),
            b'{"errors":false,"items":[]}', b"", b"{}", b'{"acknowledged":true}'):
        assert all_created(other) is None, other
        json.loads(other or b"null")  # each of them is still valid JSON for the decoder


@pytest.mark.parametrize("answer, counts", [
    (compact_answer, (300, 0, 0)),  # the usual answer, recognised in its bytes
    # one duplicate among them: decoded and checked item by item
    (lambda n: compact_answer(n).replace(b"201", b"409", 1), (299, 1, 0)),
], ids=["all-created", "one-duplicate"])
async def test_compact_answers_through_the_transport(
        tmp_path: Path, fake_es: FakeES, answer: Callable[[int], bytes],
        counts: tuple[int, int, int]) -> None:
    fake_es.bulk_answer = answer
    async with opened_sink(tmp_path, f"http://127.0.0.1:{fake_es.port}") as sink:
        await sink.send(lines(300), ctx())
    assert (sink.created, sink.duplicates, sink.dead_letters.count) == counts


async def test_an_answer_with_too_few_items_is_an_error(tmp_path: Path, fake_es: FakeES) -> None:
    fake_es.bulk_answer = lambda n: compact_answer(n - 1)
    async with opened_sink(tmp_path, f"http://127.0.0.1:{fake_es.port}") as sink:
        with pytest.raises(SinkError, match="9 items for 10 documents"):
            await sink.send(lines(10), ctx())
    assert sink.created == 0


def test_a_bulk_body_goes_out_as_it_is() -> None:
    from pylog.sinks.elasticsearch import _serializers
    ndjson = _serializers()["application/x-ndjson"]
    body = bulk_documents(lines(3), ctx()).body()
    assert ndjson.dumps(body) is body  # no copy
    assert ndjson.dumps([{"a": 1}, b'{"b":2}']) == b'{"a":1}\n{"b":2}\n'  # the rest as before
    assert _serializers()["application/json"].loads(b'{"acknowledged":true}') == {
        "acknowledged": True}


@pytest.mark.parametrize("text", [b"100% %s %d %%", b'50% "quoted" %s\\'])
def test_percent_signs_anywhere_are_text_not_format(text: bytes) -> None:
    """A body is one %-format of the columns: a ``%`` in a line, a label or the container's
    name is data, kept as it is."""
    c = ContainerContext(CID, "web%s", "img%d", "sha256:e67c", "t%%", "vm",
                         labels={"pct": "%s%d%%"}, env={"P": "%(x)s"})
    batch = [LogEntry(source="stdout", time_nano=1_795_000_000_000_000_000 + i, line=text)
             for i in range(3)] + [LogEntry(source="stderr", time_nano=5, line=b"%")]
    docs = bulk_documents(batch, c)
    body = docs.body().split(b"\n")
    records = [json.loads(line) for line in body[1::2] if line]
    assert [r["message"] for r in records] == [text.decode()] * 3 + ["%"]
    assert {r["container"]["name"] for r in records} == {"web%s"}
    assert {r["container"]["labels"]["pct"] for r in records} == {"%s%d%%"}
    assert {r["pylog"]["env"]["P"] for r in records} == {"%(x)s"}
    assert len(docs.body()) == docs.size() == docs.ends[-1]
