"""The fluentd sink against a Forward-protocol receiver, side by side with Docker's own driver."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.peers.fluentd_receiver import Received, ThreadedReceiver

from .conftest import Containers, PylogServer, logs, touch

pytestmark = pytest.mark.e2e


SCRIPT = r"""
echo first stdout
echo first stderr >&2
i=0; while [ $i -lt 50 ]; do echo "line $i"; i=$((i+1)); done
head -c 40000 /dev/zero | tr '\0' x; echo
printf 'bad utf8: \377\376 end\n'
printf 'tab\tand\rcr\n'
printf '\n'
printf 'no newline at end'
"""


def by_stream(events: list[Received]) -> dict[str, list[bytes | str]]:
    out: dict[str, list[bytes | str]] = {"stdout": [], "stderr": []}
    for e in events:
        out[e.record["source"]].append(e.record["log"])
    return out


def test_same_records_as_dockers_fluentd_driver(pylog: PylogServer, containers: Containers,
                                                receiver: ThreadedReceiver) -> None:
    common = ("labels=app", "env=MODE")
    args = ("--label", "app=demo", "-e", "MODE=prod", "-e", "SECRET=hush")
    docker = containers.run("fluentd", SCRIPT, f"fluentd-address={receiver.address}",
                            "tag=docker.{{.ID}}", *common, args=args)
    ours = containers.run(pylog.name, SCRIPT, f"fluentd-address={receiver.address}",
                          "tag=pylog.{{.ID}}", *common, args=args)
    # Docker splits the 40000-byte line into 16 KiB partial records; pylog sends it whole.
    docker_events = receiver.wait_for(59, f"docker.{docker[:12]}")
    our_events = receiver.wait_for(57, f"pylog.{ours[:12]}")
    assert len(our_events) == 57 and len(docker_events) == 59
    p = by_stream(our_events)

    def joined(records: list[Received]) -> list[str]:
        """Docker's records with the partial_* chunks of one line joined back together."""
        out, buf = [], ""
        for e in records:
            buf += e.record["log"]
            if e.record.get("partial_message") != "true" or e.record.get("partial_last") == "true":
                out.append(buf)
                buf = ""
        return out + ([buf] if buf else [])

    for stream in ("stdout", "stderr"):
        docker_lines = joined([e for e in docker_events if e.record["source"] == stream])
        assert p[stream] == docker_lines, stream
    first = our_events[0].record
    ref = docker_events[0].record
    for key in ("container_id", "container_name", "source", "app", "MODE"):
        assert key in first and key in ref
    assert first["container_name"].startswith("/") and ref["container_name"].startswith("/")
    assert first["container_id"] == ours and ref["container_id"] == docker
    assert first["app"] == ref["app"] == "demo" and first["MODE"] == ref["MODE"] == "prod"
    assert not any("partial_message" in e.record for e in our_events)
    assert all("SECRET" not in e.record and "hush" not in str(e.record) for e in our_events)
    # pylog adds the enrichment, and keeps nanoseconds.
    assert "id" not in first["container"] and len(first["pylog"]["ns_key"]) >= 5  # Docker's key says it
    assert all(e.event_time for e in our_events)
    # Keys Docker sends are all there (pylog adds fields and loses none).
    for e in our_events:
        assert set(ref) - {"partial_message", "partial_id", "partial_ordinal", "partial_last"} \
            <= set(e.record)


def test_fluentd_options_of_every_docker_version_are_accepted(
        pylog: PylogServer, containers: Containers, receiver: ThreadedReceiver) -> None:
    """fluentd-read-timeout (Docker 29) and fluentd-write-timeout (28.2) as today's configurations
    say them, and fluentd-async-connect (dropped in 28.0) as old ones still do: all accepted, and
    the lines arrive, acknowledged."""
    cid = containers.run(pylog.name, "seq 1 1000", f"fluentd-address={receiver.address}",
                         "fluentd-request-ack=true", "fluentd-read-timeout=5s",
                         "fluentd-write-timeout=5s", "fluentd-async-connect=true")
    events = receiver.wait_for(1000, cid[:12])
    assert [e.record["log"] for e in events] == [str(i) for i in range(1, 1001)]
    assert receiver.peer.acks_sent >= 1


def test_request_ack_and_every_line_of_a_burst(pylog: PylogServer, containers: Containers,
                                               receiver: ThreadedReceiver) -> None:
    cid = containers.run(pylog.name, "seq 1 100000", f"fluentd-address={receiver.address}",
                         "fluentd-request-ack=true")
    events = receiver.wait_for(100000, cid[:12])
    assert [e.record["log"] for e in events] == [str(i) for i in range(1, 100001)]
    assert receiver.peer.acks_sent >= 1
    assert logs(cid)[0].count(b"\n") == 100000


def test_outage_of_30s_loses_nothing(pylog: PylogServer, containers: Containers,
                                     receiver: ThreadedReceiver) -> None:
    """fluentd down for 30 s in the middle of a 100000-line run: all lines arrive after it
    returns, and the container runs as fast as with fluentd up."""
    script = ("seq 1 50000; while [ ! -e /tmp/go ]; do usleep 10000; done; seq 50001 100000")
    up = containers.start(pylog.name, script, f"fluentd-address={receiver.address}")
    receiver.wait_for(50000, up[:12])
    receiver.stop_listening()
    t0 = time.monotonic()
    touch(up, "/tmp/go")
    assert subprocess.run(["docker", "wait", up], capture_output=True, timeout=60).returncode == 0
    run_time_down = time.monotonic() - t0
    assert logs(up)[0].count(b"\n") == 100000
    assert len(receiver.events(up[:12])) == 50000  # nothing got through while it was down
    time.sleep(max(0.0, 30 - (time.monotonic() - t0)))  # the outage itself lasts 30 s
    receiver.start_listening()
    events = receiver.wait_for(100000, up[:12], timeout=120)
    assert sorted(int(e.record["log"]) for e in events) == list(range(1, 100001))
    assert [int(e.record["log"]) for e in events] == sorted(int(e.record["log"]) for e in events)
    assert run_time_down < 30


def test_undelivered_lines_wait_in_the_store_across_a_restart(
        docker_ready: None, busybox: str, tmp_path: pytest.TempPathFactory,
        receiver: ThreadedReceiver) -> None:
    """SIGTERM with fluentd down: nothing is lost; the next `pylog serve` delivers it all."""
    from .conftest import new_server
    server = new_server(tmp_path, ["--gc-interval", "0"])  # type: ignore[arg-type]
    server.start()
    c = Containers(busybox)
    try:
        receiver.stop_listening()
        cid = c.run(server.name, "seq 1 20000", f"fluentd-address={receiver.address}")
        assert logs(cid)[0].count(b"\n") == 20000
        t0 = time.monotonic()
        server.stop()  # SIGTERM: sinks get a bounded time, fluentd is down
        assert time.monotonic() - t0 < 15, "shutdown was not bounded"
        assert receiver.events(cid[:12]) == []
        receiver.start_listening()
        server.start()  # same state dir: the delivery resumes from its cursor
        events = receiver.wait_for(20000, cid[:12])
        assert [e.record["log"] for e in events] == [str(i) for i in range(1, 20001)]
    finally:
        c.cleanup()
        server.stop()
