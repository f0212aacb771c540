"""Fixtures that drive a real dockerd: a busybox image, a running ``pylog serve``, containers.

Every test here needs dockerd. Without one they skip with the reason, unless
``PYLOG_REQUIRE_DOCKER=1`` (set by CI), where a missing dockerd is an error.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.peers.busybox import import_busybox_image
from tests.peers.fluentd_receiver import ThreadedReceiver
from tests.slow_callbacks import report_only

from .health import diagnostics, docker_problem, host_problem

BUSYBOX_IMAGE = "pylog-busybox:test"
PLUGIN_DIR = Path("/run/docker/plugins")
RUNNING: list[PylogServer] = []  # the test servers now running, for the diagnostics
STARTED: dict[Path, str] = {}  # every test server's log, for the loop holds it reported
_busybox_ready = False
_unfit: list[str] = []  # why the host cannot run e2e tests any more (see health.py)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """After a failed e2e test: the host's state in its report, and if the host is unfit
    (dockerd stuck, disk full), the remaining e2e tests fail at once instead of one timeout
    after another."""
    report = yield
    if report.failed and not _unfit:
        image = BUSYBOX_IMAGE if _busybox_ready else None
        servers = [(s.proc.pid, s.log_path) for s in RUNNING
                   if s.proc is not None and s.proc.poll() is None]
        problem = host_problem(image)
        state = diagnostics(servers)
        report.sections.append(("host after the failure", state))
        if problem:
            _unfit.append(f"{problem} after {item.nodeid} failed")
            report.sections.append(("host unfit for e2e tests", _unfit[0]))
            # Also at once, in the progress output: a CI log cut short still shows why.
            terminal = item.config.pluginmanager.get_plugin("terminalreporter")
            if terminal is not None:
                terminal.write_line(f"\nHOST UNFIT FOR E2E TESTS: {_unfit[0]}\n{state}\n")
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The test servers' own event loop holds over 0.1 s (pylog logs them: looplag.py), listed
    and not failed: a loaded 2-core machine can delay any callback here."""
    held = []
    for path, name in STARTED.items():
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        held += [f"{name}: {line}" for line in lines if '"event": "loop_held"' in line]
    if held:
        terminalreporter.section("pylog serve: event loop held over 0.1 s (reported, not failed)")
        for line in held:
            terminalreporter.write_line(line)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if _unfit:
        pytest.fail(f"not run: the host became unfit for e2e tests: {_unfit[0]}")


@pytest.fixture(autouse=True)
def _slow_callbacks_reported_only(request: pytest.FixtureRequest) -> None:
    """A loaded 2-core machine can delay any callback here: slow ones are listed, not failed."""
    report_only(request)


@pytest.fixture(scope="session")
def docker_ready() -> None:
    problem = docker_problem()
    if problem:
        if os.environ.get("PYLOG_REQUIRE_DOCKER") == "1":
            pytest.fail(f"PYLOG_REQUIRE_DOCKER=1 but {problem}")
        pytest.skip(problem)


@pytest.fixture(scope="session")
def busybox(docker_ready: None) -> str:
    """A busybox image made with `docker import` from Debian's busybox-static (no registry)."""
    global _busybox_ready
    if subprocess.run(["docker", "image", "inspect", BUSYBOX_IMAGE],
                      capture_output=True).returncode == 0:
        _busybox_ready = True
        return BUSYBOX_IMAGE
    problem = import_busybox_image(BUSYBOX_IMAGE)
    if problem:
        pytest.fail(problem)
    _busybox_ready = True
    return BUSYBOX_IMAGE


@dataclass
class PylogServer:
    """A `pylog serve` process registered with dockerd as the legacy plugin ``name``."""

    name: str
    state_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    extra_args: list[str] = field(default_factory=list)

    @property
    def socket(self) -> Path:
        return PLUGIN_DIR / f"{self.name}.sock"

    def start(self) -> None:
        PLUGIN_DIR.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pylog", "serve", "--socket", str(self.socket),
             "--state-dir", str(self.state_dir), "--log-level", "debug", *self.extra_args],
            stdout=log, stderr=subprocess.STDOUT)
        RUNNING.append(self)
        STARTED[self.log_path] = self.name
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pylog serve exited: {self.log_path.read_text()[-2000:]}")
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(str(self.socket))
                return
            except OSError:
                time.sleep(0.05)  # polling for the socket to appear, bounded by the deadline
            finally:
                s.close()
        raise RuntimeError("pylog serve did not listen within 30 s")

    def stop(self) -> None:
        if self in RUNNING:
            RUNNING.remove(self)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def container_dir(self, container_id: str) -> Path:
        return self.state_dir / "containers" / container_id

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def new_server(tmp: Path, extra_args: list[str] | None = None) -> PylogServer:
    name = f"pylogtest-{secrets.token_hex(3)}"
    tmp.mkdir(parents=True, exist_ok=True)
    return PylogServer(name=name, state_dir=tmp / "state", log_path=tmp / "pylog.log",
                       extra_args=extra_args or [])


def cli(server: PylogServer, *args: str) -> str:
    """`pylog ARGS --socket` of a test server: what it printed (it must succeed)."""
    r = subprocess.run([sys.executable, "-m", "pylog", *args, "--socket", str(server.socket)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture
def receiver() -> Iterator[ThreadedReceiver]:
    """A fluentd Forward receiver that acks chunks as fluentd's in_forward does."""
    r = ThreadedReceiver()
    yield r
    r.close()


@pytest.fixture(scope="session")
def pylog(docker_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PylogServer]:
    server = new_server(tmp_path_factory.mktemp("pylog"), ["--gc-interval", "1"])
    server.start()
    yield server
    server.stop()
    artifacts = os.environ.get("PYLOG_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(server.log_path, Path(artifacts) / "pylog-e2e.log")


class Containers:
    """Runs containers and removes them at the end of the test."""

    def __init__(self, image: str) -> None:
        self.image = image
        self.ids: list[str] = []

    def create(self, driver: str, script: str, *opts: str, detach_args: tuple[str, ...] = (),
               check: bool = True) -> subprocess.CompletedProcess[str]:
        name = f"pylogtest-{secrets.token_hex(6)}"
        args = ["docker", "run", "-d", "--name", name, "--log-driver", driver]
        for opt in opts:
            args += ["--log-opt", opt]
        args += [*detach_args, self.image, "sh", "-c", script]
        r = subprocess.run(args, capture_output=True, text=True, timeout=120)
        if r.returncode == 0:
            self.ids.append(r.stdout.strip())
        else:
            self.ids.append(name)  # a failed `docker run` can leave a "Created" container
            if check:
                raise AssertionError(f"docker run failed: {r.stderr}")
        return r

    def start(self, driver: str, script: str, *opts: str, args: tuple[str, ...] = ()) -> str:
        return self.create(driver, script, *opts, detach_args=args).stdout.strip()

    def run(self, driver: str, script: str, *opts: str, args: tuple[str, ...] = ()) -> str:
        """Run to completion; returns the container ID."""
        cid = self.start(driver, script, *opts, args=args)
        wait(cid)
        return cid

    def cleanup(self) -> None:
        if self.ids:
            subprocess.run(["docker", "rm", "-f", *self.ids], capture_output=True, timeout=120)


def wait(cid: str, timeout: float = 120) -> int:
    r = subprocess.run(["docker", "wait", cid], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr
    return int(r.stdout.strip())


def touch(cid: str, path: str, timeout: float = 60) -> None:
    """`docker exec cid touch path`: the file a waiting container's script polls for.

    When the script sees the file and exits, the kernel kills every process left in the
    container's PID namespace, which can be the exec'd touch itself between creating the file
    and exiting: `docker exec` then exits 137 (seen in CI under load, about 1 in 40 here with
    both cores busy). That is success when the container then exits (`docker wait` returns; the
    callers check its exit code); anything else is a failure."""
    r = subprocess.run(["docker", "exec", cid, "touch", path], capture_output=True, text=True,
                       check=False, timeout=timeout)
    if r.returncode == 0:
        return
    assert r.returncode == 137, f"docker exec touch {path}: exit {r.returncode}, {r.stderr!r}"
    try:
        subprocess.run(["docker", "wait", cid], capture_output=True, check=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"docker exec touch {path} was killed (137) and the container "
                             f"did not exit within {timeout} s") from None


def read_file(cid: str, path: str, timeout: float = 120) -> str:
    """The text of ``path`` in a running container, once its script has written it (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        r = subprocess.run(["docker", "exec", cid, "cat", path], capture_output=True, text=True,
                           check=False, timeout=timeout)
        if r.returncode == 0 and r.stdout.endswith("\n"):
            return r.stdout.strip()
        assert time.monotonic() < deadline, f"{path} not written in {timeout} s: {r.stderr!r}"
        time.sleep(0.1)  # polling for the script to write it, bounded by the deadline


def logs(cid: str, *args: str, timeout: float = 120) -> tuple[bytes, bytes]:
    """`docker logs` of a container: (stdout, stderr), as a user's terminal would get them."""
    r = subprocess.run(["docker", "logs", *args, cid], capture_output=True, timeout=timeout)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    return r.stdout, r.stderr


@pytest.fixture
def containers(busybox: str) -> Iterator[Containers]:
    c = Containers(busybox)
    yield c
    c.cleanup()
