"""pylog as a managed plugin (`make plugin`) against the real dockerd.

The module builds the plugin once with `make plugin PLUGIN_NAME=pylog-e2e-<random>` (a name of its
own, so neither a user's `pylog` nor a concurrent run is touched), runs the checks against it and
removes it at the end. The managed plugin has no socket under /run/docker/plugins/NAME.sock:
dockerd puts it at /run/docker/plugins/<plugin id>/pylog.sock, which `pylog inspect --socket`
and `pylog tail --socket` reach from the host.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pylog.namespaces import NS_TYPES, hold_namespaces
from pylog.nsregistry import KEY_CHARS
from tests.peers.fluentd_receiver import ThreadedReceiver, free_port

from .conftest import Containers, logs, touch, wait
from .test_docker_logs import FINAL, SCRIPT, assert_same_logs

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]  # the first test builds the plugin

ROOT = Path(__file__).resolve().parents[2]
PLUGINS_DIR = Path("/var/lib/docker/plugins")
CAP_SYS_PTRACE = 19


def docker(*args: str, timeout: float = 300,
           check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                       check=False)
    if check:
        assert r.returncode == 0, f"docker {' '.join(args)}: {r.stderr}"
    return r


@dataclass
class ManagedPlugin:
    name: str
    build_dir: Path

    @property
    def id(self) -> str:
        return docker("plugin", "inspect", "-f", "{{.Id}}", self.name).stdout.strip()

    @property
    def socket(self) -> Path:
        return Path("/run/docker/plugins") / self.id / "pylog.sock"

    def inspect(self) -> dict[str, Any]:
        return dict(json.loads(docker("plugin", "inspect", self.name).stdout)[0])

    def disable(self, timeout: float = 60) -> None:
        """`docker plugin disable`, which refuses while dockerd holds a reference for a container
        that uses the plugin; dockerd drops it a moment after the container exits."""
        deadline = time.monotonic() + timeout
        while True:
            r = docker("plugin", "disable", self.name, check=False)
            if r.returncode == 0:
                return
            assert "in use" in r.stderr and time.monotonic() < deadline, r.stderr
            time.sleep(0.1)  # polling for dockerd to let go, bounded by the deadline

    def enable(self) -> None:
        docker("plugin", "enable", "--timeout", "0", self.name)
        self.wait_listening()

    def wait_listening(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(str(self.socket))
                return
            except OSError:
                assert time.monotonic() < deadline, f"{self.socket} is not listening"
                time.sleep(0.05)  # polling for the socket, bounded by the deadline
            finally:
                s.close()

    def processes(self) -> list[int]:
        """Host PIDs of the plugin's `pylog serve` (in the cgroup named after the plugin's ID)."""
        pid_list = []
        plugin_id = self.id
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                cgroup = Path(f"/proc/{entry}/cgroup").read_text()
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if plugin_id in cgroup and b"serve" in cmdline and any(b"pylog" in a for a in cmdline):
                pid_list.append(int(entry))
        return pid_list

    def cli(self, *args: str) -> str:
        r = subprocess.run([sys.executable, "-m", "pylog", *args, "--socket", str(self.socket)],
                           capture_output=True, text=True, timeout=60, check=False)
        assert r.returncode == 0, r.stderr
        return r.stdout


def cap_set(status_text: str) -> set[int]:
    """The effective capabilities in a /proc/<pid>/status text, as bit numbers."""
    match = re.search(r"^CapEff:\s*([0-9a-f]+)$", status_text, re.MULTILINE)
    assert match, f"no CapEff in {status_text!r}"
    eff = int(match.group(1), 16)
    return {bit for bit in range(64) if eff >> bit & 1}


def host_ns(ns_type: str) -> str:
    """The host's namespace of a type as pylog defines it: PID 1's, else dockerd's."""
    try:
        return os.readlink(f"/proc/1/ns/{ns_type}")
    except OSError:  # some sandboxes deny PID 1 even to root
        dockerd = Path("/var/run/docker.pid").read_text().strip()
        return os.readlink(f"/proc/{dockerd}/ns/{ns_type}")


def _plugin_log(plugin_id: str) -> str:
    """The plugin's stderr, which dockerd writes into its own log (when we know where it is)."""
    try:
        with open("/var/log/dockerd.log", errors="replace") as f:
            return "".join(line for line in f if f"plugin={plugin_id}" in line)
    except OSError:
        return ""


def _remove_plugin(name: str) -> None:
    docker("plugin", "disable", "-f", name, timeout=120, check=False)
    docker("plugin", "rm", "-f", name, timeout=120, check=False)


@pytest.fixture(scope="module")
def managed(docker_ready: None, busybox: str,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedPlugin]:
    name = f"pylog-e2e-{secrets.token_hex(3)}"
    prebuilt = os.environ.get("PYLOG_E2E_PLUGIN_DIR")  # config.json + rootfs made elsewhere
    t0 = time.monotonic()
    if prebuilt:  # a VM lane's guest: its host built the plugin (no image registry in a guest)
        build_dir = Path(prebuilt)
        r = docker("plugin", "create", name, prebuilt, timeout=600, check=False)
        if r.returncode == 0:
            r = docker("plugin", "enable", "--timeout", "0", name, timeout=300, check=False)
    else:
        if shutil.which("make") is None:
            pytest.fail("make is not installed (scripts/setup-host.sh --for-tests installs it)")
        build_dir = tmp_path_factory.mktemp("managed-plugin") / "plugin"
        r = subprocess.run(["make", "-C", str(ROOT), "plugin", f"PLUGIN_NAME={name}",
                            f"BUILD_DIR={build_dir}"], capture_output=True, text=True,
                           timeout=1200, check=False)
    took = time.monotonic() - t0
    plugin = ManagedPlugin(name, build_dir)
    try:
        assert r.returncode == 0, f"make plugin failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        print(f"make plugin took {took:.0f} s:\n{r.stdout}")
        plugin.wait_listening()
        yield plugin
    finally:
        plugin_id = docker("plugin", "inspect", "-f", "{{.Id}}", name, check=False).stdout.strip()
        _remove_plugin(name)
        docker("image", "rm", f"pylog-plugin-rootfs:{name}", timeout=120, check=False)
        artifacts = os.environ.get("PYLOG_ARTIFACTS")
        if artifacts and plugin_id:
            Path(artifacts).mkdir(parents=True, exist_ok=True)
            (Path(artifacts) / "managed-plugin.log").write_text(_plugin_log(plugin_id))


# ------------------------------------------------------------------------------ the package


def test_manifest_and_process(managed: ManagedPlugin, containers: Containers) -> None:
    """What dockerd made of config.json, and the process it runs: the capabilities are a
    container's defaults plus CAP_SYS_PTRACE only, the settable env is there, and it runs in the
    host's PID and network namespaces (pidhost, network host)."""
    info = managed.inspect()
    config = info["Config"]
    assert info["Enabled"] is True
    assert config["Interface"]["Types"] == ["docker.logdriver/1.0"]
    assert config["Interface"]["Socket"] == "pylog.sock"
    assert config["Linux"]["Capabilities"] == ["CAP_SYS_PTRACE"]
    assert config["PidHost"] is True and config["Network"]["Type"] == "host"
    assert config["PropagatedMount"] == "/var/lib/pylog"
    env = {e.split("=", 1)[0]: e.split("=", 1)[1] for e in info["Settings"]["Env"]}
    assert env == {"LOG_LEVEL": "info", "ELASTICSEARCH_USERNAME": "",
                   "ELASTICSEARCH_PASSWORD": "", "ELASTICSEARCH_API_KEY": "",
                   "ELASTICSEARCH_CREDENTIALS_FILE": "", "OTEL_EXPORTER_OTLP_HEADERS": "",
                   "OTEL_EXPORTER_OTLP_LOGS_HEADERS": "", "LOKI_USERNAME": "",
                   "LOKI_PASSWORD": "", "LOKI_BEARER_TOKEN": "", "METRICS_ADDRESS": ""}

    pids = managed.processes()
    assert len(pids) == 1, f"expected one pylog serve in the plugin, found {pids}"
    pid = pids[0]
    default = cap_set(docker("run", "--rm", "--log-driver", "none", containers.image,
                             "cat", "/proc/self/status").stdout)
    caps = cap_set(Path(f"/proc/{pid}/status").read_text())
    assert CAP_SYS_PTRACE not in default
    assert caps == default | {CAP_SYS_PTRACE}, f"{sorted(caps)} vs defaults {sorted(default)}"
    for ns in ("pid", "net"):
        assert os.readlink(f"/proc/{pid}/ns/{ns}") == host_ns(ns), ns
    assert os.readlink(f"/proc/{pid}/ns/mnt") != host_ns("mnt")
    # The FIFOs dockerd makes for the plugin are in its rootfs at pylog's default --fifo-dir.
    rootfs = PLUGINS_DIR / managed.id / "rootfs"
    assert (rootfs / "opt/pylog/bin/pylog").exists()
    assert not (rootfs / "usr/bin/gcc").exists() and not (rootfs / "wheelhouse").exists()


# --------------------------------------------------------------------------- docker logs


def test_docker_logs_matches_json_file(managed: ManagedPlugin, containers: Containers) -> None:
    jf = containers.run("json-file", SCRIPT + FINAL)
    pl = containers.run(managed.name, SCRIPT + FINAL)
    assert logs(pl)[0].endswith(b"tail b\nno newline at end")
    assert_same_logs(jf, pl)
    fifo_dir = PLUGINS_DIR / managed.id / "rootfs/run/docker/logging"
    assert fifo_dir.is_dir(), "dockerd made no FIFO directory in the plugin's rootfs"
    assert (PLUGINS_DIR / managed.id / "propagated-mount/containers" / pl).is_dir()


def test_follow_longer_than_30_seconds(managed: ManagedPlugin, containers: Containers) -> None:
    """`docker plugin enable` defaults to --timeout 30, which cuts every request, `docker logs
    -f` included, after 30 s; `make plugin` enables with --timeout 0."""
    ticks = 12  # one every 3 s: about 36 s
    script = f'i=0; while [ $i -lt {ticks} ]; do echo "tick $i"; i=$((i+1)); sleep 3; done'
    cid = containers.start(managed.name, script)
    t0 = time.monotonic()
    r = subprocess.run(["docker", "logs", "-f", cid], capture_output=True, timeout=120, check=False)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"".join(b"tick %d\n" % i for i in range(ticks)), r.stderr
    assert took > 32, f"the follow ended after {took:.1f} s, before the container did"
    assert wait(cid) == 0


# ---------------------------------------------------------------------------- namespaces


def wait_for_namespaces(plugin: ManagedPlugin, ref: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        ctx = dict(json.loads(plugin.cli("inspect", ref)))
        if "ns" in ctx.get("pylog", {}):
            return ctx
        assert time.monotonic() < deadline, f"no namespaces for {ref} after 30 s: {ctx}"
        time.sleep(0.05)  # polling the plugin, bounded by the deadline


def state_pid(cid: str) -> int:
    return int(docker("inspect", "-f", "{{.State.Pid}}", cid).stdout)


@pytest.mark.parametrize("args", [
    (),
    ("--net=host",),
    # Another user and more capabilities than the plugin has: reading its /proc/<pid>/ns/* passes
    # the kernel's ptrace check only with CAP_SYS_PTRACE.
    ("--user", "1000", "--cap-add", "SYS_ADMIN"),
], ids=["default", "net-host", "other-user-more-caps"])
def test_namespace_identities_are_the_containers(managed: ManagedPlugin, containers: Containers,
                                                 args: tuple[str, ...]) -> None:
    cid = containers.start(managed.name, "echo up; exec sleep 1000", args=args)
    ctx = wait_for_namespaces(managed, cid)
    pid = state_pid(cid)
    assert ctx["process"]["pid"] == pid  # pidhost: the plugin sees host PIDs
    expected = hold_namespaces(pid)
    try:
        ns = ctx["pylog"]["ns"]
        assert set(ns) == set(expected.identities) == set(NS_TYPES)
        for t, ident in expected.identities.items():
            assert ns[t]["inode"] == os.stat(f"/proc/{pid}/ns/{t}").st_ino == ident.inode, t
            assert ns[t].get("id") == ident.id, t
            assert len(ns[t]["key"]) == KEY_CHARS, t
    finally:
        expected.close()
    # The plugin has namespaces of its own (mnt, uts, ipc): "the host's" must still be the host's.
    host_types = {"net"} if "--net=host" in args else set()
    for t in ("mnt", "uts", "ipc", "pid", "net"):
        assert ns[t]["is_host"] is (t in host_types), t
    for t in ("cgroup", "time", "user"):  # the host's or not, depending on dockerd's setup
        assert ns[t]["is_host"] is (os.readlink(f"/proc/{pid}/ns/{t}") == host_ns(t)), t
    records = [json.loads(line) for line in managed.cli("tail", cid).splitlines()]
    assert [r["message"] for r in records] == ["up"]
    assert records[0]["container"]["id"] == cid


# ---------------------------------------------------------------------------------- sinks


def test_fluentd_sink_reaches_localhost(managed: ManagedPlugin, containers: Containers) -> None:
    """network: host, so a sink on the host's 127.0.0.1 is reachable from the plugin."""
    receiver = ThreadedReceiver()
    try:
        n = 200
        cid = containers.run(managed.name, f"seq 1 {n}", f"fluentd-address={receiver.address}",
                             "tag=managed.{{.ID}}", "identity=full")
        events = receiver.wait_for(n, f"managed.{cid[:12]}", timeout=60)
        assert [e.record["log"] for e in events] == [str(i) for i in range(1, n + 1)]
        first = events[0].record
        assert first["container_id"] == cid and first["source"] == "stdout"
        ns = json.loads(managed.cli("inspect", cid))["pylog"]["ns"]
        assert first["pylog"]["ns_key"] == {t: v["key"] for t, v in ns.items()}
        assert first["pylog"]["ns_inode"] == {t: v["inode"] for t, v in ns.items()}
        # The host's machine and boot, not the plugin image's (it has no /etc/machine-id).
        assert first["host"]["id"] == Path("/etc/machine-id").read_text().strip()
        assert first["host"]["boot"]["id"] == \
            Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        assert first["host"]["pid_ns_ino"] == os.stat("/proc/self/ns/pid").st_ino  # (this test's)
    finally:
        receiver.close()


# ---------------------------------------------------------------- state across restarts


def test_kill_9_of_the_plugin_loses_nothing(managed: ManagedPlugin, containers: Containers) -> None:
    """dockerd restarts a killed plugin but sends no StartLogging again: pylog re-attaches to the
    FIFO itself, and neither `docker logs` nor the sink loses a line."""
    receiver = ThreadedReceiver()
    try:
        script = ("seq 1 50000; while [ ! -e /tmp/go ]; do usleep 10000; done; "
                  "b=10; while [ $b -lt 40 ]; do seq $((b*5000+1)) $((b*5000+5000)); "
                  "usleep 100000; b=$((b+1)); done")
        cid = containers.start(managed.name, script, f"fluentd-address={receiver.address}",
                               "tag=kill.{{.ID}}")
        receiver.wait_for(20000, f"kill.{cid[:12]}", timeout=120)
        touch(cid, "/tmp/go")
        pids = managed.processes()
        assert len(pids) == 1, pids
        os.kill(pids[0], 9)
        deadline = time.monotonic() + 60
        while managed.processes() in ([], pids):
            assert time.monotonic() < deadline, "dockerd did not restart the plugin"
            time.sleep(0.1)  # polling for dockerd's restart of the plugin, bounded
        assert docker("inspect", "-f", "{{.State.Running}}", cid).stdout.strip() == "true"
        assert docker("wait", cid).stdout.strip() == "0"
        expected = [str(i) for i in range(1, 200001)]
        assert docker("logs", cid).stdout.splitlines() == expected
        deadline = time.monotonic() + 120
        while True:
            got = {e.record["log"] for e in receiver.wait_for(200000, f"kill.{cid[:12]}",
                                                              timeout=5)}
            if len(got) == 200000 or time.monotonic() > deadline:
                break
        assert got == set(expected), f"{200000 - len(got)} lines lost at the sink"
    finally:
        receiver.close()



def test_logs_survive_disable_and_enable(managed: ManagedPlugin, containers: Containers) -> None:
    """The store is on the propagated mount: a disabled plugin's logs are there when it is
    enabled again, and `docker plugin set` (only while disabled) reaches the process."""
    cid = containers.run(managed.name, SCRIPT + FINAL)
    before = logs(cid)
    assert before[0].endswith(b"no newline at end")
    old_pids = managed.processes()
    managed.disable()
    try:
        r = containers.create(managed.name, "true", check=False)
        assert r.returncode != 0 and "disabled" in r.stderr, r.stderr
        docker("plugin", "set", managed.name, "LOG_LEVEL=debug")
    finally:
        managed.enable()
    try:
        assert logs(cid) == before
        pids = managed.processes()
        assert pids and not set(pids) & set(old_pids), "the plugin was not restarted"
        environ = Path(f"/proc/{pids[0]}/environ").read_bytes().split(b"\0")
        assert b"LOG_LEVEL=debug" in environ
        # ... and it still takes new containers.
        cid2 = containers.run(managed.name, "echo after enable")
        assert logs(cid2) == (b"after enable\n", b"")
    finally:
        managed.disable()
        docker("plugin", "set", managed.name, "LOG_LEVEL=info")
        managed.enable()


@dataclass
class Registry:
    proc: subprocess.Popen[bytes]
    address: str


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    """Debian's docker-registry (the reference registry) on 127.0.0.1, storage in tmp_path:
    dockerd treats 127.0.0.0/8 registries as insecure (plain HTTP) by default."""
    binary = shutil.which("docker-registry")
    if binary is None:
        message = "docker-registry is not installed (scripts/setup-host.sh --for-tests installs it)"
        if os.environ.get("PYLOG_REQUIRE_DOCKER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    port = free_port()
    config = tmp_path / "registry.yml"
    config.write_text(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
                      f"    rootdirectory: {tmp_path / 'registry'}\n"
                      f"http:\n  addr: 127.0.0.1:{port}\n")
    with open(tmp_path / "registry.log", "wb") as log:
        proc = subprocess.Popen([binary, "serve", str(config)], stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp_path / "registry.log").read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "docker-registry did not answer in 30 s"
                time.sleep(0.05)  # polling for the registry to listen, bounded by the deadline
        yield Registry(proc, f"127.0.0.1:{port}")
    finally:
        proc.terminate()
        proc.wait(20)


def test_logs_survive_plugin_upgrade(managed: ManagedPlugin, containers: Containers,
                                     registry: Registry, tmp_path: Path) -> None:
    """docker plugin disable / upgrade / enable: the new rootfs replaces the old one, the
    propagated mount (the store) stays, and `docker logs` still has everything."""
    # "Version 2": the same build with a marker file and another description, pushed to the
    # local registry the way a release would be.
    v2 = tmp_path / "v2"
    shutil.copytree(managed.build_dir, v2, symlinks=True, copy_function=os.link)
    (v2 / "rootfs/etc/pylog-upgrade-marker").write_text("v2\n")
    config = json.loads((managed.build_dir / "config.json").read_text())
    config["description"] = "v2 " + config["description"]
    (v2 / "config.json").unlink()
    (v2 / "config.json").write_text(json.dumps(config))
    ref = f"{registry.address}/{managed.name}:v2"
    docker("plugin", "create", ref, str(v2))
    try:
        docker("plugin", "push", ref)
    finally:
        docker("plugin", "rm", "-f", ref, check=False)

    cid = containers.run(managed.name, SCRIPT + FINAL)
    before = logs(cid)
    plugin_id = managed.id
    managed.disable()
    try:
        docker("plugin", "upgrade", "--grant-all-permissions", "--skip-remote-check",
               managed.name, ref)
    finally:
        managed.enable()
    info = managed.inspect()
    assert info["Id"] == plugin_id  # same plugin, same propagated mount
    assert info["PluginReference"] == ref
    assert info["Config"]["Description"].startswith("v2 ")
    assert (PLUGINS_DIR / plugin_id / "rootfs/etc/pylog-upgrade-marker").exists()
    assert logs(cid) == before
    cid2 = containers.run(managed.name, "echo after upgrade")
    assert logs(cid2) == (b"after upgrade\n", b"")
    records = [json.loads(line) for line in managed.cli("tail", cid2).splitlines()]
    assert [r["message"] for r in records] == ["after upgrade"]
    assert re.fullmatch(r"[0-9a-f]{64}", records[0]["container"]["id"])
