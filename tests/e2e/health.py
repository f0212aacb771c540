"""Is the host still fit for the e2e tests after one of them failed, and what did it look like?

A failing e2e test may be pylog's fault or the host's: a dockerd that stopped answering, a full
disk, a kernel stuck tearing down network namespaces. In the second case every later e2e test
would fail too, each after its own timeouts (CI once ran out of its 90 minutes that way, showing
nothing but F's). So after a failed e2e test the conftest asks :func:`host_problem`; if the
host is unfit, the remaining e2e tests fail at once, naming the test after which it happened,
and the failed test's report carries :func:`diagnostics` (dockerd's warnings and errors, the
kernel's last messages, tasks blocked in the kernel and their kernel stacks, where dockerd's
API requests in progress wait, disk and memory, the processes, every running pylog's log tail
and thread stacks).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

DOCKERD_LOG = Path("/var/log/dockerd.log")  # where scripts/setup-host.sh starts dockerd
MIN_FREE_BYTES = 500 << 20
KERNEL_NOISE = ("entered blocking state", "entered forwarding state", "entered disabled state",
                "promiscuous mode", "allmulticast mode", "renamed from", "link becomes ready")


def _run(args: list[str], timeout: float) -> tuple[int | None, str]:
    """(exit status, output); status None if it did not finish within ``timeout``."""
    try:
        r = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return None, ""
    except OSError as e:
        return 127, str(e)
    return r.returncode, (r.stdout + r.stderr).strip()


def docker_problem() -> str | None:
    """Why the e2e tests cannot use dockerd here (no CLI, no answer, not root), or None."""
    if shutil.which("docker") is None:
        return "the docker CLI is not installed (scripts/setup-host.sh installs docker.io)"
    status, out = _run(["docker", "version", "--format", "{{.Server.Version}}"], 30)
    if status is None:
        return "dockerd did not answer `docker version` within 30 s"
    if status != 0:
        return f"dockerd is not running ({out[-500:]}); start it with scripts/setup-host.sh"
    if os.geteuid() != 0:
        return "the e2e tests must run as root (they read dockerd's FIFOs)"
    return None


def host_problem(image: str | None) -> str | None:
    """Why the host cannot run the e2e tests any more, or None if it still can: dockerd answers
    and runs a plain (json-file, no network) container within a minute, and the disk has room."""
    for path in ("/var/lib/docker", "/tmp"):
        if os.path.exists(path):
            free = shutil.disk_usage(path).free
            if free < MIN_FREE_BYTES:
                return f"only {free >> 20} MiB free on {path}"
    problem = docker_problem()
    if problem:
        return problem
    if image is not None:
        t0 = time.monotonic()
        status, out = _run(["docker", "run", "--rm", "--log-driver", "json-file",
                            "--network", "none", image, "true"], 60)
        if status is None:
            return "a plain `docker run --rm --log-driver json-file --network none` " \
                   "did not finish within 60 s"
        if status != 0:
            return f"a plain `docker run` failed: {out[-500:]}"
        took = time.monotonic() - t0
        if took > 20:
            return f"a plain `docker run` took {took:.0f} s"
    return None


def _tail(path: Path, lines: int, keep: Iterable[str] = (), drop: Iterable[str] = ()) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as e:
        return f"({path}: {e})"
    words, noise = tuple(keep), tuple(drop)
    if words:
        text = [t for t in text if any(w in t for w in words)]
    text = [t for t in text if not any(w in t for w in noise)]
    return "\n".join(t[:400] for t in text[-lines:])


def blocked_tasks(limit: int = 20) -> str:
    """Every task in uninterruptible sleep and where in the kernel it sleeps: what a kernel
    stuck (say, tearing down a network namespace) looks like from user space."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/task/[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)
            if fields[1].split()[0] != "D":
                continue
            name = fields[0].split("(", 1)[1]
            stack = (stat.parent / "stack").read_text().strip()
        except (OSError, IndexError):
            continue
        found.append(f"{stat.parent.parent.parent.name}/{stat.parent.name} {name}\n{stack}")
        if len(found) == limit:
            break
    return "\n".join(found) or "(none)"


def dockerd_requests(wait: float = 5.0, limit: int = 15000) -> str:
    """dockerd writes every goroutine's stack to a file on SIGUSR1 and logs the file's name;
    the goroutines serving an API request show where a hung `docker run` waits."""
    try:
        pid = int(Path("/var/run/docker.pid").read_text())
        before = DOCKERD_LOG.stat().st_size
        os.kill(pid, signal.SIGUSR1)
    except (OSError, ValueError) as e:
        return f"(no goroutine stacks: {e})"
    deadline = time.monotonic() + wait
    stacks = None
    while stacks is None and time.monotonic() < deadline:
        time.sleep(0.1)  # polling for dockerd's log line, bounded by the deadline
        with open(DOCKERD_LOG, "rb") as f:
            f.seek(before)
            for line in f.read().decode(errors="replace").splitlines():
                if "goroutine stacks written to " in line:
                    stacks = line.split("goroutine stacks written to ", 1)[1].rstrip('"')
    if stacks is None:
        return f"(dockerd did not write its goroutine stacks within {wait} s)"
    try:
        text = Path(stacks).read_text(errors="replace")
    except OSError as e:
        return f"({stacks}: {e})"
    requests = [_frames(g) for g in text.split("\n\n") if "/api/server/router/" in g]
    return (f"{stacks}: {len(requests)} requests in progress\n"
            + "\n\n".join(requests)[:limit])


def _frames(goroutine: str) -> str:
    """A goroutine's header and its functions, without arguments, file lines and the HTTP
    server's and middleware's frames every request has."""
    lines = goroutine.strip().splitlines()
    calls = [line.split("(0x")[0].split("({")[0] for line in lines[1:]
             if not line.startswith(("\t", "created by"))]
    return "\n".join(lines[:1] + ["  " + c for c in calls if not any(
        w in c for w in ("net/http.", "gorilla/mux", "/middleware.", "/authorization.",
                         "server.(*Server).makeHTTPHandler"))])


def thread_stacks(pid: int, log_path: Path, wait: float = 10.0) -> str:
    """Ask a `pylog serve` for its threads' stacks (SIGUSR1: pylog's faulthandler writes them
    to its log, in many small writes) and return what it wrote once the log stopped growing
    for 0.3 s."""
    try:
        before = log_path.stat().st_size
        os.kill(pid, signal.SIGUSR1)
    except OSError as e:
        return f"(no stacks from pid {pid}: {e})"
    deadline = time.monotonic() + wait
    size, since = before, time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)  # polling for faulthandler's writes, bounded by the deadline
        now = log_path.stat().st_size
        if now != size:
            size, since = now, time.monotonic()
        elif size != before and time.monotonic() - since >= 0.3:
            break
    with open(log_path, "rb") as f:
        f.seek(before)
        return f.read(20000).decode(errors="replace")


def diagnostics(servers: Iterable[tuple[int, Path]] = ()) -> str:
    """What the host looked like: for a failed test's report."""
    parts = []
    for title, args in (("disk", ["df", "-h", "/", "/var/lib/docker", "/tmp"]),
                        ("memory", ["free", "-m"]),
                        ("load", ["cat", "/proc/loadavg"]),
                        ("processes", ["ps", "-eo", "pid,stat,etime,time,rss,args", "--sort=-time"]),
                        ("containers", ["docker", "ps", "-a", "--format",
                                        "{{.ID}} {{.Status}} {{.Command}}"]),
                        ("kernel", ["dmesg", "--ctime"])):
        status, out = _run(args, 20)
        lines = out.splitlines()
        if title == "processes":  # dockerd's, containerd's, the containers' and pylog's
            lines = lines[:1] + [line for line in lines[1:] if any(
                w in line for w in ("docker", "containerd", "runc", "pylog", "busybox"))][:30]
        elif title == "containers":
            lines = lines[:30]
        elif title == "kernel":  # without the lines every container's veth pair adds
            lines = [line for line in lines if not any(w in line for w in KERNEL_NOISE)][-25:]
        parts.append(f"--- {title}" + (" (timed out)" if status is None else "") + "\n"
                     + "\n".join(line[:300] for line in lines))
    parts.append("--- dockerd: warnings and errors\n"
                 + _tail(DOCKERD_LOG, 30, ("level=warning", "level=error", "level=fatal",
                                           "panic", "goroutine"),
                         ("cleaning up after shim disconnected", "cleanup warnings",
                          "goroutine stacks written")))
    parts.append("--- tasks blocked in the kernel (D state), with their kernel stacks\n"
                 + blocked_tasks())
    parts.append("--- dockerd: the API requests in progress (goroutine stacks, SIGUSR1)\n"
                 + dockerd_requests())
    for pid, log_path in servers:
        parts.append(f"--- pylog serve (pid {pid}): log tail\n" + _tail(log_path, 30))
        parts.append(f"--- pylog serve (pid {pid}): threads\n" + thread_stacks(pid, log_path))
    return "\n".join(parts)
