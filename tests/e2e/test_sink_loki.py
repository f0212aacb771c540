"""The Loki sink against a real dockerd and a receiver that decodes snappy + Loki's push proto
(tests/peers/loki_receiver.py): labels and structured metadata checked against ``docker
inspect`` and /proc, a 16 KiB-plus line joined, an outage, refusals, a Retry-After."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import pytest

from pylog.sinks.loki import LokiSink
from tests.peers.loki_receiver import Reply, ThreadedLokiReceiver

from .conftest import Containers, PylogServer, cli, touch, wait
from .test_sink_elasticsearch import delivered, eventually, refused_run
from .test_sink_elasticsearch import sink_key as es_sink_key
from .test_sink_otlp import NS_TYPES, inspect

pytestmark = pytest.mark.e2e


@pytest.fixture
def loki() -> Iterator[ThreadedLokiReceiver]:
    r = ThreadedLokiReceiver()
    yield r
    r.close()


def sink_key(*opts: str) -> str:
    return es_sink_key(*opts, sink=LokiSink)


SCRIPT = """echo first stdout; echo first stderr >&2; head -c 40000 /dev/zero | tr '\\0' x; echo
while [ ! -f /tmp/go ]; do sleep 0.1; done"""


def test_labels_and_metadata_match_docker_inspect_and_proc(
        pylog: PylogServer, containers: Containers, loki: ThreadedLokiReceiver) -> None:
    name = f"loki-{os.getpid()}"
    cid = containers.start(pylog.name, SCRIPT, f"loki-url={loki.url}", "labels=app",
                           "env=MODE", args=("--label", "app=shop", "--label",
                                             "com.docker.compose.service=web", "-e", "MODE=prod",
                                             "-e", "SECRET=hush", "--name", name))
    entries = loki.wait_for(3)
    info = inspect(cid)
    pid = info["State"]["Pid"]
    by_line = {e.line: e for e in entries}
    assert by_line["first stderr"].labels["source"] == "stderr"
    assert "x" * 40000 in by_line  # dockerd's 16 KiB pieces arrive as one entry
    keys = {t: v["key"] for t, v in json.loads(cli(pylog, "inspect", cid))["pylog"]["ns"].items()}
    for e in entries:
        assert e.labels == {"container_name": name, "compose_service": "web",
                            "host": os.uname().nodename, "source": e.labels["source"]}
        m = e.metadata
        assert m["container_id"] == info["Id"] and m["image_name"] == info["Config"]["Image"]
        assert m["pid"] == str(pid) and m["label_app"] == "shop" and m["env_MODE"] == "prod"
        assert "hush" not in json.dumps(m)
        for t in NS_TYPES:
            assert m[f"ns_{t}"] == keys[t], t
        host = [t for t in NS_TYPES
                if os.stat(f"/proc/self/ns/{t}").st_ino == os.stat(f"/proc/{pid}/ns/{t}").st_ino]
        assert set(m["host_ns"].split(",")) - {"time"} == set(host)
    touch(cid, "/tmp/go")
    assert wait(cid) == 0


def test_an_outage_of_15_s_loses_nothing(pylog: PylogServer, containers: Containers,
                                         loki: ThreadedLokiReceiver) -> None:
    loki.stop_listening()
    opt = f"loki-url={loki.url}"
    key = sink_key(opt)
    down_at = time.monotonic()
    cid = containers.run(pylog.name, "seq 1 3000", opt)
    eventually(pylog.log_text, lambda t: f"sink {key}: delivery failed, retrying" in t, 60,
               "the sink reported the outage")
    time.sleep(max(0.0, 15 - (time.monotonic() - down_at)))  # the outage's length, not a sync
    loki.start_listening()
    entries = loki.wait_for(3000)
    delivered(pylog, cid, key)
    assert sorted(int(e.line) for e in entries) == list(range(1, 3001))


def test_refusals_go_to_the_dead_letter_file(pylog: PylogServer, containers: Containers,
                                             loki: ThreadedLokiReceiver) -> None:
    # Every push refused: the two lines may go in one batch or two (as the store had them).
    loki.reply(*[Reply(400, text="error at least one label pair is required per stream")] * 10)
    opt = f"loki-url={loki.url}"
    key = sink_key(opt)
    cid = containers.run(pylog.name, "echo one; echo two", opt)
    delivered(pylog, cid, key)
    rows = [json.loads(x) for x in (pylog.state_dir / "dead-letter" / f"{key}.ndjson")
            .read_text().splitlines()]
    mine = [r for r in rows if r["container_id"] == cid]
    assert [r["body"] for r in mine] == ["one", "two"] and mine[0]["status"] == 400
    assert sum(r["entries"] for r in loki.requests()) == 2  # each sent once, never again


def test_a_429_waits_for_its_retry_after(pylog: PylogServer, containers: Containers,
                                         loki: ThreadedLokiReceiver) -> None:
    loki.reply(Reply(429, {"Retry-After": "4"}, "Ingestion rate limit exceeded"))
    opt = f"loki-url={loki.url}"
    cid = containers.run(pylog.name, "seq 1 100", opt)
    loki.wait_for(100)
    delivered(pylog, cid, sink_key(opt))
    first, second = loki.requests()[:2]
    assert first["status"] == 429 and second["status"] == 204
    assert second["at"] - first["at"] >= 3.9  # the backoff alone would have been 0.5 s


@pytest.mark.parametrize("opt, expected", [
    ("loki-format=avro", "'loki-format'"),
    ("loki-external-labels=host=x", "set by pylog"),
    ("loki-relabel-config=x", "unknown log opt 'loki-relabel-config'"),
])
def test_bad_options_fail_docker_run(pylog: PylogServer, containers: Containers, opt: str,
                                     expected: str) -> None:
    stderr = refused_run(containers, pylog.name,
                         "loki-url=http://127.0.0.1:9/loki/api/v1/push", opt)
    assert expected in stderr
