"""pylog against Docker's own logging drivers on a real dockerd: container run time, time until
every line is at the sink, pylog's CPU and peak RSS, and lines delivered, as ratios to
``json-file`` (and to Docker's ``fluentd`` driver for fluentd rows) measured in the same run.

    python bench/run.py                      # B1 B2 B3 E1, every driver, 3 rounds (~25 min)
    python bench/run.py --quick              # 1/10 of the lines, 1 round (under 2 minutes)
    python bench/run.py --scenarios B1 --drivers json-file,pylog,pylog-fluentd --rounds 5

Scenarios: B1 one container printing 1,000,000 short lines (``seq 1 1000000``); B2 20 containers
printing 50,000 lines each, started at once; B3 20,000 lines of 4 KiB; E1 one container printing
20,000 short lines with the Elasticsearch sink to osmem-server (a real OpenSearch-compatible
server, which indexes only ~2,000 documents/s here, so it gets a scenario of its own, next to the
same lines through json-file and to the bench's own ``_bulk`` receiver). Drivers are run A B C ...
then C B A ... in alternate rounds, so none always runs first or last. Each pylog run gets a fresh
``pylog serve`` (its own state dir on the filesystem of Docker's root dir, its own driver name),
warmed with a one-line container that uses the same log-opts, and is stopped and deleted after
the run. The receivers (bench/peers.py) are separate processes. See docs/bench.md for what each
column means. Needs root and a running dockerd; nothing here fails on speed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

import psutil

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.peers import number_of  # noqa: E402  # (these two need ROOT on sys.path)
from tests.peers.busybox import import_busybox_image  # noqa: E402

BENCH = Path(__file__).resolve().parent
IMAGE = "pylog-busybox:test"  # the image the e2e tests build (tests/e2e/conftest.py)
PLUGIN_DIR = Path("/run/docker/plugins")
DOCKER_SOCK = "/var/run/docker.sock"
LABEL = "pylog-bench"

# ----------------------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    containers: int
    lines: int  # per container
    first: int  # the first line's number (lines end with consecutive numbers)
    script: str  # with {first} {last}
    drivers: tuple[str, ...] = ()  # only these drivers run in it (empty: every driver)
    each: int = 1  # the log's lines in one numbered line (M1: a trace of 9)

    def command(self) -> list[str]:
        return ["sh", "-c", self.script.format(first=self.first, last=self.first + self.lines - 1)]

    @property
    def total(self) -> int:
        return self.containers * self.lines


PAD4K = 'PAD=$(head -c 4088 /dev/zero | tr "\\0" x); seq {first} {last} | sed "s/^/$PAD/"'
# A Java stack trace an event (9 lines), its last line ending with the event's number: without
# multiline rules each line is a record (the numbered one counts), with them each event is one.
TRACES = ("awk 'BEGIN {{ for (i = {first}; i <= {last}; i++) {{ "
          "print \"2026-12-06 05:10:01 ERROR request failed\"; "
          "print \"java.lang.IllegalStateException: could not serve\"; "
          "for (j = 0; j < 6; j++) print \"\\tat com.example.Server.handle(Server.java:42)\"; "
          "printf \"\\t... 2 more %07d\\n\", i }} }}'")
# One JSON object a line, as Go's slog writes them (132 bytes), its number the last field.
JSON_LINES = ("awk 'BEGIN {{ for (i = {first}; i <= {last}; i++) printf "
              "\"{{\\\"time\\\":\\\"2026-12-06T05:10:00.123Z\\\",\\\"level\\\":"
              "\\\"INFO\\\",\\\"msg\\\":\\\"request served\\\",\\\"path\\\":"
              "\\\"/api/orders\\\",\\\"status\\\":200,\\\"ms\\\":12,"
              "\\\"n\\\":%d}}\\n\", i }}'")


def scenarios(scale: float, b2_containers: int = 20) -> dict[str, Scenario]:
    def n(x: int) -> int:
        return max(1, int(x * scale))
    return {
        "B1": Scenario("B1", f"1 container, {n(1_000_000):,} short lines (seq)", 1,
                       n(1_000_000), 1, "seq {first} {last}"),
        "B2": Scenario("B2", f"{b2_containers} containers at once, {n(50_000):,} lines each",
                       b2_containers, n(50_000), 1, "seq {first} {last}"),
        # 4088 x + a 7-digit number + newline = 4096 bytes a line
        "B3": Scenario("B3", f"1 container, {n(20_000):,} lines of 4 KiB", 1, n(20_000),
                       1_000_001, PAD4K),
        # osmem-server takes ~2,000 pylog documents/s with both CPUs (and ~30 KB of memory a
        # document): 1,000,000 lines would take minutes and more memory than the machine has,
        # and measure osmem. So the real server gets 20,000 lines, beside json-file and the
        # bench's _bulk receiver with the very same lines.
        "E1": Scenario("E1", f"1 container, {n(20_000):,} short lines, Elasticsearch sink to "
                       "osmem-server", 1, n(20_000), 1, "seq {first} {last}",
                       drivers=("json-file", "pylog-es", "pylog-es-osmem")),
        # What multiline rules and parse=json cost: the same log with and without them, and
        # with no sink (the store only: pylog's CPU less it is the sink path's).
        "M1": Scenario("M1", f"1 container, {n(100_000):,} Java stack traces of 9 lines",
                       1, n(100_000), 1, TRACES,
                       drivers=("pylog", "pylog-fluentd", "pylog-fluentd-multiline"), each=9),
        "J1": Scenario("J1", f"1 container, {n(500_000):,} JSON lines", 1, n(500_000), 1,
                       JSON_LINES, drivers=("pylog", "pylog-fluentd", "pylog-fluentd-json")),
    }


# ----------------------------------------------------------------------------- drivers


@dataclass(frozen=True)
class Config:
    key: str
    label: str
    pylog: bool = False
    builtin: str | None = None  # Docker's own driver
    sinks: tuple[str, ...] = ()  # receivers that must get every line
    fluentd: bool = False  # a fluentd row: ratios to Docker's fluentd driver too
    down: bool = False  # the fluentd sink points at a closed port
    store: bool = True  # `docker logs` counts the lines
    only: tuple[str, ...] = ()  # runs only in these scenarios (empty: in every scenario)
    src: str = ""  # pylog runs from this source tree (--baseline), else from this checkout
    opts: tuple[tuple[str, str], ...] = ()  # log-opts of its own


CONFIGS: dict[str, Config] = {c.key: c for c in (
    Config("none", "none", builtin="none", store=False),
    Config("json-file", "json-file", builtin="json-file"),
    Config("local", "local", builtin="local"),
    Config("fluentd", "docker fluentd", builtin="fluentd", sinks=("forward",), fluentd=True,
           store=False),
    Config("pylog", "pylog store", pylog=True),
    Config("pylog-fluentd", "pylog +fluentd", pylog=True, sinks=("forward",), fluentd=True,
           store=False),
    Config("syslog", "docker syslog", builtin="syslog", sinks=("syslog",), store=False),
    Config("pylog-syslog", "pylog +syslog", pylog=True, sinks=("syslog",), store=False),
    Config("pylog-es", "pylog +es", pylog=True, sinks=("es",), store=False),
    Config("pylog-otlp", "pylog +otlp", pylog=True, sinks=("otlp",), store=False),
    Config("pylog-loki", "pylog +loki", pylog=True, sinks=("loki",), store=False),
    Config("pylog-es-osmem", "pylog +es to osmem-server", pylog=True, sinks=("osmem",),
           store=False, only=("E1",)),
    Config("pylog-all", "pylog +fluentd+es+syslog", pylog=True,
           sinks=("forward", "es", "syslog"), fluentd=True, store=False),
    Config("pylog-fluentd-down", "pylog +fluentd DOWN", pylog=True, fluentd=True, down=True),
    Config("pylog-fluentd-multiline", "pylog +fluentd multiline", pylog=True,
           sinks=("forward",), store=False, only=("M1",),
           opts=(("multiline-datetime-format", "%Y-%m-%d %H:%M:%S"),)),
    Config("pylog-fluentd-json", "pylog +fluentd parse=json", pylog=True, sinks=("forward",),
           store=False, only=("J1",), opts=(("parse", "json"),)),
)}


def export_tree(ref: str, dest: Path) -> Path:
    """The source tree of git commit ``ref`` in ``dest``, for a pylog run from it."""
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(f"git -C {ROOT} archive {ref} | tar -x -C {dest}", shell=True, check=True)
    return dest


def baseline_configs(ref: str, configs: list[Config]) -> list[Config]:
    """The same pylog drivers run from commit ``ref``, registered as ``<key>@base``: the
    previous commit and this one in one invocation."""
    dest = export_tree(ref, Path(tempfile.mkdtemp(prefix="pylog-baseline-")))
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", ref],
                            capture_output=True, text=True, check=True).stdout.strip()
    out = []
    for c in configs:
        base = replace(c, key=f"{c.key}@base", label=f"{c.label} @{commit}", src=str(dest))
        CONFIGS[base.key] = base
        out.append(base)
    return out


def runs_in(sc: Scenario, config: Config) -> bool:
    """Whether a driver has a row in a scenario (E1 is only for the osmem-server comparison,
    and the osmem-server row only for E1)."""
    key = config.key.removesuffix("@base")  # a --baseline row runs where its driver runs
    return (not sc.drivers or key in sc.drivers) and (not config.only
                                                              or sc.name in config.only)


# ----------------------------------------------------------------------------- docker API


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


def api(method: str, path: str, body: Any = None, timeout: float = 600) -> Any:
    """One Docker Engine API call (a new connection each time: safe from many threads)."""
    conn = _UnixConnection(DOCKER_SOCK, timeout)
    try:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        conn.request(method, "/v1.41" + path, body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        if resp.status >= 300:
            raise RuntimeError(f"docker {method} {path}: {resp.status} {raw[:500]!r}")
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode(errors="replace")  # /_ping: "OK"
    finally:
        conn.close()


def parse_ts(text: str) -> int:
    """RFC 3339 with up to 9 fractional digits (dockerd's StartedAt) as Unix nanoseconds."""
    base, _, frac = text.rstrip("Z").partition(".")
    dt = datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    return int(dt.timestamp()) * 1_000_000_000 + int((frac + "000000000")[:9])


def parallel(fn: Any, items: list[Any], workers: int = 5) -> list[Any]:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items))


def remove_containers(ids: list[str]) -> None:
    def one(cid: str) -> None:
        try:
            api("DELETE", f"/containers/{cid}?force=1&v=1")
        except RuntimeError as e:
            if "404" not in str(e):
                print(f"  warning: removing {cid[:12]}: {e}", file=sys.stderr)
    parallel(one, ids)


def remove_leftovers() -> None:
    """Containers a previous, interrupted invocation left (only ours: by label)."""
    filters = urllib.parse.quote(json.dumps({"label": [LABEL]}))
    found = api("GET", f"/containers/json?all=1&filters={filters}") or []
    remove_containers([c["Id"] for c in found])


def ensure_image() -> None:
    """The e2e tests' busybox image, made the same way (``docker import``) if missing."""
    try:
        api("GET", f"/images/{IMAGE}/json")
        return
    except RuntimeError:
        pass
    problem = import_busybox_image(IMAGE)
    if problem:
        sys.exit(problem)


# ----------------------------------------------------------------------------- processes


def cpu_seconds(proc: psutil.Process | None) -> float:
    if proc is None:
        return 0.0
    try:
        t = proc.cpu_times()
        return t.user + t.system
    except psutil.Error:
        return 0.0


def vm_hwm(pid: int) -> int:
    """The kernel's own peak RSS of a process (VmHWM), bytes."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class RssSampler:
    """Samples a process's RSS with psutil every ``interval`` seconds, in a thread."""

    def __init__(self, proc: psutil.Process, interval: float = 0.02) -> None:
        self.proc = proc
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
                self.samples += 1
            except psutil.Error:
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def wait_idle(proc: psutil.Process, window: float = 0.3, threshold: float = 0.01,
              limit: float = 60.0) -> None:
    """Until the process used less than ``threshold`` CPU-seconds in a ``window``."""
    deadline = time.monotonic() + limit
    last = cpu_seconds(proc)
    while time.monotonic() < deadline:
        time.sleep(window)  # measuring CPU over a window, bounded by the deadline
        now = cpu_seconds(proc)
        if now - last < threshold:
            return
        last = now


def find_process(name: str) -> psutil.Process | None:
    for p in psutil.process_iter(["name"]):
        if p.info["name"] == name:
            return p
    return None


def host_busy() -> float:
    """CPU-seconds the whole host has been busy (all CPUs)."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0)


def busy_cores(seconds: float = 1.0) -> float:
    """How many CPUs' worth of work the host is doing now, over ``seconds``."""
    b0 = host_busy()
    time.sleep(seconds)  # measuring over an interval
    return (host_busy() - b0) / seconds


class PylogServe:
    """A fresh ``pylog serve``: its own driver name, socket and state dir."""

    def __init__(self, workdir: Path, src: Path = ROOT) -> None:
        self.src = src  # the source tree pylog runs from (another commit's, side by side)
        self.name = f"pylogbench-{secrets.token_hex(3)}"
        self.dir = workdir / self.name
        self.state_dir = self.dir / "state"
        self.log_path = self.dir / "pylog.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ps: psutil.Process | None = None

    @property
    def socket(self) -> Path:
        return PLUGIN_DIR / f"{self.name}.sock"

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)  # a state dir may be laid out before
        PLUGIN_DIR.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pylog", "serve", "--socket", str(self.socket),
                 "--state-dir", str(self.state_dir), "--gc-interval", "0", "--log-level",
                 "info"], stdout=log, stderr=subprocess.STDOUT, cwd=self.src,
                env={**os.environ, "PYTHONPATH": str(self.src / "plugin")})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pylog serve exited: {self.log_path.read_text()[-2000:]}")
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(str(self.socket))
                self.ps = psutil.Process(self.proc.pid)
                return
            except OSError:
                time.sleep(0.05)  # waiting for the socket, bounded by the deadline
            finally:
                s.close()
        raise RuntimeError("pylog serve did not listen within 30 s")

    def stop(self, kill: bool = False) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.socket.unlink(missing_ok=True)

    def errors(self) -> list[str]:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []
        return [ln for ln in lines if '"level": "error"' in ln or "Traceback" in ln]


# ----------------------------------------------------------------------------- receivers


class Peer:
    """A receiver from bench/peers.py in its own process, driven over stdin/stdout."""

    def __init__(self, kind: str, workdir: Path) -> None:
        self.kind = kind
        with open(workdir / f"peer-{kind}.log", "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(BENCH / "peers.py"), kind], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=err, cwd=ROOT)
        assert self.proc.stdout is not None and self.proc.stdin is not None
        hello = json.loads(self.proc.stdout.readline() or b"{}")
        if "port" not in hello:
            raise RuntimeError(f"receiver {kind} did not start (see {workdir})")
        self.port: int = hello["port"]
        self.ps = psutil.Process(self.proc.pid)
        self._lock = threading.Lock()

    def _ask(self, cmd: str) -> Any:
        with self._lock:
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.proc.stdin.write(cmd.encode() + b"\n")
            self.proc.stdin.flush()
            return json.loads(self.proc.stdout.readline())

    def stats(self) -> dict[str, Any]:
        return self._ask("stats")  # type: ignore[no-any-return]

    def reset(self) -> None:
        self._ask("reset")

    def progress(self, tags: list[str], expected: int, first: int) -> dict[str, Any]:
        """Lines of ``tags`` that arrived: distinct (in the expected range), duplicates,
        events, and the time of the last arrival."""
        st = self.stats()
        out = {"distinct": 0, "dups": 0, "events": 0, "last_ns": 0, "first_ns": 0,
               "busy_s": st["busy_s"], "bytes": st.get("bytes", 0), "complete": True}
        firsts = []
        for tag in tags:
            t = st["tags"].get(tag)
            if t is None:
                out["complete"] = False
                continue
            in_range = t["distinct"] if (t["lo"] >= first and
                                         t["hi"] <= first + expected - 1) else 0
            out["distinct"] += in_range
            out["dups"] += t["dups"]
            out["events"] += t["events"]
            out["last_ns"] = max(out["last_ns"], t["last_ns"])
            firsts.append(t["first_ns"])
            if in_range < expected:
                out["complete"] = False
        out["first_ns"] = min(firsts) if firsts else 0
        return out

    def url(self) -> str:
        return {"forward": f"tcp://127.0.0.1:{self.port}",
                "syslog": f"tcp://127.0.0.1:{self.port}",
                "es": f"http://127.0.0.1:{self.port}",
                "otlp": f"http://127.0.0.1:{self.port}",
                "loki": f"http://127.0.0.1:{self.port}/loki/api/v1/push"}[self.kind]

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class OsmemPeer:
    """osmem-server (from PyPI) as the Elasticsearch peer: counts come from ``_count`` on the
    sink's index, polled, so the arrival time is the poll that first saw every line."""

    INDEX = "logs-pylog-default"

    def __init__(self, kind: str) -> None:
        from osmem_server import OsmemServer
        self.kind = kind
        self.server = OsmemServer.start(addr="127.0.0.1:0", japanese=False)
        self.port = int(self.server.url.rsplit(":", 1)[1])
        self.ps = psutil.Process(self.server.pid)
        self.base = 0
        self._first_ns = 0
        self._none_ns = 0  # the last poll that found none of the run's lines

    def _count(self) -> int:
        from osmem_server import OsmemError
        try:
            self.server.request("POST", f"/{self.INDEX}/_refresh")
            return int(self.server.request("GET", f"/{self.INDEX}/_count")["count"])
        except OsmemError as e:
            if "index_not_found" in str(e) or " 404 " in str(e):
                return 0
            raise

    def reset(self) -> None:
        from osmem_server import OsmemError
        try:
            self.server.request("DELETE", f"/{self.INDEX}")
        except OsmemError:
            pass
        self.base = 0
        self._first_ns = 0
        self._none_ns = 0

    def mark_base(self) -> None:
        """After a warm-up: its lines are not the run's (and none of them has arrived yet)."""
        self.base = self._count()
        self._none_ns = time.time_ns()

    def stats(self) -> dict[str, Any]:
        return {"tags": {}, "busy_s": 0.0, "events": self._count() - self.base}

    def progress(self, tags: list[str], expected: int, first: int) -> dict[str, Any]:
        n = self._count() - self.base
        now = time.time_ns()
        if n == 0:
            self._none_ns = now
        elif not self._first_ns:
            # the first line arrived between the last poll that saw none and this one: the
            # earlier bound, so the throughput is not overstated
            self._first_ns = self._none_ns or now
        total = expected * len(tags)
        return {"distinct": n, "dups": 0, "events": n, "last_ns": now,
                "first_ns": self._first_ns, "busy_s": 0.0, "complete": n >= total}

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.close()


# ----------------------------------------------------------------------------- one run


@dataclass
class Run:
    scenario: str
    config: str
    round: int
    run_s: float = float("nan")  # first StartedAt .. last FinishedAt
    per_container_s: list[float] = field(default_factory=list)
    sink_s: float | None = None  # first StartedAt .. last line at the last receiver
    pylog_cpu_s: float | None = None
    pylog_rss_peak: int | None = None  # sampled
    pylog_hwm: int | None = None  # VmHWM at the end of the window
    dockerd_cpu_s: float = 0.0
    window_s: float = 0.0
    other_cpu_s: float = 0.0  # the host's busy CPU-s in the window not spent by the above
    busy_before: float = 0.0  # CPUs' worth of work on the host just before the run
    attempts: int = 1  # runs made for this one (a noisy one is made again)
    lines: dict[str, int] = field(default_factory=dict)  # where -> distinct lines
    dups: dict[str, int] = field(default_factory=dict)
    receivers: dict[str, dict[str, float]] = field(default_factory=dict)
    expected: int = 0
    exit_codes: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def delivered(self) -> int | None:
        return min(self.lines.values()) if self.lines else None

    @property
    def lost(self) -> int | None:
        d = self.delivered
        return None if d is None else self.expected - d


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.peers: dict[str, Peer | OsmemPeer] = {}
        self.dockerd = find_process("dockerd")
        self.containerd = find_process("containerd")
        self.me = psutil.Process()
        self.closed_port = 0

    # -------------------------------------------------------------- setup

    def start_peers(self, configs: list[Config]) -> None:
        kinds = sorted({k for c in configs for k in c.sinks})
        for kind in kinds:
            if kind == "osmem" or (kind == "es" and self.args.es_peer == "osmem"):
                self.peers[kind] = OsmemPeer(kind)
            else:
                self.peers[kind] = Peer(kind, self.workdir)
        with socket.socket() as s:  # a port nothing listens on: the "down" fluentd
            s.bind(("127.0.0.1", 0))
            self.closed_port = s.getsockname()[1]

    def close(self) -> None:
        for p in self.peers.values():
            p.close()

    def log_opts(self, config: Config) -> dict[str, str]:
        opts: dict[str, str] = {}
        if "forward" in config.sinks:
            opts["fluentd-address"] = self.peers["forward"].url()
        for kind in ("es", "osmem"):
            if kind in config.sinks:
                opts["elasticsearch-url"] = self.peers[kind].url()
        if "otlp" in config.sinks:
            opts["otlp-endpoint"] = self.peers["otlp"].url()
        if "loki" in config.sinks:
            opts["loki-url"] = self.peers["loki"].url()
        if "syslog" in config.sinks:
            opts["syslog-address"] = self.peers["syslog"].url()
            # RFC 5424 with microseconds from both (Docker's default is RFC 3164's seconds)
            opts["syslog-format"] = "rfc5424micro"
        if config.down:
            opts["fluentd-address"] = f"tcp://127.0.0.1:{self.closed_port}"
        opts.update(config.opts)
        return opts

    def create(self, driver: str, opts: dict[str, str], cmd: list[str]) -> str:
        body = {"Image": IMAGE, "Cmd": cmd, "Labels": {LABEL: "1"},
                "HostConfig": {"LogConfig": {"Type": driver, "Config": opts}}}
        name = f"pylogbench-{secrets.token_hex(5)}"
        return str(api("POST", f"/containers/create?name={name}", body)["Id"])

    def warm_up(self, pylog: PylogServe, config: Config) -> None:
        """One line through the same log-opts (the plugin's activation, the sinks' imports
        and connections and index template happen here, not in the measurement)."""
        opts = {} if config.down else self.log_opts(config)
        cid = self.create(pylog.name, opts, ["sh", "-c", "echo warm"])
        try:
            api("POST", f"/containers/{cid}/start")
            api("POST", f"/containers/{cid}/wait")
            deadline = time.monotonic() + 60
            for kind in config.sinks:
                peer = self.peers[kind]
                while time.monotonic() < deadline:
                    if isinstance(peer, OsmemPeer):
                        if peer.stats()["events"] >= 1:
                            break
                    elif peer.stats()["tags"].get(cid[:12], {}).get("events", 0) >= 1:
                        break
                    time.sleep(0.05)  # polling the receiver, bounded by the deadline
            wait_idle(pylog.ps, limit=10)  # type: ignore[arg-type]
        finally:
            remove_containers([cid])

    # -------------------------------------------------------------- measure

    def run(self, sc: Scenario, config: Config, rnd: int) -> Run:
        run = Run(sc.name, config.key, rnd, expected=sc.total)
        for p in self.peers.values():
            p.reset()
        pylog: PylogServe | None = None
        cids: list[str] = []
        profiler: subprocess.Popen[bytes] | None = None
        try:
            if config.pylog:
                pylog = PylogServe(self.workdir, Path(config.src) if config.src else ROOT)
                pylog.start()
                self.warm_up(pylog, config)
                for kind in config.sinks:
                    p = self.peers[kind]
                    if isinstance(p, OsmemPeer):
                        p.mark_base()
                    else:
                        p.reset()
                driver = pylog.name
            else:
                assert config.builtin is not None
                driver = config.builtin
            opts = self.log_opts(config)
            cids = parallel(lambda _: self.create(driver, opts, sc.command()),
                            list(range(sc.containers)))
            tags = [c[:12] for c in cids]
            ps = pylog.ps if pylog else None
            if pylog is not None and self.args.profile:
                profiler = start_profiler(pylog, Path(self.args.profile),
                                          f"{sc.name}-{config.key}-r{rnd}")
            run.busy_before = self.wait_quiet()
            peer_cpu0 = {k: cpu_seconds(p.ps) for k, p in self.peers.items()}
            peer_busy0 = {k: 0.0 for k in self.peers}
            host0, mine0 = host_busy(), cpu_seconds(self.me) + cpu_seconds(self.containerd)
            cpu0, dcpu0 = cpu_seconds(ps), cpu_seconds(self.dockerd)
            t0 = time.monotonic()
            sampler = RssSampler(ps) if ps is not None else None
            if sampler:
                sampler.__enter__()
            try:
                codes = start_all(cids)
                run.exit_codes = codes
                # dockerd's share ends when the containers have exited (its copier is done),
                # except for its own fluentd driver, which sends on after that: so dockerd CPU
                # spent on other work (a parallel build, say) is counted over as little time
                # as possible.
                dcpu1 = cpu_seconds(self.dockerd)
                if config.sinks:
                    progress = self.wait_sinks(config, tags, sc)
                    if config.builtin is not None:
                        dcpu1 = cpu_seconds(self.dockerd)
                if ps is not None:
                    wait_idle(ps)
                cpu1 = cpu_seconds(ps)
                run.window_s = time.monotonic() - t0
                peer_cpu1 = {k: cpu_seconds(p.ps) for k, p in self.peers.items()}
                run.other_cpu_s = (host_busy() - host0) - (
                    cpu_seconds(self.me) + cpu_seconds(self.containerd) - mine0) - (
                    cpu_seconds(self.dockerd) - dcpu0) - (cpu1 - cpu0) - sum(
                    peer_cpu1[k] - peer_cpu0[k] for k in peer_cpu1)
            finally:
                if sampler:
                    sampler.__exit__()
            if profiler is not None:
                stop_profiler(profiler)
                raw = Path(self.args.profile) / f"{sc.name}-{config.key}-r{rnd}.txt"
                if raw.exists():
                    raw.with_suffix(".summary.txt").write_text(summarize_profile(raw) + "\n")
            if ps is not None:
                run.pylog_cpu_s = cpu1 - cpu0
                run.pylog_rss_peak = sampler.peak if sampler else None
                run.pylog_hwm = vm_hwm(ps.pid)
            run.dockerd_cpu_s = dcpu1 - dcpu0
            states = [api("GET", f"/containers/{c}/json")["State"] for c in cids]
            starts = [parse_ts(s["StartedAt"]) for s in states]
            ends = [parse_ts(s["FinishedAt"]) for s in states]
            run.per_container_s = [(e - s) / 1e9 for s, e in zip(starts, ends)]
            run.run_s = (max(ends) - min(starts)) / 1e9
            if config.sinks:
                complete = all(p["complete"] for p in progress.values())
                if complete:
                    run.sink_s = (max(p["last_ns"] for p in progress.values())
                                  - min(starts)) / 1e9
                for kind, p in progress.items():
                    run.lines[kind] = p["distinct"]
                    run.dups[kind] = p["dups"]
                    span = max((p["last_ns"] - p["first_ns"]) / 1e9, 1e-9)
                    busy = p["busy_s"] - peer_busy0[kind]
                    rcpu = peer_cpu1[kind] - peer_cpu0[kind]
                    run.receivers[kind] = {
                        "events": p["events"], "span_s": span, "events_per_s": p["events"] / span,
                        "cpu_s": rcpu, "cpu_share": rcpu / span,
                        "capacity_per_s": p["events"] / busy if busy > 0 else float("nan"),
                        "bytes_per_event": (p["bytes"] / p["events"] if p.get("bytes")
                                            and p["events"] else float("nan"))}
            if config.store:
                if config.builtin == "none":
                    pass
                else:
                    run.lines["store"] = sum(parallel(lambda c: count_docker_logs(c, sc), cids,
                                                      workers=2))
            if pylog is not None:
                errs = pylog.errors()
                if errs:
                    try:
                        first = json.loads(errs[0]).get("msg", errs[0])
                    except ValueError:
                        first = errs[0]
                    run.notes.append(f"pylog logged {len(errs)} errors, first: "
                                     f"{first.splitlines()[0][:120]!r}")
        finally:
            if profiler is not None and profiler.poll() is None:
                stop_profiler(profiler)
            try:
                remove_containers(cids)
            except (OSError, RuntimeError) as e:  # dockerd away: removed when it is back
                print(f"  warning: could not remove containers: {e}", file=sys.stderr)
            if pylog is not None:
                pylog.stop(kill=config.down)  # a down sink would wait out its shutdown grace
                if not self.args.keep:
                    shutil.rmtree(pylog.state_dir, ignore_errors=True)
        return run

    def noisy(self, run: Run, sc: Scenario) -> bool:
        """Whether other work on the host took more CPU during the run than the run's own
        helpers (containerd-shim, runc, the containers) need: about 1 CPU-s plus 0.3 per
        container, plus --noise-cores CPUs over the window."""
        allowed = 1.0 + 0.3 * sc.containers + float(self.args.noise_cores) * run.window_s
        return run.other_cpu_s > allowed

    def measured(self, sc: Scenario, config: Config, rnd: int) -> Run:
        """A run; made again (up to --retry-noisy times) while other work on the host
        disturbed it; the least disturbed one is kept."""
        tries: list[Run] = []
        failures = 0
        while True:
            try:
                run = self.run(sc, config, rnd)
            except (OSError, RuntimeError, http.client.HTTPException) as e:
                # dockerd restarted under us (another user's test, say): this run says nothing
                failures += 1
                print(f"  r{rnd} {config.key:<19} failed: {type(e).__name__}: {e}", flush=True)
                self.recover()
                if failures > 2:
                    run = Run(sc.name, config.key, rnd, expected=sc.total)
                    run.notes.append(f"failed {failures} times: {type(e).__name__}: {e}")
                    return run
                continue
            tries.append(run)
            if not self.noisy(run, sc) or len(tries) > self.args.retry_noisy:
                break
            print(f"  r{rnd} {config.key:<19} noisy (other work {run.other_cpu_s:.1f} CPU-s "
                  f"in {run.window_s:.1f} s): again", flush=True)
        best = min(tries, key=lambda r: r.other_cpu_s / max(r.window_s, 1e-3))
        best.attempts = len(tries)
        if failures:
            best.notes.append(f"{failures} attempt(s) failed (dockerd went away) and were made "
                              f"again")
        if self.noisy(best, sc):
            best.notes.append(f"noisy: other work {best.other_cpu_s:.1f} CPU-s")
        return best

    def recover(self) -> None:
        """After a failed run: wait for dockerd to answer again, find its new process, and
        remove what the run left."""
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                api("GET", "/_ping", timeout=10)
                break
            except (OSError, RuntimeError, http.client.HTTPException):
                time.sleep(2)  # waiting for dockerd to come back, bounded by the deadline
        self.dockerd = find_process("dockerd")
        self.containerd = find_process("containerd")
        try:
            remove_leftovers()
        except (OSError, RuntimeError, http.client.HTTPException) as e:
            print(f"  warning: {e}", file=sys.stderr)

    def wait_quiet(self) -> float:
        """The host's load just before a run; with --quiet, wait (up to --quiet seconds) for
        it to drop below --quiet-cores (other work on the machine skews every number)."""
        busy = busy_cores(0.25)
        deadline = time.monotonic() + self.args.quiet
        while busy > self.args.quiet_cores and time.monotonic() < deadline:
            busy = busy_cores(1.0)
        return busy

    def wait_sinks(self, config: Config, tags: list[str], sc: Scenario) -> dict[str, Any]:
        """Until every receiver holds every line, or nothing moved for --stall seconds."""
        last_total, last_change = -1, time.monotonic()
        deadline = time.monotonic() + self.args.sink_timeout
        while True:
            progress = {k: self.peers[k].progress(tags, sc.lines, sc.first)
                        for k in config.sinks}
            if all(p["complete"] for p in progress.values()):
                return progress
            total = sum(p["events"] for p in progress.values())
            now = time.monotonic()
            if total != last_total:
                last_total, last_change = total, now
            if now - last_change > self.args.stall or now > deadline:
                return progress
            time.sleep(0.1)  # polling the receivers (they timestamp arrivals themselves)


def start_all(cids: list[str]) -> list[int]:
    """Start every container at once (one thread each) and wait for all to exit."""
    barrier = threading.Barrier(len(cids))
    codes: list[int] = [0] * len(cids)
    errors: list[BaseException] = []

    def one(i: int, cid: str) -> None:
        try:
            barrier.wait()
            api("POST", f"/containers/{cid}/start")
            codes[i] = int(api("POST", f"/containers/{cid}/wait")["StatusCode"])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i, c)) for i, c in enumerate(cids)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return codes


def count_docker_logs(cid: str, sc: Scenario) -> int:
    """Distinct expected lines in ``docker logs`` (like ``docker logs | wc -l``, but a line
    counts once and only if it is one of the container's)."""
    r = subprocess.run(["docker", "logs", cid], capture_output=True, timeout=600, check=False)
    seen = bytearray(sc.lines)
    n = 0
    for line in r.stdout.splitlines():
        number = number_of(line)  # as the receivers read it: J1's lines end in "n":123}
        if number is None:
            continue
        k = number - sc.first
        if 0 <= k < sc.lines and not seen[k]:
            seen[k] = 1
            n += 1
    return n


# ----------------------------------------------------------------------------- profiling


def py_spy() -> str | None:
    """py-spy on PATH or next to this Python (installed into .venv)."""
    beside = Path(sys.executable).parent / "py-spy"
    return shutil.which("py-spy") or (str(beside) if beside.exists() else None)


def start_profiler(pylog: PylogServe, directory: Path, name: str) -> subprocess.Popen[bytes]:
    directory.mkdir(parents=True, exist_ok=True)
    assert pylog.proc is not None
    with open(directory / f"{name}.log", "ab") as err:
        proc = subprocess.Popen(
            [py_spy() or "py-spy", "record", "--pid", str(pylog.proc.pid), "--rate", "200",
             "--nonblocking", "--threads", "--format", "raw", "-o", str(directory / f"{name}.txt")],
            stdout=subprocess.DEVNULL, stderr=err)
    time.sleep(0.5)  # py-spy attaches before the run starts
    return proc


def stop_profiler(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def summarize_profile(raw: Path, top: int = 25) -> str:
    """py-spy's raw (collapsed) stacks as two lists, in % of the samples: where the samples were
    (self, by function), and which of pylog's own functions they were under (inclusive)."""
    self_t: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0

    def short(frame: str) -> tuple[str, bool]:
        func, _, where = frame.partition(" (")
        path = where.rsplit(":", 1)[0]
        return f"{func} ({path.rsplit('/', 1)[-1]})", path.startswith("pylog/") or "/pylog/" in path

    for line in raw.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        frames = [short(f) for f in stack.split(";")
                  if not f.startswith(("thread (", "process "))]
        if not frames:
            continue
        total += count
        self_t[frames[-1][0]] = self_t.get(frames[-1][0], 0) + count
        for f in {f for f, own in frames if own}:
            incl[f] = incl.get(f, 0) + count
    if not total:
        return "no samples"
    out = [(f"{total} samples at 200 Hz of pylog's threads while active (py-spy leaves out "
            f"idle ones; a thread waiting for a CPU counts as active)"), "", "self:"]
    out += [f"  {c * 100 / total:5.1f}%  {f}" for f, c in
            sorted(self_t.items(), key=lambda x: -x[1])[:top]]
    out += ["", "inclusive (pylog's functions):"]
    out += [f"  {c * 100 / total:5.1f}%  {f}" for f, c in
            sorted(incl.items(), key=lambda x: -x[1])[:top]]
    return "\n".join(out)


# ----------------------------------------------------------------------------- report


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fmt_range(values: list[float], digits: int = 2) -> str:
    if not values:
        return "–"
    m = med(values)
    if len(values) == 1:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def ratio(a: float | None, b: float | None) -> str:
    # dockerd's StartedAt can come after FinishedAt for a container that exits within a few
    # milliseconds (E1's 20,000 lines take about that): no ratio to a time under 10 ms, which
    # would be noise, or from a time that is not one
    if a is None or b is None or math.isnan(a) or math.isnan(b) or b < 0.01 or a < 0:
        return "–"
    return f"{a / b:.2f}x"


def scenario_table(sc: Scenario, runs: list[Run], order: list[str]) -> list[str]:
    by: dict[str, list[Run]] = {}
    for r in runs:
        if not math.isnan(r.run_s):  # a run that failed (dockerd restarted) is only noted
            by.setdefault(r.config, []).append(r)

    def meds(key: str, attr: str) -> float | None:
        vals = [getattr(r, attr) for r in by.get(key, []) if getattr(r, attr) is not None]
        return med(vals) if vals else None

    json_run = meds("json-file", "run_s")
    dfl_run = meds("fluentd", "run_s")
    dfl_sink = meds("fluentd", "sink_s")
    json_dcpu = meds("json-file", "dockerd_cpu_s")
    dfl_dcpu = meds("fluentd", "dockerd_cpu_s")
    out = [f"### {sc.name}: {sc.title}", "",
           ("| driver | run s | run ×json | run ×dfl | all lines at sink s | sink ×json run "
            "| sink ×dfl | pylog CPU s | pylog CPU s/M lines | dockerd CPU s "
            "| logging CPU ×json | ×dfl | pylog peak RSS MB | lines delivered (worst round) "
            "| lost | other CPU s (noise) |"),
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key in order:
        rs = by.get(key)
        if not rs:
            continue
        c = CONFIGS[key]
        run_s = [r.run_s for r in rs]
        sinks = [r.sink_s for r in rs if r.sink_s is not None]
        incomplete = sum(1 for r in rs if c.sinks and r.sink_s is None)
        cpu = [r.pylog_cpu_s for r in rs if r.pylog_cpu_s is not None]
        dcpu = [r.dockerd_cpu_s for r in rs]
        rss = [r.pylog_rss_peak / 1e6 for r in rs if r.pylog_rss_peak]
        logging_cpu = med([r.dockerd_cpu_s + (r.pylog_cpu_s or 0) for r in rs])
        delivered = [r.delivered for r in rs if r.delivered is not None]
        lost = [r.lost for r in rs if r.lost is not None]
        sink_txt = fmt_range(sinks) if sinks else "–"
        if incomplete:
            sink_txt += f" ({incomplete} incomplete)"
        out.append(" | ".join([
            f"| {c.label}", fmt_range(run_s), ratio(med(run_s), json_run),
            ratio(med(run_s), dfl_run) if c.fluentd else "",
            sink_txt, ratio(med(sinks), json_run) if sinks else "–",
            ratio(med(sinks), dfl_sink) if c.fluentd and sinks else "",
            fmt_range(cpu) if cpu else "–",
            f"{med(cpu) / (sc.total / 1e6):.2f}" if cpu else "–",
            fmt_range(dcpu),
            ratio(logging_cpu, json_dcpu),
            ratio(logging_cpu, dfl_dcpu) if c.fluentd else "",
            fmt_range(rss, 0) if rss else "–",
            f"{min(delivered):,}/{sc.total:,}" if delivered else "n/a",
            str(max(lost)) if lost else "n/a",
            fmt_range([r.other_cpu_s for r in rs], 1) + " |"]))
    out.append("")
    noted = [r for key in order for r in runs
             if r.config == key and (r.notes or r.attempts > 1)]
    if noted:
        out += [f"Notes on {sc.name} runs:", ""]
        again = "made {} times (other work on the host), the least disturbed kept"
        out += [f"- {CONFIGS[r.config].label}, round {r.round}: "
                + "; ".join(([again.format(r.attempts)] if r.attempts > 1 else []) + r.notes)
                for r in noted]
        out.append("")
    rec = [(key, r) for key in order for r in by.get(key, []) if r.receivers]
    if rec:
        out += [f"Receivers in {sc.name} (median over rounds; each is its own process):", "",
                ("| driver | receiver | events/s arriving (first→last) | receiver CPU share "
                 "of that span | receiver capacity (events per CPU-s of handling) | "
                 "bytes per line on the wire | duplicates |"),
                "|---|---|---|---|---|---|---|"]
        for key in order:
            rs = [r for r in by.get(key, []) if r.receivers]
            if not rs:
                continue
            for kind in CONFIGS[key].sinks:
                vals = [r.receivers[kind] for r in rs if kind in r.receivers]
                if not vals:
                    continue
                cap = [v["capacity_per_s"] for v in vals if not math.isnan(v["capacity_per_s"])]
                out.append(
                    f"| {CONFIGS[key].label} | {kind} | "
                    f"{med([v['events_per_s'] for v in vals]):,.0f} | "
                    f"{med([v['cpu_share'] for v in vals]) * 100:.0f}% | "
                    f"{(f'{med(cap):,.0f}' if cap else 'n/a (polled)')} | "
                    f"{fmt_bytes([v.get('bytes_per_event', math.nan) for v in vals])} | "
                    f"{max(r.dups.get(kind, 0) for r in rs)} |")
        out.append("")
    return out


def fmt_bytes(values: list[float]) -> str:
    known = [v for v in values if not math.isnan(v)]
    return f"{med(known):,.0f}" if known else "n/a (polled)"


def target_lines(all_runs: list[Run], scs: dict[str, Scenario], scale: float = 1.0
                 ) -> list[str]:
    def m(sc: str, key: str, attr: str) -> float | None:
        vals = [getattr(r, attr) for r in all_runs
                if r.scenario == sc and r.config == key and getattr(r, attr) is not None]
        return med(vals) if vals else None

    def verdict(ok: bool | None, any_scale: bool = False) -> str:
        if ok is None:
            return "n/a (not run)"
        if scale != 1.0 and not any_scale:  # a fixed cost per run dominates a short one
            return f"not judged at --scale {scale:g}"
        return "PASS" if ok else "MISS"

    out = ["### Targets (reported, never enforced)", ""]
    if scale != 1.0:
        out += [(f"(--scale {scale:g}: the targets are about the full scenarios; with fewer "
                 f"lines, run times of a few tens of milliseconds make these ratios noise)"), ""]
    j = m("B1", "json-file", "run_s")
    s = m("B1", "pylog", "run_s")
    r1 = s / j if s and j else None
    aim = "" if r1 is None or scale != 1.0 else (" (aim met)" if r1 <= 1.2 else
                                                  " (aim 1.2x missed)")
    out.append(f"- B1 store-only run time ≤ 1.5x json-file (aim 1.2x): "
               f"{f'{r1:.2f}x' if r1 else '–'} → {verdict(None if r1 is None else r1 <= 1.5)}"
               f"{aim}")
    f = m("B1", "pylog-fluentd", "run_s")
    r2 = f / j if f and j else None
    out.append(f"- B1 with fluentd sink run time ≤ 1.5x json-file: "
               f"{f'{r2:.2f}x' if r2 else '–'} → {verdict(None if r2 is None else r2 <= 1.5)}")
    fs = m("B1", "pylog-fluentd", "sink_s")
    ds = m("B1", "fluentd", "sink_s")
    r3 = fs / ds if fs and ds else None
    out.append(f"- B1 every line at the receiver in ≤ 0.5x Docker's fluentd driver's time: "
               f"{f'{fs:.2f} s vs {ds:.2f} s = {r3:.2f}x' if r3 else '–'} → "
               f"{verdict(None if r3 is None else r3 <= 0.5)}")
    def b1_cpu_per_million(key: str) -> float | None:
        cpu = m("B1", key, "pylog_cpu_s")
        return cpu / (scs["B1"].total / 1e6) if cpu is not None and "B1" in scs else None

    per_m = b1_cpu_per_million("pylog-fluentd")
    out.append(f"- pylog CPU ≤ 2 CPU-s per million lines (enrichment + store + fluentd sink, "
               f"B1): {f'{per_m:.2f} CPU-s/M' if per_m is not None else '–'} → "
               f"{verdict(None if per_m is None else per_m <= 2.0)}")
    es_m = b1_cpu_per_million("pylog-es")
    if es_m is not None:
        out.append(f"  - the same with the Elasticsearch sink as the one sink (B1 pylog +es): "
                   f"{es_m:.2f} CPU-s/M → {verdict(es_m <= 2.0)}")
    rss = m("B1", "pylog-fluentd-down", "pylog_rss_peak")
    out.append(f"- peak RSS ≤ 150 MB during B1 with the only sink down (spooling): "
               f"{f'{rss / 1e6:.0f} MB' if rss else '–'} → "
               f"{verdict(None if rss is None else rss <= 150e6)}")
    osm = [r for r in all_runs if r.scenario == "E1" and r.config == "pylog-es-osmem"]
    if osm:
        got = min((r.delivered or 0) for r in osm)
        total = scs["E1"].total if "E1" in scs else 0
        o_sink, b_sink = m("E1", "pylog-es-osmem", "sink_s"), m("E1", "pylog-es", "sink_s")
        o_cpu, b_cpu = m("E1", "pylog-es-osmem", "pylog_cpu_s"), m("E1", "pylog-es",
                                                                   "pylog_cpu_s")
        rec = [r.receivers["osmem"] for r in osm if "osmem" in r.receivers]
        out.append(
            f"- (not a target) E1, the Elasticsearch sink to osmem-server: {got:,}/{total:,} "
            f"lines indexed in the worst round, all of them after "
            f"{f'{o_sink:.2f} s' if o_sink else '– (incomplete)'} (to the bench's _bulk "
            f"receiver: {f'{b_sink:.2f} s' if b_sink else '–'}); pylog CPU "
            f"{f'{o_cpu:.2f}' if o_cpu is not None else '–'} s vs "
            f"{f'{b_cpu:.2f}' if b_cpu is not None else '–'} s; osmem-server took "
            + (f"{med([v['events_per_s'] for v in rec]):,.0f} documents/s using "
               f"{med([v['cpu_share'] for v in rec]) * 100:.0f}% of a CPU: the peer, not pylog, "
               f"sets this time" if rec else "–"))
    for sc_name, key, what in (("M1", "pylog-fluentd-multiline", "multiline on stack traces"),
                               ("J1", "pylog-fluentd-json", "parse=json on JSON lines")):
        per_m = scs[sc_name].total * scs[sc_name].each / 1e6 if sc_name in scs else 1.0
        out += _feature_cost(m, verdict, sc_name, key, what, per_m)
    lossy = [r for r in all_runs if r.lost not in (None, 0)]
    counted = [r for r in all_runs if r.lost is not None]
    out.append(f"- zero lines lost in every run: {len(counted)} runs counted, "
               f"{len(lossy)} with loss → "
               f"{verdict(None if not counted else not lossy, any_scale=True)}")
    for r in lossy:
        out.append(f"  - {r.scenario} {r.config} round {r.round}: {r.lines} of {r.expected}")
    bad_exit = [r for r in all_runs if any(r.exit_codes)]
    for r in bad_exit:
        out.append(f"  - {r.scenario} {r.config} round {r.round}: exit codes {r.exit_codes}")
    out.append("")
    return out


def _feature_cost(m: Any, verdict: Any, sc_name: str, key: str, what: str, millions: float,
                  ) -> list[str]:
    """What a feature adds to the fluentd sink path's CPU: pylog's CPU with the sink less the
    store-only run's (``pylog``), with the feature against the same log without it (and per
    million of the log's lines, ``millions`` of them); and to the whole of pylog's CPU."""
    on, off = m(sc_name, key, "pylog_cpu_s"), m(sc_name, "pylog-fluentd", "pylog_cpu_s")
    store = m(sc_name, "pylog", "pylog_cpu_s")
    path = ((on - off) / (off - store) if on and off and store is not None and off > store
            else None)
    whole = on / off - 1 if on and off else None
    return [f"- {what} adds ≤ 50% to the fluentd sink path's CPU ({sc_name}: pylog's CPU less "
            f"the store-only run's, the same log without it): "
            + (f"{on - store:.2f} vs {off - store:.2f} CPU-s = {path * 100:+.0f}% "
               f"({(on - store) / millions:.2f} vs {(off - store) / millions:.2f} CPU-s per "
               f"million lines)" if path is not None and store is not None and on and off
               else "–")
            + f" → {verdict(None if path is None else path <= 0.5)}",
            "  - to the whole of pylog's CPU: "
            + (f"{on:.2f} vs {off:.2f} CPU-s = {whole * 100:+.0f}%" if whole is not None
               else "–")]


def plugin_digest() -> str:
    """A digest of pylog's source as it is now: each run starts a fresh `pylog serve` from
    the working tree, so an edit during an invocation would change what is measured."""
    import hashlib
    h = hashlib.sha256()
    for f in sorted((ROOT / "plugin" / "pylog").rglob("*.py")):
        h.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:12]


def machine() -> list[str]:
    version = api("GET", "/version")
    info = api("GET", "/info")
    mem = psutil.virtual_memory().total
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                capture_output=True, text=True, check=False).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "plugin"], cwd=ROOT,
                               capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        commit, dirty = "?", ""
    cpu_model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    return [
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M:%S UTC')}",
        (f"- machine: nproc {os.cpu_count()}, {cpu_model}, memory {mem / 2**30:.1f} GiB, "
         f"kernel {platform.release()}"),
        (f"- dockerd {version.get('Version')} (API {version.get('ApiVersion')}), storage "
         f"{info.get('Driver')}, root {info.get('DockerRootDir')}"),
        (f"- python {platform.python_version()}, pylog at {commit}"
         f"{' (plugin/ modified)' if dirty else ''}, plugin/pylog source digest "
         f"{plugin_digest()}"),
        f"- load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
    ]


# ----------------------------------------------------------------------------- main


def report_from(path: Path, args: argparse.Namespace) -> int:
    """The report of an earlier invocation, from its --json file."""
    saved = json.loads(path.read_text())
    runs = [Run(**r) for r in saved["runs"]]
    scale = float(saved.get("scale", args.scale))
    all_sc = scenarios(scale, int(saved.get("b2_containers", args.b2_containers)))
    names = list(dict.fromkeys(r.scenario for r in runs))
    scs = {n: all_sc[n] for n in names}
    report: list[str] = []
    for sc in scs.values():
        sc_runs = [r for r in runs if r.scenario == sc.name]
        report += scenario_table(sc, sc_runs, list(dict.fromkeys(r.config for r in sc_runs)))
    text = "\n".join(saved["header"] + report + target_lines(runs, scs, scale))
    print(text, flush=True)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[1:]))
    ap.add_argument("--scenarios", default="B1,B2,B3,E1", help="comma-separated: B1,B2,B3,E1")
    ap.add_argument("--drivers", default=",".join(CONFIGS),
                    help=f"comma-separated, of: {', '.join(CONFIGS)}")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--scale", type=float, default=1.0,
                    help="multiply every scenario's line count (0.1: a tenth)")
    ap.add_argument("--b2-containers", type=int, default=20)
    ap.add_argument("--quick", action="store_true",
                    help="--scale 0.1 --rounds 1 --b2-containers 5: a smoke run (for CI) in "
                         "under 2 minutes; too few lines for the ratios to mean much")
    ap.add_argument("--es-peer", choices=("bulk", "osmem"), default="bulk",
                    help="the Elasticsearch peer: bench/peers.py's _bulk receiver (default) or "
                         "osmem-server (~2,000 documents/s here: the bottleneck; use with "
                         "--scale)")
    ap.add_argument("--sink-timeout", type=float, default=600,
                    help="seconds to wait for the receivers to hold every line")
    ap.add_argument("--stall", type=float, default=30,
                    help="give up waiting when no line arrived for this many seconds")
    ap.add_argument("--quiet", type=float, default=0,
                    help="before each run, wait up to this many seconds for the host to be "
                         "quiet (other work below --quiet-cores)")
    ap.add_argument("--quiet-cores", type=float, default=0.25,
                    help="CPUs' worth of other work counted as quiet (default 0.25)")
    ap.add_argument("--retry-noisy", type=int, default=2,
                    help="make a run again, up to this many times, when other work on the host "
                         "took more CPU than --noise-cores during it (the least disturbed counts)")
    ap.add_argument("--noise-cores", type=float, default=0.3,
                    help="CPUs' worth of other work a run tolerates (beyond its own helpers)")
    ap.add_argument("--workdir", default="",
                    help="where pylog state dirs go (default: pylog-bench next to Docker's "
                         "root dir, on its filesystem)")
    ap.add_argument("--keep", action="store_true", help="keep pylog's state dirs")
    ap.add_argument("--profile", default="",
                    help="record every pylog run with py-spy (raw collapsed stacks) into this "
                         "directory; timings of a profiled invocation are not comparable")
    ap.add_argument("--baseline", default="", metavar="REF",
                    help="also run each pylog driver asked for from this git commit (HEAD~1, "
                         "a tag...), in the same rounds: rows '<driver>@base'")
    ap.add_argument("--json", default="", help="write every run's numbers to this file")
    ap.add_argument("--markdown", default="", help="write the report to this file as well")
    ap.add_argument("--report-from", default="", metavar="JSON",
                    help="measure nothing: print the report again from the runs a --json file "
                         "kept (with this version's tables and target lines)")
    args = ap.parse_args()
    if args.report_from:
        return report_from(Path(args.report_from), args)
    if args.quick:
        args.scale, args.rounds, args.b2_containers = 0.1, 1, 5
    if os.geteuid() != 0:
        sys.exit("bench/run.py must run as root (pylog reads dockerd's FIFOs)")
    try:
        api("GET", "/_ping")
    except (OSError, RuntimeError) as e:
        sys.exit(f"dockerd is not reachable at {DOCKER_SOCK}: {e}")
    if args.profile and py_spy() is None:
        sys.exit("--profile needs py-spy (.venv/bin/pip install py-spy)")
    all_sc = scenarios(args.scale, args.b2_containers)
    scs = {n: all_sc[n] for n in args.scenarios.split(",") if n}
    keys = [k for k in args.drivers.split(",") if k]
    unknown = [k for k in keys if k not in CONFIGS] + [n for n in scs if n not in all_sc]
    if unknown:
        sys.exit(f"unknown: {unknown}")
    # the drivers with a row in some scenario asked for (pylog-es-osmem only in E1)
    configs = [c for c in map(CONFIGS.__getitem__, keys)
               if any(runs_in(sc, c) for sc in scs.values())]
    if args.baseline:
        configs += baseline_configs(args.baseline, [c for c in configs if c.pylog])
    if not configs:
        sys.exit(f"none of the drivers {keys} runs in the scenarios {list(scs)}")

    docker_root = Path(api("GET", "/info")["DockerRootDir"])
    base = Path(args.workdir) if args.workdir else docker_root.parent / "pylog-bench"
    base.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="run-", dir=base))
    same_fs = os.stat(workdir).st_dev == os.stat(docker_root).st_dev
    ensure_image()
    remove_leftovers()

    digest_start = plugin_digest()
    header = ["## pylog benchmark", "", *machine(),
              (f"- pylog state dirs under {workdir} "
               f"({'same filesystem as' if same_fs else 'NOT the same filesystem as'} "
               f"{docker_root})"),
              f"- command: `python bench/run.py {' '.join(sys.argv[1:])}`".replace(
                  "`python bench/run.py `", "`python bench/run.py`"),
              (f"- {args.rounds} rounds; drivers alternate A B C … then … C B A; a fresh "
               f"`pylog serve` per pylog run; Elasticsearch peer: {args.es_peer}"), ""]
    print("\n".join(header), flush=True)

    bench = Bench(args, workdir)
    bench.start_peers(configs)
    runs: list[Run] = []
    report: list[str] = []
    try:
        for sc in scs.values():
            sc_configs = [c for c in configs if runs_in(sc, c)]
            if not sc_configs:
                continue
            print(f"{sc.name}: {sc.title}", flush=True)
            sc_runs: list[Run] = []
            for rnd in range(args.rounds):
                order = sc_configs if rnd % 2 == 0 else list(reversed(sc_configs))
                for config in order:
                    r = bench.measured(sc, config, rnd + 1)
                    sc_runs.append(r)
                    print(f"  r{rnd + 1} {config.key:<19} run {r.run_s:7.3f} s"
                          + (f"  sink {r.sink_s:7.3f} s" if r.sink_s is not None else
                             ("  sink INCOMPLETE" if config.sinks else ""))
                          + (f"  pylog cpu {r.pylog_cpu_s:6.2f} s  rss "
                             f"{(r.pylog_rss_peak or 0) / 1e6:5.0f} MB"
                             if r.pylog_cpu_s is not None else "")
                          + f"  dockerd cpu {r.dockerd_cpu_s:5.2f} s"
                          + f"  other {r.other_cpu_s:5.2f} s (host busy {r.busy_before:.2f}"
                          f" CPUs before)"
                          + (f"  lines {r.lines}" if r.lines else "")
                          + (f"  {'; '.join(r.notes)}" if r.notes else ""), flush=True)
            runs += sc_runs
            table = scenario_table(sc, sc_runs, [c.key for c in sc_configs])
            report += table
            print("\n" + "\n".join(table), flush=True)
    finally:
        bench.close()
        try:
            remove_leftovers()
        except (OSError, RuntimeError, http.client.HTTPException) as e:
            print(f"warning: {e}", file=sys.stderr)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    targets = target_lines(runs, scs, args.scale)
    digest_end = plugin_digest()
    if digest_end != digest_start:
        targets.append(f"WARNING: plugin/pylog changed during this invocation (source digest now "
                       f"{digest_end}): runs before and after the change measured different code.")
    print("\n".join(targets), flush=True)
    if args.markdown:
        Path(args.markdown).write_text("\n".join(header + report + targets) + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"header": header, "scale": args.scale, "b2_containers": args.b2_containers,
             "runs": [r.__dict__ for r in runs]}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
