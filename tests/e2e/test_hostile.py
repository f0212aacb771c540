"""Hostile sizes, a full disk, and churn: nothing crashes, nothing leaks, nothing stalls."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest

from .conftest import Containers, PylogServer, logs, new_server, touch, wait

pytestmark = pytest.mark.e2e


def stats(server: PylogServer) -> dict[str, Any]:
    """GET /pylog/v1/stats over the plugin's socket."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    s.connect(str(server.socket))
    s.sendall(b"GET /pylog/v1/stats HTTP/1.0\r\nHost: pylog\r\n\r\n")
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    return dict(json.loads(data.split(b"\r\n\r\n", 1)[1]))


def test_one_mib_line_and_empty_lines_match_json_file(pylog: PylogServer,
                                                      containers: Containers) -> None:
    script = "printf '\\n\\n'; head -c 1048576 /dev/zero | tr '\\0' m; echo; printf '\\n'; echo end"
    jf = containers.run("json-file", script)
    pl = containers.run(pylog.name, script)
    assert logs(pl) == logs(jf)
    out = logs(pl)[0]
    assert out == b"\n\n" + b"m" * 1048576 + b"\n\nend\n"


def test_100_mib_without_a_newline(docker_ready: None, busybox: str, tmp_path: Path) -> None:
    """One 100 MiB 'line': dockerd sends 6400 chunks; pylog stores them (rotating), stays
    small, and `docker logs` gives what is kept, whole chunks, in order."""
    server = new_server(tmp_path, ["--gc-interval", "0"])
    server.start()
    c = Containers(busybox)
    try:
        assert server.proc is not None
        proc = psutil.Process(server.proc.pid)
        cid = c.run(server.name, "head -c 104857600 /dev/zero | tr '\\0' a",
                    "max-size=10m", "max-file=3")
        out = logs(cid)[0]
        assert out and out.strip(b"a") == b"", "something other than the line came back"
        assert 20 << 20 <= len(out) <= 30 << 20  # what 3 files of 10 MiB keep
        assert proc.memory_info().rss < 150 << 20, "pylog's memory grew with the line"
        # `docker logs` of a stopped container attached a FIFO of its own; dockerd ends it
        # (StopLogging) only after the CLI has had the last byte.
        deadline = time.monotonic() + 30
        while stats(server)["attachments"] != 0:
            assert time.monotonic() < deadline, stats(server)
            time.sleep(0.05)  # polling the plugin's stats, bounded
    finally:
        c.cleanup()
        server.stop()


def test_full_disk_keeps_the_fifo_flowing_and_recovers(docker_ready: None, busybox: str,
                                                       tmp_path: Path) -> None:
    state = tmp_path / "small"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(state)], check=True)
    server = new_server(tmp_path, ["--gc-interval", "0"])
    server.state_dir = state / "state"
    server.start()
    c = Containers(busybox)
    try:
        script = ("seq 1 200000; touch /tmp/written; while [ ! -e /tmp/go ]; do usleep 10000; "
                  "done; echo after the disk had room again")
        cid = c.start(server.name, script)
        deadline = time.monotonic() + 60
        while "store write failed" not in server.log_text():
            assert time.monotonic() < deadline, "the full disk was never reported"
            time.sleep(0.05)  # poll pylog's own log, bounded
        # The container is not stalled: it got through all its output and waits for /tmp/go.
        deadline = time.monotonic() + 60
        while subprocess.run(["docker", "exec", cid, "test", "-e", "/tmp/written"]).returncode:
            assert time.monotonic() < deadline, "the container stalled on a full disk"
            time.sleep(0.05)
        subprocess.run(["mount", "-o", "remount,size=64m", str(state)], check=True)
        touch(cid, "/tmp/go")
        assert wait(cid) == 0
        assert logs(cid)[0].endswith(b"after the disk had room again\n"), "no recovery"
        assert server.proc is not None and server.proc.poll() is None
    finally:
        c.cleanup()
        server.stop()
        subprocess.run(["umount", "-l", str(state)])


def test_churn_of_500_containers_leaves_nothing_behind(pylog: PylogServer, busybox: str) -> None:
    failures: list[str] = []

    def one(i: int) -> None:
        if failures:
            return  # one is enough to fail the test: do not queue up 500 timeouts
        # --network none: a network namespace of its own all the same (pylog holds it), without
        # the 500 veth pairs and bridge ports that would stress the host's kernel, not pylog.
        try:
            r = subprocess.run(["docker", "run", "--rm", "--network", "none", "--log-driver",
                                pylog.name, busybox, "echo", f"churn {i}"],
                               capture_output=True, text=True, timeout=120, check=False)
        except subprocess.TimeoutExpired:
            failures.append(f"container {i}: `docker run --rm` did not end within 120 s")
            return
        if r.returncode != 0:
            failures.append(f"container {i}: `docker run --rm` failed: {r.stderr.strip()}")

    with ThreadPoolExecutor(4) as pool:  # warm up (imports, first connections), then measure
        list(pool.map(one, range(20)))
    assert not failures, failures
    settle(pylog)
    before = stats(pylog)
    dirs_before = set((pylog.state_dir / "containers").iterdir())
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, range(500)))
    assert not failures, failures
    after = settle(pylog)
    for key in ("tasks", "fds", "attachments", "containers", "deliveries", "open_logs",
                "namespace_holders"):
        # dockerd keeps up to 2 idle HTTP connections to the plugin (an fd and a handler task
        # each in pylog), and the garbage collector's docker.sock connection may be open while
        # the stats are taken: a leak would be one per container, 500, not these.
        slack = 3 if key in ("tasks", "fds") else 0
        assert after[key] <= before[key] + slack, (key, before[key], after[key])
    assert after["rss_bytes"] - before["rss_bytes"] < 30 << 20, (before, after)
    assert set((pylog.state_dir / "containers").iterdir()) <= dirs_before, "logs of removed " \
        "containers stayed"
    assert list((pylog.state_dir / "attachments").iterdir()) == []


def settle(server: PylogServer) -> dict[str, Any]:
    """Stats once nothing is attached and the removed containers' logs are collected."""
    deadline = time.monotonic() + 60
    while True:
        s = stats(server)
        gone = not any(p for p in (server.state_dir / "containers").iterdir()
                       if _removed(p.name))
        if s["attachments"] == 0 and s["containers"] == 0 and gone:
            return s
        assert time.monotonic() < deadline, s
        time.sleep(0.1)  # GC runs every second in the test server; poll, bounded


def _removed(cid: str) -> bool:
    return subprocess.run(["docker", "inspect", cid], capture_output=True).returncode != 0
