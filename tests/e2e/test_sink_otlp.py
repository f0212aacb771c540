"""The OTLP sink against a real dockerd and a receiver that parses every request with the
opentelemetry-proto classes (tests/peers/otlp_receiver.py): fields checked against
``docker inspect`` and /proc, an outage, a refusal, a Retry-After."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pylog.cursor import Cursor
from pylog.sinks.otlp import OtlpSink
from tests.peers.otlp_receiver import Answer, ThreadedOtlpReceiver

from .conftest import Containers, PylogServer, cli, touch, wait
from .test_sink_elasticsearch import delivered, eventually, refused_run
from .test_sink_elasticsearch import sink_key as es_sink_key

pytestmark = pytest.mark.e2e

NS_TYPES = ("cgroup", "ipc", "mnt", "net", "pid", "user", "uts")


@pytest.fixture
def otlp() -> Iterator[ThreadedOtlpReceiver]:
    r = ThreadedOtlpReceiver()
    yield r
    r.close()


def sink_key(*opts: str) -> str:
    return es_sink_key(*opts, sink=OtlpSink)


def inspect(cid: str) -> dict:
    r = subprocess.run(["docker", "inspect", cid], capture_output=True, text=True, check=True,
                       timeout=60)
    return json.loads(r.stdout)[0]


SCRIPT = """echo first stdout; echo first stderr >&2; printf 'tab\\tand "quotes" \\303\\274\\n'
while [ ! -f /tmp/go ]; do sleep 0.1; done"""


def test_resource_and_records_match_docker_inspect_and_proc(
        pylog: PylogServer, containers: Containers, otlp: ThreadedOtlpReceiver) -> None:
    name = f"otlp-{os.getpid()}"
    cid = containers.start(pylog.name, SCRIPT, f"otlp-endpoint={otlp.url}", "labels=app",
                           "env=MODE", args=("--label", "app=shop", "--label", "other=x",
                                             "-e", "MODE=prod", "-e", "SECRET=hush",
                                             "--name", name))
    records = otlp.wait_for(3)
    info = inspect(cid)  # still running: its pid and namespaces are there to compare
    pid = info["State"]["Pid"]
    res = records[0].resource
    assert all(r.resource == res for r in records)
    assert res["container.id"] == info["Id"] == cid
    assert res["container.name"] == info["Name"].lstrip("/") == name
    assert res["container.image.name"] == info["Config"]["Image"] == containers.image
    assert res["container.image.id"] == info["Image"]
    assert res["container.label.app"] == "shop" and "container.label.other" not in res
    assert res["pylog.env.MODE"] == "prod" and "hush" not in json.dumps(
        [r.resource for r in records] + [r.body for r in records])
    assert res["process.pid"] == pid
    assert res["host.name"] == os.uname().nodename
    assert res["host.id"] == Path("/etc/machine-id").read_text().strip() or "host.id" not in res
    keys = {t: v["key"] for t, v in json.loads(cli(pylog, "inspect", cid))["pylog"]["ns"].items()}
    for t in NS_TYPES:
        assert res[f"pylog.ns.{t}.inode"] == os.stat(f"/proc/{pid}/ns/{t}").st_ino, t
        assert res[f"pylog.ns.{t}.key"] == keys[t], t
        host = os.stat(f"/proc/self/ns/{t}").st_ino == os.stat(f"/proc/{pid}/ns/{t}").st_ino
        assert res[f"pylog.ns.{t}.is_host"] is host, t
    by_body = {r.body: r for r in records}
    assert by_body["first stdout"].attributes == {"log.iostream": "stdout"}
    assert by_body["first stderr"].attributes == {"log.iostream": "stderr"}
    assert 'tab\tand "quotes" ü' in by_body
    started = int(time.mktime(time.strptime(info["State"]["StartedAt"][:19],
                                            "%Y-%m-%dT%H:%M:%S")) - time.timezone)
    for r in records:
        assert abs(r.time_unix_nano / 1e9 - started) < 60
        assert r.observed_time_unix_nano >= r.time_unix_nano
        assert r.scope == "pylog" and r.severity_number == 0
    touch(cid, "/tmp/go")
    assert wait(cid) == 0


def test_an_outage_of_15_s_loses_nothing(pylog: PylogServer, containers: Containers,
                                         otlp: ThreadedOtlpReceiver) -> None:
    otlp.stop_listening()
    opt = f"otlp-endpoint={otlp.url}"
    key = sink_key(opt)
    down_at = time.monotonic()
    cid = containers.run(pylog.name, "seq 1 3000", opt)
    eventually(pylog.log_text, lambda t: f"sink {key}: delivery failed, retrying" in t, 60,
               "the sink reported the outage")
    assert Cursor(pylog.container_dir(cid), key).load() is None  # nothing taken
    time.sleep(max(0.0, 15 - (time.monotonic() - down_at)))  # the outage's length, not a sync
    otlp.start_listening()
    records = otlp.wait_for(3000)
    delivered(pylog, cid, key)
    assert sorted(int(r.body) for r in records) == list(range(1, 3001))  # once each
    eventually(pylog.log_text, lambda t: f"sink {key}: delivering again" in t, 30,
               "the sink reported it is delivering again")


def test_a_400_goes_to_the_dead_letter_file(pylog: PylogServer, containers: Containers,
                                            otlp: ThreadedOtlpReceiver) -> None:
    # Every push refused: the two lines may go in one batch or two (as the store had them).
    otlp.reply(*[Answer(400, message="invalid request")] * 10)
    opt = f"otlp-endpoint={otlp.url}"
    key = sink_key(opt)
    cid = containers.run(pylog.name, "echo one; echo two", opt)
    delivered(pylog, cid, key)  # settled: not retried
    path = pylog.state_dir / "dead-letter" / f"{key}.ndjson"
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    mine = [r for r in rows if r["container_id"] == cid]
    assert [r["body"] for r in mine] == ["one", "two"]
    assert {(r["status"], r["error"]) for r in mine} == {(400, "invalid request")}
    assert sum(r["received"] for r in otlp.requests()) == 2  # each sent once, never again
    assert f"sink {key}: the server refused " in pylog.log_text()


def test_a_429_waits_for_its_retry_after(pylog: PylogServer, containers: Containers,
                                         otlp: ThreadedOtlpReceiver) -> None:
    otlp.reply(Answer(429, {"Retry-After": "4"}, message="slow down"))
    opt = f"otlp-endpoint={otlp.url}"
    cid = containers.run(pylog.name, "seq 1 100", opt)
    otlp.wait_for(100)
    delivered(pylog, cid, sink_key(opt))
    first, second = otlp.requests()[:2]
    assert first["status"] == 429 and second["status"] == 200
    assert second["at"] - first["at"] >= 3.9  # the backoff alone would have been 1 s


@pytest.mark.parametrize("opt, expected", [
    ("otlp-protocol=grpc", "'otlp-protocol'"),
    ("otlp-compression=zstd", "'otlp-compression'"),
    ("otlp-tls-skip-verify=maybe", "'otlp-tls-skip-verify'"),
    ("otlp-headers=x=y", "unknown log opt 'otlp-headers'"),
])
def test_bad_options_fail_docker_run(pylog: PylogServer, containers: Containers, opt: str,
                                     expected: str) -> None:
    stderr = refused_run(containers, pylog.name, "otlp-endpoint=http://127.0.0.1:9", opt)
    assert expected in stderr
