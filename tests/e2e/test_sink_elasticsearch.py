"""The Elasticsearch sink against a real peer: osmem-server (an OpenSearch-compatible server in one
binary, from PyPI), started by these tests on 127.0.0.1 with a free port, and a real dockerd."""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest
from osmem_server import OsmemError, OsmemServer

from pylog.cursor import Cursor
from pylog.options import parse_log_options
from pylog.sinks.base import Sink
from pylog.sinks.elasticsearch import ElasticsearchSink

from .conftest import Containers, PylogServer, cli, new_server

pytestmark = pytest.mark.e2e

INDEX = "logs-pylog-default"
TEMPLATE = f"pylog-{INDEX}"
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")
SECRET = "Hunter2-osmem-e2e"
T = TypeVar("T")


def eventually(probe: Callable[[], T], ok: Callable[[T], bool], timeout: float,
               what: str) -> T:
    """Poll ``probe`` until ``ok`` holds or the deadline passes (then fail, saying what)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout:.0f} s, {what}: last saw {value!r:.300}")
        time.sleep(0.2)  # polling interval, bounded by the deadline


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Osmem:
    """osmem-server on 127.0.0.1 (port 0: a free one), started and stopped by the test."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.server: OsmemServer | None = None

    def start(self) -> Osmem:
        self.server = OsmemServer.start(addr=f"127.0.0.1:{self.port}", japanese=False)
        self.port = urlsplit(self.server.url).port or 0
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(self, method: str, path: str, body: Any = None) -> Any:
        assert self.server is not None
        return self.server.request(method, path, body)

    def count(self, cid: str, index: str = INDEX) -> int:
        try:
            self.request("POST", f"/{index}/_refresh")
            q = {"query": {"term": {"container.id": cid}}}
            return int(self.request("POST", f"/{index}/_count", q)["count"])
        except OsmemError as e:
            if "index_not_found" in str(e) or " 404 " in str(e):
                return 0
            raise

    def docs(self, cid: str, index: str = INDEX, fields: list[str] | None = None
             ) -> list[dict[str, Any]]:
        self.request("POST", f"/{index}/_refresh")
        body: dict[str, Any] = {"size": 10000, "query": {"term": {"container.id": cid}}}
        if fields is not None:
            body["_source"] = fields
        return [h["_source"] for h in self.request("POST", f"/{index}/_search",
                                                   body)["hits"]["hits"]]

    def wait_count(self, cid: str, n: int, index: str = INDEX, timeout: float = 120) -> int:
        return eventually(lambda: self.count(cid, index), lambda c: c >= n, timeout,
                          f"{n} documents of {cid[:12]} in {index}")


@pytest.fixture
def osmem() -> Iterator[Osmem]:
    server = Osmem().start()
    yield server
    server.stop()


def sink_key(*opts: str, sink: type[Sink] = ElasticsearchSink) -> str:
    config = sink.configure(parse_log_options(dict(o.split("=", 1) for o in opts)).values)
    assert config is not None
    return config.key


def delivered(pylog: PylogServer, cid: str, key: str, timeout: float = 120) -> None:
    """Wait until the sink's cursor for the container is at the end of its stored log (the
    delivery took everything: send returned without error for every batch)."""
    directory = pylog.container_dir(cid)

    def state() -> tuple[int, int]:
        pos = Cursor(directory, key).load()
        if pos is None:
            return (-1, 0)
        return (pos.offset, (directory / "container.log").stat().st_size)

    eventually(state, lambda s: s[0] == s[1], timeout, f"the {key} cursor of {cid[:12]} at the "
               f"end of its log (offset, size)")


def refused_run(containers: Containers, driver: str, *opts: str) -> str:
    """``docker run`` that is expected to fail at the log driver; returns its stderr. (A run
    that fails there leaves a "Created" container, which Containers does not track: removed
    here.)"""
    name = f"pylog-es-refused-{os.getpid()}-{time.monotonic_ns()}"
    try:
        r = containers.create(driver, "true", *opts, detach_args=("--name", name), check=False)
        assert r.returncode != 0, "docker run should have failed"
        return r.stderr
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60,
                       check=False)


# ------------------------------------------------------------------------------ delivery


def test_burst_of_10000_lines_arrives_exactly_once(pylog: PylogServer, containers: Containers,
                                                   osmem: Osmem) -> None:
    opt = f"elasticsearch-url={osmem.url}"
    cid = containers.run(pylog.name, "seq 1 10000", opt)
    osmem.wait_count(cid, 10000)
    delivered(pylog, cid, sink_key(opt))
    assert osmem.count(cid) == 10000
    messages = [d["message"] for d in osmem.docs(cid, fields=["message"])]
    assert len(messages) == 10000
    assert sorted(messages, key=int) == [str(i) for i in range(1, 10001)]


SCRIPT = r"""
echo first stdout
echo first stderr >&2
i=0; while [ $i -lt 20 ]; do echo "line $i"; i=$((i+1)); done
printf 'bad utf8: \377 end\n'
printf 'tab\tand "quotes" \\ backslash\n'
"""


def test_records_carry_the_fields_and_the_template_maps_them(
        pylog: PylogServer, containers: Containers, osmem: Osmem) -> None:
    cid = containers.run(pylog.name, SCRIPT, f"elasticsearch-url={osmem.url}", "labels=app",
                         "env=MODE", args=("--label", "app=shop", "-e", "MODE=prod", "-e",
                                           "SECRET=hush", "--name", f"es-{os.getpid()}"))
    osmem.wait_count(cid, 24)
    docs = osmem.docs(cid)
    assert len(docs) == 24
    by_message = {d["message"]: d for d in docs}
    assert by_message["first stderr"]["stream"] == "stderr"
    assert by_message["first stdout"]["stream"] == "stdout"
    assert "bad utf8: \ufffd end" in by_message
    assert 'tab\tand "quotes" \\ backslash' in by_message
    ns = json.loads(cli(pylog, "inspect", cid))["pylog"]["ns"]
    keys = {t: v["key"] for t, v in ns.items()}
    for d in docs:
        assert TS_RE.match(d["@timestamp"]), d["@timestamp"]
        assert d["container"]["id"] == cid and d["container"]["name"] == f"es-{os.getpid()}"
        assert d["container"]["image"]["name"] == containers.image
        assert d["container"]["labels"] == {"app": "shop"}
        assert d["pylog"]["env"] == {"MODE": "prod"} and "hush" not in json.dumps(d)
        assert d["host"]["name"] and d["tag"] == cid[:12]
        assert d["pylog"]["ns_key"] == keys and "ns_inode" not in d["pylog"]
        assert "net" not in d["pylog"]["host_ns"] and "user" in d["pylog"]["host_ns"]
    # Nanoseconds survive: no two lines of one stream have the same timestamp.
    stamps = [d["@timestamp"] for d in docs if d["stream"] == "stdout"]
    assert len(set(stamps)) == len(stamps)
    assert len({s[-10:-1] for s in stamps}) > 1  # the sub-second digits are not all equal

    template = osmem.request("GET", f"/_index_template/{TEMPLATE}")["index_templates"][0]
    assert template["index_template"]["priority"] > 100
    assert template["index_template"]["index_patterns"] == [INDEX]
    # osmem has no data streams: the sink said so and fell back to a plain index.
    assert "data_stream" not in template["index_template"]
    assert "does not support data streams" in pylog.log_text()
    mapping = osmem.request("GET", f"/{INDEX}/_mapping")[INDEX]["mappings"]["properties"]
    assert mapping["@timestamp"]["type"] == "date_nanos"
    assert mapping["message"]["type"] == "text"
    assert mapping["stream"]["type"] == "keyword"
    container = mapping["container"]["properties"]
    assert container["id"]["type"] == container["name"]["type"] == "keyword"
    assert container["labels"]["properties"]["app"]["type"] == "keyword"
    assert mapping["pylog"]["properties"]["env"]["properties"]["MODE"]["type"] == "keyword"
    pylog_map = mapping["pylog"]["properties"]
    assert pylog_map["ns_key"]["properties"]["net"]["type"] == "keyword"
    assert pylog_map["host_ns"]["type"] == "keyword"
    # date_nanos answers a range query finer than a millisecond.
    first = min(stamps)
    hits = osmem.request("POST", f"/{INDEX}/_count", {"query": {"bool": {"filter": [
        {"term": {"container.id": cid}}, {"range": {"@timestamp": {"lte": first}}}]}}})
    assert hits["count"] == 1 + sum(1 for d in docs if d["stream"] == "stderr"
                                    and d["@timestamp"] <= first)


def test_failover_from_a_dead_first_url(pylog: PylogServer, containers: Containers,
                                        osmem: Osmem) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    cid = containers.run(pylog.name, "seq 1 2000", f"elasticsearch-url={dead},{osmem.url}")
    osmem.wait_count(cid, 2000)
    delivered(pylog, cid, sink_key(f"elasticsearch-url={dead},{osmem.url}"))
    assert osmem.count(cid) == 2000


def test_server_down_then_up_gets_everything(pylog: PylogServer,
                                             containers: Containers) -> None:
    later = Osmem(free_port())  # not started: nothing listens on its port yet
    opt = f"elasticsearch-url={later.url}"
    key = sink_key(opt)
    cid = containers.run(pylog.name, "seq 1 3000", opt)
    eventually(pylog.log_text, lambda t: f"sink {key}: delivery failed, retrying" in t, 60,
               "the sink reported the failure")
    assert Cursor(pylog.container_dir(cid), key).load() is None  # nothing taken
    later.start()
    try:
        later.wait_count(cid, 3000)
        delivered(pylog, cid, key)
        assert later.count(cid) == 3000
        messages = [d["message"] for d in later.docs(cid, fields=["message"])]
        assert sorted(messages, key=int) == [str(i) for i in range(1, 3001)]
        eventually(pylog.log_text, lambda t: f"sink {key}: delivering again" in t, 30,
                   "the sink reported it is delivering again")
    finally:
        later.stop()


def test_rejected_documents_land_in_the_dead_letter_file(pylog: PylogServer,
                                                         containers: Containers,
                                                         osmem: Osmem) -> None:
    """An index whose ``message`` is a number: lines that are not are rejected (400) by the
    server, kept in the dead-letter file, counted, and not retried; the others are indexed."""
    index = "pylog-numbers"
    osmem.request("PUT", f"/{index}", {"mappings": {"properties": {
        "message": {"type": "long"}, "container": {"properties": {"id": {"type": "keyword"}}}}}})
    opts = (f"elasticsearch-url={osmem.url}", f"elasticsearch-index={index}")
    key = sink_key(*opts)
    cid = containers.run(pylog.name, "echo 1; echo abc; echo 2; echo 'x y'; echo 3", *opts)
    osmem.wait_count(cid, 3, index)
    delivered(pylog, cid, key)  # the batch was settled: rejected documents are not retried
    assert osmem.count(cid, index) == 3
    path = pylog.state_dir / "dead-letter" / f"{key}.ndjson"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    mine = [r for r in rows if r["document"]["container"]["id"] == cid]
    assert sorted(r["document"]["message"] for r in mine) == ["abc", "x y"]
    for r in mine:
        assert r["status"] == 400 and r["error"]["type"] == "mapper_parsing_exception"
        assert r["index"] == index and r["_id"] and TS_RE.match(r["document"]["@timestamp"])
    assert f"sink {key}: Elasticsearch rejected" in pylog.log_text()


@pytest.mark.parametrize("opt, expected", [
    ("elasticsearch-index=logs-a-b-c", "'elasticsearch-index'"),
    ("elasticsearch-tls-skip-verify=maybe", "'elasticsearch-tls-skip-verify'"),
    ("elasticsearch-ca-cert=/nonexistent.pem", "'elasticsearch-ca-cert'"),
    ("elasticsearch-password=x", "unknown log opt 'elasticsearch-password'"),
])
def test_bad_options_fail_docker_run(pylog: PylogServer, containers: Containers, opt: str,
                                     expected: str) -> None:
    stderr = refused_run(containers, pylog.name, "elasticsearch-url=http://127.0.0.1:9", opt)
    assert expected in stderr


def test_a_url_with_credentials_fails_docker_run_without_echoing_them(
        pylog: PylogServer, containers: Containers) -> None:
    stderr = refused_run(containers, pylog.name,
                         f"elasticsearch-url=http://elastic:{SECRET}@es:9200")
    assert "'elasticsearch-url'" in stderr
    assert SECRET not in stderr and SECRET not in pylog.log_text()


def test_a_lost_answer_makes_duplicates_not_doubles(pylog: PylogServer, containers: Containers,
                                                   osmem: Osmem) -> None:
    """The server indexes a batch but its answer is lost: pylog sends the batch again, and the
    deterministic _id turns every re-sent document into a 409 instead of a second copy."""
    lossy = RecordingProxy(osmem, lose_bulk_answers=4)
    try:
        opt = f"elasticsearch-url={lossy.url}"
        cid = containers.run(pylog.name, "seq 1 5000", opt)
        osmem.wait_count(cid, 5000)
        delivered(pylog, cid, sink_key(opt))
        bulks = [p for m, p, _ in lossy.seen if "/_bulk" in p]
        assert len(bulks) >= 5  # four answers lost (two sends): the documents went again
        assert osmem.count(cid) == 5000
        messages = [d["message"] for d in osmem.docs(cid, fields=["message"])]
        assert sorted(messages, key=int) == [str(i) for i in range(1, 5001)]
    finally:
        lossy.close()


# ------------------------------------------------------------------------------ credentials


class RecordingProxy:
    """Forwards HTTP to osmem and records each request's method, path and headers (osmem has
    no security and shows no headers, so this is where Authorization is checked)."""

    def __init__(self, upstream: Osmem, lose_bulk_answers: int = 0) -> None:
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        seen, target = self.seen, ("127.0.0.1", upstream.port)
        lose = [lose_bulk_answers]  # _bulk requests forwarded whose answer is then lost

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                seen.append((self.command, self.path, dict(self.headers)))
                conn = http.client.HTTPConnection(*target, timeout=60)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "connection", "content-length")}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                if "/_bulk" in self.path and lose[0] > 0:
                    lose[0] -= 1
                    self.close_connection = True  # the server took it; pylog never hears so
                    return
                self.send_response(resp.status)
                self.send_header("Content-Type", resp.getheader("Content-Type") or "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = forward

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def proxy(osmem: Osmem) -> Iterator[RecordingProxy]:
    p = RecordingProxy(osmem)
    yield p
    p.close()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("ELASTICSEARCH_USERNAME", "ELASTICSEARCH_PASSWORD", "ELASTICSEARCH_API_KEY",
                 "ELASTICSEARCH_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def serve_with_env(tmp_path: Path) -> PylogServer:
    """A separate `pylog serve`; PylogServer.start passes this process's environment on, which
    is how the tests give pylog its (process-level) credential settings."""
    server = new_server(tmp_path)
    server.start()
    return server


def authorizations(proxy: RecordingProxy) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for method, path, headers in proxy.seen:
        auth = {v for k, v in headers.items() if k.lower() == "authorization"}
        out.setdefault(f"{method} {path.split('?')[0]}", set()).update(auth or {"<none>"})
    return out


def test_credentials_from_the_environment_reach_the_server(
        tmp_path: Path, clean_env: pytest.MonkeyPatch, containers: Containers, osmem: Osmem,
        proxy: RecordingProxy) -> None:
    clean_env.setenv("ELASTICSEARCH_USERNAME", "pylog-writer")
    clean_env.setenv("ELASTICSEARCH_PASSWORD", SECRET)
    server = serve_with_env(tmp_path)
    try:
        cid = containers.run(server.name, "seq 1 500", f"elasticsearch-url={proxy.url}")
        osmem.wait_count(cid, 500)
        basic = "Basic " + base64.b64encode(f"pylog-writer:{SECRET}".encode()).decode()
        seen = authorizations(proxy)
        assert seen[f"PUT /_index_template/{TEMPLATE}"] == {basic}
        assert seen[f"POST /{INDEX}/_bulk"] == {basic}
        assert all(v == {basic} for v in seen.values())
        log_text = server.log_text()
        assert "credentials: basic" in log_text
        assert SECRET not in log_text and basic.split()[1] not in log_text
        inspect = subprocess.run(["docker", "inspect", cid], capture_output=True, text=True,
                                 check=True)
        assert SECRET not in inspect.stdout and "pylog-writer" not in inspect.stdout
    finally:
        server.stop()
    assert SECRET not in server.log_text()


def test_api_key_from_a_credentials_file_reaches_the_server(
        tmp_path: Path, clean_env: pytest.MonkeyPatch, containers: Containers, osmem: Osmem,
        proxy: RecordingProxy) -> None:
    key = base64.b64encode(f"key-id:{SECRET}".encode()).decode()
    creds = tmp_path / "es-credentials"
    creds.write_text(f"# pylog's writer key\napi_key = {key}\n")
    creds.chmod(0o600)
    clean_env.setenv("ELASTICSEARCH_CREDENTIALS_FILE", str(creds))
    server = serve_with_env(tmp_path / "serve")
    try:
        cid = containers.run(server.name, "seq 1 300", f"elasticsearch-url={proxy.url}")
        osmem.wait_count(cid, 300)
        assert authorizations(proxy)[f"POST /{INDEX}/_bulk"] == {f"ApiKey {key}"}
        assert key not in server.log_text() and SECRET not in server.log_text()
    finally:
        server.stop()


def test_unusable_credential_settings_fail_docker_run(
        tmp_path: Path, clean_env: pytest.MonkeyPatch, containers: Containers) -> None:
    clean_env.setenv("ELASTICSEARCH_USERNAME", "pylog-writer")  # and no password
    server = serve_with_env(tmp_path)
    try:
        stderr = refused_run(containers, server.name, "elasticsearch-url=http://127.0.0.1:9")
        assert "'elasticsearch-url'" in stderr and "no password" in stderr
        # Without the sink nothing is asked of the settings.
        cid = containers.run(server.name, "echo ok")
        assert cid
    finally:
        server.stop()
