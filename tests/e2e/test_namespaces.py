"""Namespace enrichment against the real dockerd: identities, host modes, sharing, selection."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from pylog.namespaces import NS_TYPES, hold_namespaces
from pylog.nsregistry import KEY_CHARS
from pylog.store import WALKED

from .conftest import Containers, PylogServer, cli, new_server, wait

pytestmark = pytest.mark.e2e

HOST_MODE_TYPES = ("ipc", "net", "pid", "uts")


def inspect(server: PylogServer, ref: str) -> dict[str, Any]:
    return dict(json.loads(cli(server, "inspect", ref)))


def records(server: PylogServer, ref: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in cli(server, "tail", ref).splitlines()]


def wait_for_namespaces(server: PylogServer, ref: str) -> dict[str, Any]:
    """Poll `pylog inspect` until the container's namespaces are known (bounded)."""
    deadline = time.monotonic() + 30
    while True:
        ctx = inspect(server, ref)
        if "ns" in ctx.get("pylog", {}):
            return ctx
        assert time.monotonic() < deadline, f"no namespaces for {ref} after 30 s: {ctx}"
        time.sleep(0.02)


def state_pid(cid: str) -> int:
    return int(subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}}", cid],
                              capture_output=True, text=True, check=True).stdout)


def test_identities_are_the_containers_own(pylog: PylogServer, containers: Containers) -> None:
    cid = containers.start(pylog.name, "echo up; exec sleep 1000")
    ctx = wait_for_namespaces(pylog, cid)
    pid = state_pid(cid)
    assert ctx["process"]["pid"] == pid
    expected = hold_namespaces(pid)
    try:
        ns = ctx["pylog"]["ns"]
        assert set(ns) == set(expected.identities) == set(NS_TYPES)
        for t, ident in expected.identities.items():
            assert ns[t]["inode"] == os.stat(f"/proc/{pid}/ns/{t}").st_ino == ident.inode, t
            assert ns[t].get("id") == ident.id, t  # absent where the kernel has no NS_GET_ID
            assert len(ns[t]["key"]) == KEY_CHARS, t
        for t in ("mnt", "uts", "ipc", "pid", "net"):
            assert ns[t]["is_host"] is False, t
    finally:
        expected.close()
    assert ctx["container"]["id"] == cid and ctx["tag"] == cid[:12]


@pytest.mark.parametrize("modes", [("net",), ("pid",), ("uts",), ("ipc",),
                                   ("pid", "net", "uts", "ipc")])
def test_host_modes_show_is_host_for_exactly_those_types(
        pylog: PylogServer, containers: Containers, modes: tuple[str, ...]) -> None:
    flags = tuple(f"--{m}=host" for m in modes)
    cid = containers.start(pylog.name, "echo up; exec sleep 1000", args=flags)
    ns = wait_for_namespaces(pylog, cid)["pylog"]["ns"]
    for t in HOST_MODE_TYPES + ("mnt",):
        assert ns[t]["is_host"] is (t in modes), (t, modes)


def test_shared_network_namespace_names_both(pylog: PylogServer, containers: Containers) -> None:
    web = containers.start(pylog.name, "echo web; exec sleep 1000")
    web_name = inspect(pylog, web)["container"]["name"]
    side = containers.start(pylog.name, "echo side; exec sleep 1000",
                            args=(f"--net=container:{web}",))
    side_name = inspect(pylog, side)["container"]["name"]
    wait_for_namespaces(pylog, web)
    deadline = time.monotonic() + 30
    while True:
        web_ns = inspect(pylog, web)["pylog"].get("ns", {})
        side_ns = inspect(pylog, side)["pylog"].get("ns", {})
        if web_ns.get("net", {}).get("shared_with") and side_ns:
            break
        assert time.monotonic() < deadline, "sharing never showed"
        time.sleep(0.02)
    assert side_ns["net"]["key"] == web_ns["net"]["key"]
    assert side_ns["net"]["inode"] == web_ns["net"]["inode"]
    for t in ("mnt", "pid", "uts", "ipc"):
        assert side_ns[t]["key"] != web_ns[t]["key"], t
    assert web_ns["net"]["shared_with"] == [side_name]
    assert side_ns["net"]["shared_with"] == [web_name]
    for t in ("mnt", "pid", "uts", "ipc"):
        assert web_name not in side_ns[t].get("shared_with", []), t
    # The records themselves say it, and `pylog ps` shows it at a glance.
    side_record = records(pylog, side)[-1]
    assert side_record["message"] == "side"
    assert side_record["pylog"]["ns_shared"]["net"] == [web_name]
    assert side_record["pylog"]["ns_key"] == {t: v["key"] for t, v in side_ns.items()}
    ps = cli(pylog, "ps")
    assert any(line.strip().startswith("net ") and web_name in line and side_name in line
               for line in ps.splitlines()), ps
    # When one goes, the other stops naming it.
    subprocess.run(["docker", "rm", "-f", side], check=True, capture_output=True)
    containers.ids.remove(side)
    deadline = time.monotonic() + 30
    while inspect(pylog, web)["pylog"]["ns"]["net"].get("shared_with"):
        assert time.monotonic() < deadline, "a removed container is still named as sharing"
        time.sleep(0.02)


def test_short_lived_rm_containers_get_their_namespaces_20_of_20(
        docker_ready: None, busybox: str, tmp_path: Path) -> None:
    server = new_server(tmp_path, ["--gc-interval", "0"])  # keep the logs of removed containers
    server.start()
    try:
        ids = []
        for i in range(20):
            cidfile = tmp_path / f"cid{i}"
            r = subprocess.run(["docker", "run", "--rm", "--cidfile", str(cidfile),
                                "--log-driver", server.name, busybox, "echo", "hi"],
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 0 and r.stdout == "hi\n", r.stderr
            ids.append(cidfile.read_text().strip())
        found = 0
        for cid in ids:
            recs = records(server, cid)
            assert [r["message"] for r in recs] == ["hi"]
            fields = recs[0]["pylog"]
            if "ns_key" in fields and not {"mnt", "pid"} & set(fields["host_ns"]):
                found += 1
        assert found == 20, f"namespaces found for {found} of 20 short-lived containers"
    finally:
        server.stop()


def test_recycled_inodes_still_get_different_keys(pylog: PylogServer,
                                                  containers: Containers) -> None:
    """Without NS_GET_ID (kernels before 6.18) only the key tells these namespaces apart."""
    seen: dict[str, tuple[int, str]] = {}
    recycled = False
    for _ in range(5):
        cid = containers.run(pylog.name, "echo once", "identity=full")
        pylog_fields = records(pylog, cid)[-1]["pylog"]
        for t in ("ipc", "mnt", "net", "pid", "uts"):
            inode, key = pylog_fields["ns_inode"][t], pylog_fields["ns_key"][t]
            if t in seen:
                assert key != seen[t][1], f"{t}: two containers got the same namespace key"
                recycled |= inode == seen[t][0]
            seen[t] = (inode, key)
        subprocess.run(["docker", "rm", cid], check=True, capture_output=True)
        containers.ids.remove(cid)
    if not recycled:
        pytest.skip("the kernel never reused an inode in 5 runs; keys were distinct anyway")


def test_keys_survive_a_restart_of_pylog(docker_ready: None, containers: Containers,
                                         tmp_path: Path) -> None:
    """A running container's namespaces are the same after pylog restarts: so are their keys
    (with NS_GET_ID or not), and the container sharing one is grouped with it again."""
    server = new_server(tmp_path)
    server.start()
    try:
        web = containers.start(server.name, "echo web; exec sleep 1000")
        side = containers.start(server.name, "echo side; exec sleep 1000",
                                args=(f"--net=container:{web}",))
        before = {c: wait_for_namespaces(server, c)["pylog"]["ns"] for c in (web, side)}
        server.stop()
        server.start()
        after = {c: wait_for_namespaces(server, c)["pylog"]["ns"] for c in (web, side)}
        for c in (web, side):
            assert {t: v["key"] for t, v in after[c].items()} == \
                {t: v["key"] for t, v in before[c].items()}, c
        assert after[side]["net"]["key"] == after[web]["net"]["key"]
    finally:
        containers.cleanup()
        containers.ids.clear()
        server.stop()


def test_only_selected_labels_and_env_leave_pylog(pylog: PylogServer, containers: Containers,
                                                   tmp_path: Path) -> None:
    secret = "s3cr3t-value-that-must-not-leak"
    cid = containers.run(
        pylog.name, "echo hello", "labels=app", "labels-regex=^com\\.example\\.", "env=MODE",
        "env-regex=^OPT_", "tag={{.Name}}/{{.ImageName}}",
        args=("-e", f"SECRET={secret}", "-e", "MODE=prod", "-e", "OPT_A=1",
              "--label", "app=demo", "--label", "team=core", "--label", "com.example.tier=web"))
    rec = records(pylog, cid)[-1]
    assert rec["message"] == "hello" and rec["stream"] == "stdout"
    assert rec["pylog"]["env"] == {"MODE": "prod", "OPT_A": "1"}
    assert rec["container"]["labels"] == {"app": "demo", "com_example_tier": "web"}
    assert rec["tag"] == f"{rec['container']['name']}/pylog-busybox:test"
    assert rec["@timestamp"].endswith("Z") and len(rec["@timestamp"].split(".")[1]) == 10
    everything = [cli(pylog, "tail", cid), cli(pylog, "inspect", cid), cli(pylog, "ps", "--json"),
                  pylog.log_text()]
    for path in pylog.container_dir(cid).iterdir():
        try:
            everything.append(path.read_bytes().decode(errors="replace"))
        except FileNotFoundError:  # walked.json goes when the log is opened again (no text)
            assert path.name in (WALKED, WALKED + ".tmp")
    for text in everything:
        assert secret not in text and "team" not in text.replace("teams", "")


def test_namespaces_false_switches_the_lookup_off(pylog: PylogServer,
                                                  containers: Containers) -> None:
    cid = containers.run(pylog.name, "echo plain", "namespaces=false")
    rec = records(pylog, cid)[-1]
    assert rec["message"] == "plain" and "ns_key" not in rec.get("pylog", {})
    assert "process" not in rec


def test_pid_and_identity_survive_restart_of_the_container(pylog: PylogServer,
                                                           containers: Containers) -> None:
    cid = containers.run(pylog.name, "echo run")
    first = records(pylog, cid)[-1]["pylog"]["ns_key"]["net"]
    subprocess.run(["docker", "start", cid], check=True, capture_output=True)
    wait(cid)
    second = records(pylog, cid)[-1]["pylog"]["ns_key"]["net"]
    assert first != second, "a restarted container got the old namespace identity"
