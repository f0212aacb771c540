"""Operations against the real dockerd: metrics checked against known traffic, health that flips
when a sink dies and back when it returns, `pylog ps` showing the sinks, pylog's own structured
log, a full disk counted, and the namespace map drawn in a real headless browser."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.peers.fluentd_receiver import ThreadedReceiver, free_port

from .browser import Browser, chromium_binary
from .conftest import Containers, PylogServer, logs, new_server, touch, wait
from .health import thread_stacks

pytestmark = pytest.mark.e2e

NO_NET = ("--network", "none")  # no bridge needed; a private network namespace all the same
Samples = list[tuple[str, dict[str, str], float]]


def get(url: str, timeout: float = 30) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (urllib.error.URLError, OSError) as e:  # not listening (yet): pylog binds the
        return 0, str(e)  # metrics port just after the plugin socket, which start() waits for


class Ops:
    """A `pylog serve --metrics-address` with its listener's URLs."""

    def __init__(self, server: PylogServer, port: int) -> None:
        self.server = server
        self.base = f"http://127.0.0.1:{port}"

    def samples(self) -> Samples:
        status, text = get(f"{self.base}/metrics")
        assert status == 200, text
        return [(s.name, dict(s.labels), s.value)
                for fam in text_string_to_metric_families(text) for s in fam.samples]

    def value(self, name: str, **labels: str) -> float | None:
        found = [v for n, lab, v in self.samples()
                 if n == name and all(lab.get(k) == x for k, x in labels.items())]
        assert len(found) <= 1, (name, labels, found)
        return found[0] if found else None

    def wait_value(self, name: str, pred: Callable[[float], bool], **labels: str) -> float:
        deadline = time.monotonic() + 60
        while True:
            v = self.value(name, **labels)
            if v is not None and pred(v):
                return v
            assert time.monotonic() < deadline, f"{name}{labels} stayed {v}"
            time.sleep(0.1)  # polling the metrics, bounded by the deadline

    def wait_status(self, path: str, status: int, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while True:
            got, body = get(self.base + path)
            if got == status:
                return body
            assert time.monotonic() < deadline, f"{path} stayed {got}: {body}"
            time.sleep(0.1)  # polling the endpoint, bounded by the deadline


@pytest.fixture
def ops(docker_ready: None, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Ops]:
    port = free_port()
    extra = getattr(request, "param", [])
    server = new_server(tmp_path, ["--gc-interval", "0", "--metrics-address",
                                   f"127.0.0.1:{port}", *extra])
    server.start()
    o = Ops(server, port)
    o.wait_status("/healthz", 200, timeout=30)
    yield o
    server.stop()
    artifacts = os.environ.get("PYLOG_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        (Path(artifacts) / f"pylog-ops-{request.node.name}.log").write_text(server.log_text())


def log_records(server: PylogServer) -> list[dict[str, object]]:
    """pylog's own log: every line must be one JSON object."""
    out = []
    for line in server.log_text().splitlines():
        out.append(json.loads(line))
    return out


@pytest.mark.parametrize("ops", [["--log-level", "info"]], indirect=True)
def test_metrics_count_known_traffic(ops: Ops, busybox: str, receiver: ThreadedReceiver) -> None:
    n = 20000
    c = Containers(busybox)
    try:
        cid = c.run(ops.server.name, f"seq 1 {n}", f"fluentd-address={receiver.address}",
                    args=NO_NET)
        assert len(receiver.wait_for(n, cid[:12])) == n
        short = cid[:12]
        labels = {"container_id": short}
        # The container stopped and its delivery ended: its series linger for the scrape.
        delivered = ops.wait_value("pylog_delivered_lines_total", lambda v: v == n, **labels)
        assert delivered == n
        assert ops.value("pylog_lines_in_total", **labels) == n
        stored = (ops.server.container_dir(cid) / "container.log").stat().st_size
        assert ops.value("pylog_bytes_in_total", **labels) == stored
        assert ops.value("pylog_spool_bytes", **labels) == 0
        assert ops.value("pylog_queue_lines", **labels) == 0
        assert ops.value("pylog_delivery_lag_seconds", **labels) == 0
        assert ops.value("pylog_delivery_retries_total", **labels) == 0
        for reason in ("corrupt_frame", "disk_full", "spool_full"):
            assert ops.value("pylog_dropped_bytes_total", reason=reason, **labels) == 0
        assert ops.value("pylog_dropped_lines_total", reason="rejected_by_sink", **labels) == 0
        last = ops.value("pylog_last_success_timestamp_seconds", **labels)
        assert last is not None and abs(time.time() - last) < 120
        (found,) = [lab for nm, lab, _ in ops.samples()
                    if nm == "pylog_lines_in_total" and lab["container_id"] == short]
        assert found["container_name"] == _name(cid)
        assert ops.value("pylog_attached_containers") == 0
        # pylog's own log: JSON lines, and no line per log line at info (20,000 lines went by).
        records = log_records(ops.server)
        assert all({"time", "level", "logger", "msg"} <= set(r) for r in records)
        assert len(records) < 20, [r["msg"] for r in records]
    finally:
        c.cleanup()


@pytest.mark.parametrize("ops", [["--ready-max-failing", "1", "--log-level", "info"]],
                         indirect=True)
def test_health_flips_when_a_sink_dies_and_back_when_it_returns(
        ops: Ops, busybox: str, receiver: ThreadedReceiver) -> None:
    c = Containers(busybox)
    try:
        script = ("i=0; while [ ! -e /tmp/stop ]; do echo \"tick $i\"; i=$((i+1)); "
                  "usleep 20000; done; echo last")
        cid = c.start(ops.server.name, script, f"fluentd-address={receiver.address}",
                      "fluentd-retry-wait=100ms", args=NO_NET)
        short = cid[:12]
        receiver.wait_for(10, short)
        assert ops.wait_status("/readyz", 200).startswith("ready")
        assert ops.value("pylog_sink_up") == 1
        assert ops.value("pylog_ready") == 1

        receiver.stop_listening()  # fluentd goes away
        body = ops.wait_status("/readyz", 503)
        assert "failing" in body and "fluentd" in body, body
        assert get(ops.base + "/healthz") == (200, "ok\n")  # the plugin itself is fine
        assert ops.value("pylog_sink_up") == 0
        assert ops.value("pylog_ready") == 0
        assert ops.value("pylog_sink_state", state="retrying") == 1
        ops.wait_value("pylog_delivery_retries_total", lambda v: v >= 3, container_id=short)
        ops.wait_value("pylog_spool_bytes", lambda v: v > 0, container_id=short)
        ops.wait_value("pylog_delivery_lag_seconds", lambda v: v > 0, container_id=short)
        # `pylog ps` shows the sink below the namespace table: retrying, bytes behind, error.
        ps = subprocess.run([sys.executable, "-m", "pylog", "ps", "--socket",
                             str(ops.server.socket)], capture_output=True, text=True, timeout=60,
                            check=False)
        assert ps.returncode == 0, ps.stderr
        table, _, sinks = ps.stdout.partition("Sinks:")
        assert short in table
        row = [ln for ln in sinks.splitlines() if "fluentd-" in ln]
        assert len(row) == 1 and "retrying" in row[0] and receiver.address in row[0], sinks
        assert "refused" in row[0] or "Connect call failed" in row[0], row
        assert " B " in row[0] or "KiB" in row[0] or "MiB" in row[0]

        receiver.start_listening()  # fluentd is back (same port)
        assert ops.wait_status("/readyz", 200).startswith("ready")
        ops.wait_value("pylog_sink_up", lambda v: v == 1)
        touch(cid, "/tmp/stop")
        assert wait(cid) == 0
        ops.wait_value("pylog_spool_bytes", lambda v: v == 0, container_id=short)
        stored = ops.value("pylog_lines_in_total", container_id=short)
        ops.wait_value("pylog_delivered_lines_total", lambda v: v == stored, container_id=short)
        # The outage is in pylog's log once when it started and once when it ended, not once
        # per retry (there were several).
        records = log_records(ops.server)
        events = [r.get("event") for r in records if r.get("event") in ("sink_down", "sink_up")]
        assert events == ["sink_down", "sink_up"], events
        retries = ops.value("pylog_delivery_retries_total", container_id=short)
        assert retries is not None and retries >= 3
    finally:
        c.cleanup()


def test_a_full_disk_is_counted(docker_ready: None, busybox: str, tmp_path: Path) -> None:
    state = tmp_path / "small"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(state)], check=True)
    port = free_port()
    server = new_server(tmp_path, ["--gc-interval", "0", "--metrics-address", f"127.0.0.1:{port}"])
    server.state_dir = state / "state"
    server.start()
    ops = Ops(server, port)
    ops.wait_status("/healthz", 200, timeout=30)
    c = Containers(busybox)
    try:
        script = ("seq 1 200000; touch /tmp/written; while [ ! -e /tmp/go ]; do usleep 10000; "
                  "done; echo after the disk had room again")
        cid = c.start(server.name, script, args=NO_NET)
        labels = {"container_id": cid[:12]}
        deadline = time.monotonic() + 60
        while subprocess.run(["docker", "exec", cid, "test", "-e", "/tmp/written"],
                             check=False).returncode:
            assert time.monotonic() < deadline, "the container stalled on a full disk"
            time.sleep(0.05)  # polling the container, bounded
        lost = ops.wait_value("pylog_dropped_bytes_total", lambda v: v > 0, reason="disk_full",
                              **labels)
        lines = ops.value("pylog_lines_in_total", **labels)
        assert lines is not None and lines < 200000
        subprocess.run(["mount", "-o", "remount,size=64m", str(state)], check=True)
        touch(cid, "/tmp/go")
        assert wait(cid) == 0
        # Detached: the stream ended, so every byte dockerd wrote has been read.
        ops.wait_value("pylog_container_attachments", lambda v: v == 0, **labels)
        final_lost = ops.value("pylog_dropped_bytes_total", reason="disk_full", **labels)
        stored = ops.value("pylog_bytes_in_total", **labels)
        final_lines = ops.value("pylog_lines_in_total", **labels)
        assert final_lost is not None and stored is not None and final_lines is not None
        assert final_lost >= lost and final_lines > lines  # the last line was stored
        # Every byte was either stored or counted as dropped, exactly: dockerd frames each line
        # as [4-byte length][source: 8 bytes][time_nano: 10][line: 2 + its length without the
        # newline] = 23 + the line's length with it; `seq 1 200000` is 1,288,895 bytes of
        # text; then the last line (30 bytes).
        assert stored + final_lost == 1_288_895 + 200_000 * 23 + (23 + 30)
        assert logs(cid)[0].endswith(b"after the disk had room again\n")
        # `docker logs` of a stopped container attaches a new FIFO: its counters go on.
        assert ops.value("pylog_dropped_bytes_total", reason="disk_full", **labels) == final_lost
        assert ops.value("pylog_lines_in_total", **labels) == final_lines
    finally:
        c.cleanup()
        server.stop()
        subprocess.run(["umount", "-l", str(state)], check=False)


# ------------------------------------------------------------------------- the namespace map


def artifacts_dir() -> Path:
    path = Path(os.environ.get("PYLOG_ARTIFACTS") or Path(__file__).parents[2] / "artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


MAP_STATE = """(() => {
  const status = document.getElementById("status");
  if (!status) return {updates: 0, status: "", groups: [], rows: []};  // still loading
  const groups = [...document.querySelectorAll(".ns-group")].map(g => ({
    type: g.dataset.type, ns: g.dataset.ns, host: g.dataset.host === "true",
    members: [...g.querySelectorAll(".ctr-chip")].map(c => c.dataset.name),
    visible: g.getBoundingClientRect().height > 0, text: g.innerText}));
  const rows = [...document.querySelectorAll("tr.ctr")].map(r => ({
    name: r.dataset.name, hostTypes: r.dataset.hostTypes ? r.dataset.hostTypes.split(",") : [],
    rate: r.querySelector("td.rate").dataset.rate, text: r.innerText}));
  return {updates: Number(status.dataset.updates), status: status.innerText, groups, rows};
})()"""


def test_namespace_map_in_a_real_browser(ops: Ops, busybox: str) -> None:
    if chromium_binary() is None:
        pytest.fail("chromium is not installed (scripts/setup-host.sh --for-tests installs it)")
    c = Containers(busybox)
    try:
        chatty = ("i=0; while true; do echo \"request $i\"; i=$((i+1)); usleep 50000; done")
        web = c.start(ops.server.name, chatty, args=NO_NET)
        web_name = _name(web)
        side = c.start(ops.server.name, "while true; do echo side; sleep 1; done",
                       args=("--net", f"container:{web}"))
        agent = c.start(ops.server.name, "while true; do echo agent; sleep 1; done",
                        args=("--pid", "host", *NO_NET))
        side_name, agent_name = _name(side), _name(agent)
        # map.json first: what the page is given.
        deadline = time.monotonic() + 60
        while True:
            _, body = get(ops.base + "/map.json")
            data = json.loads(body)
            known = {x["name"]: x for x in data["containers"] if x["ns"]}
            if {web_name, side_name, agent_name} <= set(known):
                break
            assert time.monotonic() < deadline, body
            time.sleep(0.1)  # waiting for the namespaces to be found, bounded
        assert known[web_name]["ns"]["net"]["key"] == known[side_name]["ns"]["net"]["key"]
        assert known[agent_name]["ns"]["pid"]["is_host"] is True
        assert known[web_name]["ns"]["pid"]["is_host"] is False

        async def look() -> dict[str, Any]:
            async with Browser(ops.base + "/") as page:
                # Two fetches at least (rates need two samples), and the chatty one's rate shown.
                state = await page.wait_for(
                    f"(() => {{ const s = {MAP_STATE}; return s.updates >= 2 && s.rows.some("
                    f"r => r.name === {json.dumps(web_name)} && Number(r.rate) > 0) && s; }})()")
                await page.screenshot(artifacts_dir() / "namespace-map.png")
                (artifacts_dir() / "namespace-map.html").write_text(await page.dom())
                return dict(state)

        state = asyncio.run(look())
        groups = state["groups"]
        assert isinstance(groups, list)
        # The pair sharing a network namespace is drawn as one group holding both names.
        shared_net = [g for g in groups if g["type"] == "net" and not g["host"]
                      and g["ns"] not in ("own",) and set(g["members"]) >= {web_name, side_name}]
        assert len(shared_net) == 1 and shared_net[0]["visible"], groups
        assert "SHARED" in shared_net[0]["text"] and agent_name not in shared_net[0]["members"]
        # The container in the host's PID namespace is in the host's PID group, marked as such.
        host_pid = [g for g in groups if g["type"] == "pid" and g["host"]]
        assert len(host_pid) == 1 and agent_name in host_pid[0]["members"], groups
        assert "HOST PID" in host_pid[0]["text"] and host_pid[0]["visible"]
        assert web_name not in host_pid[0]["members"] and side_name not in host_pid[0]["members"]
        rows = {r["name"]: r for r in state["rows"]}
        assert "pid" in rows[agent_name]["hostTypes"] and "pid" not in rows[web_name]["hostTypes"]
        rate = float(rows[web_name]["rate"])
        assert 2 < rate < 40, rate  # ~20 lines/s written; computed from the counters
        assert "lines/s" in rows[web_name]["text"]
        assert (artifacts_dir() / "namespace-map.png").stat().st_size > 10_000
    finally:
        c.cleanup()


def _name(cid: str) -> str:
    r = subprocess.run(["docker", "inspect", "--format", "{{.Name}}", cid],
                       capture_output=True, text=True, check=True)
    return r.stdout.strip().lstrip("/")


def test_sigusr1_writes_every_thread_stack_and_keeps_serving(pylog: PylogServer,
                                                             containers: Containers) -> None:
    """`kill -USR1` on a pylog that seems stuck: every thread's stack goes to its log, and it
    goes on serving (a container started afterwards has its logs)."""
    assert pylog.proc is not None
    stacks = thread_stacks(pylog.proc.pid, pylog.log_path)
    assert "Current thread" in stacks or "Thread 0x" in stacks, stacks
    assert "pylog/cli.py" in stacks, stacks  # the event loop's thread, inside `pylog serve`
    assert pylog.proc.poll() is None
    cid = containers.run(pylog.name, "echo after the dump", *(), args=NO_NET)
    assert logs(cid)[0] == b"after the dump\n"
