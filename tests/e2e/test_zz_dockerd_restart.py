"""dockerd restarting under running containers (last in the suite: it restarts the daemon)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from .conftest import Containers, PylogServer, logs

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.environ.get("PYLOG_ALLOW_DOCKERD_RESTART") != "1",
                       reason="restarts the host's dockerd: set PYLOG_ALLOW_DOCKERD_RESTART=1 "
                              "(.ci/run does)"),
]


def restart_dockerd() -> None:
    if shutil.which("systemctl") and subprocess.run(
            ["systemctl", "is-active", "--quiet", "docker"]).returncode == 0:
        subprocess.run(["systemctl", "restart", "docker"], check=True, timeout=300)
    else:
        pid = int(open("/var/run/docker.pid").read())
        os.kill(pid, 15)
        deadline = time.monotonic() + 120
        while os.path.exists(f"/proc/{pid}"):
            assert time.monotonic() < deadline, "dockerd did not stop"
            time.sleep(0.1)  # waiting for the old daemon to exit, bounded
        with open("/var/log/dockerd.log", "ab") as log:
            subprocess.Popen(["dockerd"], stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + 120
    while subprocess.run(["docker", "version"], capture_output=True).returncode != 0:
        assert time.monotonic() < deadline, "dockerd did not come back"
        time.sleep(0.2)  # waiting for the new daemon to answer, bounded


def wait_for(cid: str, needle: bytes, count: int = 1, timeout: float = 120) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        r = subprocess.run(["docker", "logs", cid], capture_output=True)
        if r.returncode == 0 and r.stdout.count(needle) >= count:
            return r.stdout
        assert time.monotonic() < deadline, f"{needle!r} x{count} never showed: {r.stdout[-300:]!r}"
        time.sleep(0.2)  # polling `docker logs`, bounded


def test_dockerd_restart_keeps_history_and_new_lines_flow(pylog: PylogServer,
                                                          containers: Containers) -> None:
    always = containers.start(pylog.name, "echo started; i=0; while true; do echo tick $i; "
                              "i=$((i+1)); usleep 200000; done", args=("--restart=always",))
    plain = containers.start(pylog.name, "echo plain; exec sleep 1000")
    before = wait_for(always, b"tick 2")
    wait_for(plain, b"plain")
    restart_dockerd()
    after = wait_for(always, b"started", count=2)
    after = wait_for(always, b"tick 2", count=2)
    assert after.startswith(before), "history before the restart changed"
    assert after.count(b"started\n") == 2
    # The container that was not restarted keeps its history.
    assert logs(plain)[0] == b"plain\n"
    assert pylog.proc is not None and pylog.proc.poll() is None
