"""The plugin as dockerd sees it: options, rotation, side-by-side instances."""

from __future__ import annotations

import gzip
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import Containers, PylogServer, logs, new_server

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("opt, named", [
    ("no-such-opt=1", "no-such-opt"),
    ("max-size=lots", "max-size"),
    ("max-file=0", "max-file"),
    ("compress=maybe", "compress"),
    ("tag={{json .}}", "tag"),
    ("env-regex=(", "env-regex"),
])
def test_bad_option_fails_docker_run_naming_it(pylog: PylogServer, containers: Containers,
                                               opt: str, named: str) -> None:
    r = containers.create(pylog.name, "echo never", opt, check=False)
    assert r.returncode != 0, "docker run accepted a bad log-opt"
    assert "failed to initialize logging driver" in r.stderr
    assert f"'{named}'" in r.stderr, r.stderr
    if opt.startswith("no-such-opt"):
        # The message lists what is allowed, so the user can fix the command.
        for allowed in ("max-size", "max-file", "compress", "tag", "env", "labels"):
            assert allowed in r.stderr


def test_dockers_own_options_are_accepted(pylog: PylogServer, containers: Containers) -> None:
    cid = containers.run(
        pylog.name, "echo accepted",
        "mode=non-blocking", "max-buffer-size=4m", "cache-disabled=true", "cache-max-size=10m",
        "cache-max-file=2", "cache-compress=false", "tag={{.Name}}/{{.ID}}", "labels=app",
        "labels-regex=^app", "env=MODE", "env-regex=^MO", "max-size=1m", "max-file=2",
        "compress=false",
        args=("--label", "app=demo", "-e", "MODE=prod"))
    assert logs(cid) == (b"accepted\n", b"")


def test_rotation_keeps_max_file_files_and_the_newest_lines(
        pylog: PylogServer, containers: Containers) -> None:
    script = 'i=0; while [ $i -lt 3000 ]; do echo "line $i of the rotation test"; i=$((i+1)); done'
    cid = containers.run(pylog.name, script, "max-size=10k", "max-file=3")
    out = logs(cid)[0].splitlines()
    # Only the newest ~3 x 10 KiB are kept, whole lines, contiguous, ending with the last line.
    assert out[-1] == b"line 2999 of the rotation test"
    first = int(out[0].split()[1])
    assert out == [b"line %d of the rotation test" % i for i in range(first, 3000)]
    store = pylog.container_dir(cid)

    def files() -> list[str]:
        return sorted(p.name for p in store.iterdir() if p.name.startswith("container.log"))

    # Compression and pruning finish in a worker thread after the last write: poll, bounded.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (
            len(files()) == 3 and all(f == "container.log" or f.endswith(".gz") for f in files())):
        time.sleep(0.05)
    assert files()[0] == "container.log" and len(files()) == 3, files()
    assert all(f.endswith(".gz") for f in files()[1:]), files()
    sizes = [len(gzip.decompress((store / f).read_bytes())) for f in files()[1:]]
    current = (store / "container.log").stat().st_size
    entry = 4 + len(b"line 1234 of the rotation test") + 20  # length prefix, body
    for size in sizes:
        assert 10 * 1024 - entry < size <= 10 * 1024  # each rotated file is full, never over
    assert 0 < current <= 10 * 1024
    kept = sum(sizes) + current
    assert len(out) in range(kept // (entry + 2), kept // (entry - 2) + 1)
    assert logs(cid, "--tail", "2")[0].splitlines() == out[-2:]


def test_rotation_without_compression_and_single_file(
        pylog: PylogServer, containers: Containers) -> None:
    script = 'i=0; while [ $i -lt 2000 ]; do echo "entry $i"; i=$((i+1)); done'
    plain = containers.run(pylog.name, script, "max-size=4k", "max-file=2", "compress=false")
    single = containers.run(pylog.name, script, "max-size=4k", "max-file=1")

    def files(cid: str) -> list[str]:
        return sorted(p.name for p in pylog.container_dir(cid).iterdir()
                      if p.name.startswith("container.log"))

    # `docker wait` does not wait for pylog to have read the FIFO, and pruning finishes in a
    # worker thread after the last rotation: read the logs first, then poll, bounded.
    logs(plain), logs(single)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (len(files(plain)) == 2 and
                                               files(single) == ["container.log"]):
        time.sleep(0.05)
    assert len(files(plain)) == 2 and not any(n.endswith(".gz") for n in files(plain)), \
        files(plain)
    assert files(single) == ["container.log"], files(single)
    for cid in (plain, single):
        out = logs(cid)[0].splitlines()
        assert out[-1] == b"entry 1999" and len(out) > 0


def test_second_instance_runs_side_by_side(pylog: PylogServer, containers: Containers,
                                           tmp_path: Path) -> None:
    other = new_server(tmp_path)
    other.start()
    try:
        a = containers.run(pylog.name, "echo from the first")
        b = containers.run(other.name, "echo from the second")
        assert logs(a)[0] == b"from the first\n"
        assert logs(b)[0] == b"from the second\n"
        assert other.container_dir(b).is_dir() and not pylog.container_dir(b).exists()
        assert not other.container_dir(a).exists()
    finally:
        other.stop()


def test_plugin_socket_and_state_are_root_only(pylog: PylogServer) -> None:
    assert oct(pylog.socket.stat().st_mode & 0o777) == "0o600"
    assert oct(pylog.state_dir.stat().st_mode & 0o777) == "0o700"


def test_short_lived_rm_container_logs_flow(pylog: PylogServer, busybox: str) -> None:
    """`docker run --rm` works and the plugin keeps serving (nothing is left attached)."""
    for i in range(5):
        r = subprocess.run(["docker", "run", "--rm", "--log-driver", pylog.name, busybox,
                            "echo", f"hi {i}"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and r.stdout == f"hi {i}\n"
