"""Faults: pylog killed mid-stream, sinks dead at `docker stop`, hostile sizes."""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.peers.fluentd_receiver import ThreadedReceiver, free_port

from .conftest import Containers, logs, new_server, read_file, touch, wait

pytestmark = pytest.mark.e2e

DUPLICATE_BOUND = 15_000  # one delivery batch: 256 KiB of stored frames of ~20 bytes each


def gaps(stored: list[str], server_log: str) -> str:
    """What `docker logs` lost or repeated of 1..N, and what pylog said about it."""
    seen = Counter(stored)
    last = max((int(x) for x in seen if x.isdigit()), default=0)
    missing = [i for i in range(1, last + 1) if str(i) not in seen]
    said = [line for line in server_log.splitlines()
            if any(w in line for w in ("corrupt", "dropp", "error", "re-attach", "detached"))]
    return (f"{len(stored)} lines, last {last}; {len(missing)} missing (first {missing[:5]}, "
            f"last {missing[-5:]}); {sum(n - 1 for n in seen.values())} repeated; "
            f"{len(seen) - sum(1 for x in seen if x.isdigit())} not numbers; "
            f"first out of order at {next((i for i, x in enumerate(stored) if x != str(i + 1)), None)}"
            f"\npylog said:\n" + "\n".join(said[-20:]))


def test_kill_9_mid_stream_then_restart_loses_nothing(
        docker_ready: None, busybox: str, tmp_path: Path, receiver: ThreadedReceiver) -> None:
    server = new_server(tmp_path, ["--gc-interval", "0"])
    server.start()
    c = Containers(busybox)
    try:
        # The second half flows in blocks of 5000 lines until /tmp/stop, which comes after
        # the restart: the kill always lands mid-stream, on a fast host or under emulation.
        # The container then says its last line and exits only at /tmp/exit (see below).
        script = ("seq 1 50000; while [ ! -e /tmp/go ]; do usleep 10000; done; b=10; "
                  "while [ ! -e /tmp/stop ] || [ $b -lt 12 ]; do "
                  "seq $((b*5000+1)) $((b*5000+5000)); usleep 100000; b=$((b+1)); done; "
                  "echo $((b*5000)) > /tmp/last; while [ ! -e /tmp/exit ]; do usleep 10000; done")
        cid = c.start(server.name, script, f"fluentd-address={receiver.address}")
        receiver.wait_for(20000, cid[:12])  # well into the stream
        touch(cid, "/tmp/go")
        deadline = time.monotonic() + 30
        while len(logs(cid, "--tail", "1")[0]) and int(logs(cid, "--tail", "1")[0]) <= 50000:
            assert time.monotonic() < deadline
            time.sleep(0.01)  # until the second half is flowing, bounded
        assert server.proc is not None
        server.proc.kill()  # SIGKILL mid-stream: no chance to flush anything
        server.proc.wait()
        running = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", cid],
                                 capture_output=True, text=True).stdout.strip()
        assert running == "true", "the stream had ended before the kill"
        server.start()  # re-attaches to the FIFO dockerd kept writing into
        touch(cid, "/tmp/stop")
        # dockerd gives its copier 10 s once a container exits, then drops the rest ("Logger
        # didn't exit in time"), which emulated hosts hit: exit once the last line is stored.
        last = read_file(cid, "/tmp/last")
        deadline = time.monotonic() + 120
        while logs(cid, "--tail", "1")[0].strip() != last.encode():
            assert time.monotonic() < deadline, (last, logs(cid, "--tail", "1")[0])
            time.sleep(0.05)  # until the last line is stored, bounded
        touch(cid, "/tmp/exit")
        assert wait(cid) == 0
        stored = logs(cid)[0].decode().splitlines()
        total = len(stored)
        assert total >= 60000 and total % 5000 == 0, gaps(stored, server.log_text())
        expected = [str(i) for i in range(1, total + 1)]
        assert stored == expected, gaps(stored, server.log_text())
        deadline = time.monotonic() + 120
        while True:  # duplicates count towards the total: wait for every distinct line
            events = receiver.wait_for(total, cid[:12])
            counts = Counter(e.record["log"] for e in events)
            if len(counts) >= total or time.monotonic() > deadline:
                break
            receiver.wait_for(len(events) + 1, cid[:12], timeout=5)
        assert set(counts) == set(expected), f"{len(set(expected) - set(counts))} lines lost"
        duplicates = sum(n - 1 for n in counts.values())
        print(f"kill -9: {len(counts)} distinct lines at fluentd, {duplicates} duplicates")
        assert duplicates <= DUPLICATE_BOUND, f"{duplicates} duplicates"
        assert "re-attached" in server.log_text()
    finally:
        c.cleanup()
        server.stop()


def test_docker_stop_with_a_dead_sink_is_as_fast_as_with_it_up(
        docker_ready: None, busybox: str, tmp_path: Path, receiver: ThreadedReceiver) -> None:
    server = new_server(tmp_path, ["--gc-interval", "0"])
    server.start()
    c = Containers(busybox)
    script = "trap 'exit 0' TERM; seq 1 50000; while true; do usleep 10000; done"
    try:
        times = {}
        for name, address in (("up", receiver.address), ("dead", f"tcp://127.0.0.1:{free_port()}")):
            cid = c.start(server.name, script, f"fluentd-address={address}")
            deadline = time.monotonic() + 60
            while logs(cid, "--tail", "1")[0] != b"50000\n":
                assert time.monotonic() < deadline
                time.sleep(0.05)  # poll until the burst is stored, bounded
            t0 = time.monotonic()
            subprocess.run(["docker", "stop", "-t", "10", cid], check=True, capture_output=True)
            times[name] = time.monotonic() - t0
        # With the sink dead, StopLogging must not wait for it: a plugin that did would hold
        # `docker stop` for its STOP_GRACE (10 s) or longer. One stop each is a single timing of
        # containerd and runc too, so the bound leaves room for a slow one on a busy host.
        assert times["dead"] < max(times["up"] * 2, times["up"] + 4), times
    finally:
        c.cleanup()
        server.stop()
