"""Namespace identities: holding them, finding the container's init, who shares what.

Fake ``/proc`` trees are built in tmp_path: ``<pid>/ns/<type>`` are symlinks to real nsfs files
(this process's ``/proc/self/ns/<type>``, or those of a helper process started in new mount, UTS
and cgroup namespaces), so :func:`hold_namespaces` opens real namespaces through them.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from pylog import cgroup
from pylog import enrichment as enrichment_module
from pylog.namespaces import (
    NS_TYPES,
    FinderSchedule,
    HeldNamespaces,
    NamespaceIdentity,
    find_container_namespaces,
    hold_namespaces,
    host_namespaces,
    pick_init,
)
from tests.test_api import start_body

PRESENT = [t for t in NS_TYPES if os.path.exists(f"/proc/self/ns/{t}")]
CID = "c0ffee" + "0123456789abcdef" * 3 + "0123456789"
assert len(CID) == 64
SHIM = 4000  # containerd-shim: the init's parent, outside the cgroup

FAST = FinderSchedule(fast=0.001, fast_for=60, medium=0.001, medium_for=60, slow=0.001,
                      scan_after=60, scan_every=60)  # cgroup.procs only, no /proc scan
TIMEOUT = 5.0


def _kernel_at_least(major: int, minor: int) -> bool:
    m = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return m is not None and (int(m[1]), int(m[2])) >= (major, minor)


def ns_fds() -> set[int]:
    """This process's open fds that refer to a namespace."""
    out = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if re.fullmatch(r"(cgroup|ipc|mnt|net|pid|time|user|uts):\[\d+\]", target):
            out.add(int(name))
    return out


def assert_closed(fds: list[int]) -> None:
    for fd in fds:
        with pytest.raises(OSError) as e:
            os.fstat(fd)
        assert e.value.errno == errno.EBADF


@pytest.fixture(scope="module")
def other_ns():
    """A process in its own mount, UTS and cgroup namespaces: ``{type: nsfs path}``."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare(1) is not installed")
    flags = ["--mount", "--uts", "--cgroup"]
    if os.geteuid() != 0:
        flags = ["--user", "--map-root-user", *flags]
    p = subprocess.Popen([unshare, *flags, "sh", "-c", "echo ready; exec cat"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if p.stdout.readline() != b"ready\n":
        p.kill()
        err = p.communicate()[1]
        pytest.skip(f"cannot make new namespaces here: {err.decode().strip()}")
    try:
        yield {t: Path(f"/proc/{p.pid}/ns/{t}") for t in PRESENT}
    finally:
        p.stdin.close()
        p.wait(timeout=10)


def identity_of(path: Path | str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


# ------------------------------------------------------------------ fake /proc and cgroup

class FakeProc:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def add(self, pid: int, comm: str, ppid: int, ns: dict[str, Path] | None = None,
            cgroup_text: str | None = None, types=PRESENT) -> None:
        d = self.root / str(pid)
        (d / "ns").mkdir(parents=True)
        for t in types:
            (d / "ns" / t).symlink_to((ns or {}).get(t, f"/proc/self/ns/{t}"))
        self._write(pid, comm, ppid)
        if cgroup_text is not None:
            (d / "cgroup").write_text(cgroup_text)

    def _write(self, pid: int, comm: str, ppid: int) -> None:
        d = self.root / str(pid)
        (d / "comm").write_text(comm + "\n")
        (d / "stat").write_text(f"{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 4194560 145 0 0 0 "
                                f"0 0 0 0 20 0 1 0 5000 4616192 262 18446744073709551615\n")

    def exec(self, pid: int, comm: str) -> None:
        """The process execs a new program: comm changes, parent does not."""
        ppid = int((self.root / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
        self._write(pid, comm, ppid)

    def relink(self, pid: int, ns_type: str, target: Path) -> None:
        link = self.root / str(pid) / "ns" / ns_type
        tmp = link.with_name(ns_type + ".new")
        tmp.symlink_to(target)
        os.replace(tmp, link)

    def remove(self, pid: int) -> None:
        shutil.rmtree(self.root / str(pid))


class FakeCgroup:
    """A cgroup tree for one of Docker's layouts."""

    def __init__(self, root: Path, version: str, driver: str) -> None:
        self.root = root
        leaf = f"docker/{CID}" if driver == "cgroupfs" else f"system.slice/docker-{CID}.scope"
        if version == "v2":
            root.mkdir(parents=True)
            (root / "cgroup.controllers").write_text("cpu io memory pids\n")
            self.dirs = [root / leaf]
        else:
            for h in ("pids", "memory", "systemd", "cpu", "devices"):
                (root / h).mkdir(parents=True)
            self.dirs = [root / h / leaf for h in ("pids", "memory", "systemd")]

    def put(self, *pids: int) -> None:
        for d in self.dirs:
            d.mkdir(parents=True, exist_ok=True)
            tmp = d / "cgroup.procs.new"
            tmp.write_text("".join(f"{p}\n" for p in pids))
            os.replace(tmp, d / "cgroup.procs")


class Polls:
    """Counts the finder's looks (each starts with reading cgroup.procs), so a test can wait
    for "N more looks" instead of sleeping."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reads = 0
        self.scans = 0
        self._waiters: list[tuple[Callable[[], bool], asyncio.Event]] = []
        real_read, real_scan = cgroup.read_procs, cgroup.scan_proc

        def read_procs(files):
            self.reads += 1
            for pred, ev in self._waiters:
                if pred():
                    ev.set()
            return real_read(files)

        def scan_proc(container_id, proc=Path("/proc")):
            result = real_scan(container_id, proc)
            self.scans += 1  # set in a worker thread, read by read_procs in the loop's
            return result

        monkeypatch.setattr(cgroup, "read_procs", read_procs)
        monkeypatch.setattr(cgroup, "scan_proc", scan_proc)

    async def until(self, pred: Callable[[], bool], finder: asyncio.Task | None = None) -> None:
        """Wait until ``pred()`` holds at the start of a look (or ``finder`` has ended)."""
        waiter = (pred, asyncio.Event())
        self._waiters.append(waiter)
        wait = asyncio.ensure_future(waiter[1].wait())
        try:
            done, _ = await asyncio.wait({wait} | ({finder} if finder else set()),
                                         timeout=TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
            assert done, "the finder stopped looking"
        finally:
            wait.cancel()
            self._waiters.remove(waiter)

    async def more(self, n: int, finder: asyncio.Task | None = None) -> None:
        target = self.reads + n
        await self.until(lambda: self.reads >= target, finder)


@pytest.fixture
def polls(monkeypatch):
    return Polls(monkeypatch)


@pytest.fixture
def proc(tmp_path):
    return FakeProc(tmp_path / "proc")


def cancel_and_wait(task: asyncio.Task):
    task.cancel()
    return asyncio.wait_for(asyncio.gather(task, return_exceptions=True), TIMEOUT)


# ------------------------------------------------------------------ NamespaceIdentity.key

def test_key_uses_the_never_reused_id_when_there_is_one():
    a = NamespaceIdentity("net", inode=4026532184, dev=4, id=8589934601)
    recycled = NamespaceIdentity("net", inode=4026532184, dev=4, id=8589934777)
    assert a.key != recycled.key  # same recycled inode, different namespace
    assert a.key == NamespaceIdentity("net", inode=1, dev=9, id=8589934601).key
    assert a.key[0] == "net" and a.key[2] == 8589934601


def test_key_falls_back_to_device_and_inode_without_an_id():
    a = NamespaceIdentity("pid", inode=4026532185, dev=4, id=None)
    assert a.key == ("pid", 4, 4026532185)
    assert a.key == NamespaceIdentity("pid", 4026532185, 4, None).key
    assert a.key != NamespaceIdentity("pid", 4026532185, 5, None).key
    assert a.key != NamespaceIdentity("pid", 4026532186, 4, None).key
    assert a.key != NamespaceIdentity("net", 4026532185, 4, None).key


# ------------------------------------------------------------------ hold_namespaces

def test_hold_own_namespaces():
    held = hold_namespaces(os.getpid())
    try:
        assert held.pid == os.getpid()
        assert sorted(held.identities) == sorted(PRESENT)
        assert len(held.fds) == len(PRESENT)
        for t, ident in held.identities.items():
            st = os.stat(f"/proc/self/ns/{t}")
            assert ident.type == t
            assert (ident.dev, ident.inode) == (st.st_dev, st.st_ino)
            assert os.readlink(f"/proc/self/ns/{t}") == f"{t}:[{ident.inode}]"
            if _kernel_at_least(6, 18):
                assert isinstance(ident.id, int) and ident.id > 0
        # each fd is open on the namespace it identifies
        targets = sorted(os.readlink(f"/proc/self/fd/{fd}") for fd in held.fds)
        assert targets == sorted(f"{t}:[{i.inode}]" for t, i in held.identities.items())
        again = hold_namespaces(os.getpid())
        assert {t: i.key for t, i in again.identities.items()} == \
            {t: i.key for t, i in held.identities.items()}
        again.close()
    finally:
        fds = list(held.fds)
        held.close()
    assert_closed(fds)
    assert held.fds == []
    held.close()  # twice is harmless


def test_ids_differ_where_namespaces_differ(other_ns):
    mine = hold_namespaces(os.getpid())
    pid = int(other_ns["mnt"].parent.parent.name)
    theirs = hold_namespaces(pid)
    try:
        for t in ("mnt", "uts", "cgroup"):
            assert mine.identities[t].key != theirs.identities[t].key
            assert theirs.identities[t].inode == os.stat(other_ns[t]).st_ino
        if os.geteuid() == 0:  # with --user the user namespace differs too
            assert mine.identities["net"].key == theirs.identities["net"].key
    finally:
        mine.close()
        theirs.close()


def test_hold_through_a_fake_proc(proc):
    proc.add(4242, "sh", SHIM)
    held = hold_namespaces(4242, proc.root)
    try:
        assert held.pid == 4242
        assert sorted(held.identities) == sorted(PRESENT)
        for t, ident in held.identities.items():
            assert ident.inode == os.stat(f"/proc/self/ns/{t}").st_ino
    finally:
        held.close()


def _kernel_without(proc, missing: str) -> None:
    """Make the fake /proc's own process (``self``) show the kernel's types but ``missing``."""
    own = proc.root / "self" / "ns"
    own.mkdir(parents=True)
    for t in PRESENT:
        if t != missing:
            (own / t).symlink_to(f"/proc/self/ns/{t}")


def test_a_namespace_type_the_kernel_lacks_is_left_out(proc):
    _kernel_without(proc, "time")
    proc.add(4242, "sh", SHIM, types=[t for t in PRESENT if t != "time"])
    held = hold_namespaces(4242, proc.root)
    held.close()
    assert "time" not in held.identities
    assert sorted(held.identities) == sorted(t for t in PRESENT if t != "time")


def test_an_exiting_process_missing_a_type_the_kernel_has_is_no_view(proc):
    """A process whose ns links vanish while it exits must not give an incomplete view."""
    proc.add(4242, "sh", SHIM, types=[t for t in PRESENT if t != "uts"])
    before = ns_fds()
    with pytest.raises(FileNotFoundError):
        hold_namespaces(4242, proc.root)
    assert ns_fds() == before


def test_gone_process_raises_and_leaks_nothing(proc):
    before = ns_fds()
    with pytest.raises(FileNotFoundError):
        hold_namespaces(99999, proc.root)
    assert ns_fds() == before


def test_failure_part_way_closes_what_was_opened(proc):
    proc.add(4242, "sh", SHIM)
    loop = proc.root / "4242" / "ns" / "uts"  # the last type: all others are open by then
    loop.unlink()
    loop.symlink_to(loop)  # ELOOP: not "no such type", a real error
    before = ns_fds()
    with pytest.raises(OSError) as e:
        hold_namespaces(4242, proc.root)
    assert e.value.errno == errno.ELOOP
    assert ns_fds() == before


# ------------------------------------------------------------------ host_namespaces

def test_host_namespaces_are_pid_1s(proc):
    proc.add(1, "systemd", 0)
    host = host_namespaces(proc.root)
    mine = hold_namespaces(os.getpid())
    mine.close()
    assert {t: i.key for t, i in host.items()} == {t: i.key for t, i in mine.identities.items()}


def test_host_namespaces_not_readable_gives_empty(proc):
    proc.add(50, "bash", 1)  # neither PID 1 nor dockerd
    before = ns_fds()
    assert host_namespaces(proc.root) == {}
    assert ns_fds() == before


# ------------------------------------------------------------------ pick_init

def test_pick_init_skips_runc_setup_stages(proc):
    proc.add(10, "runc", SHIM)
    proc.add(11, "runc:[0:PARENT]", 10)
    proc.add(12, "runc:[1:CHILD]", 11)
    proc.add(13, "sh", SHIM)
    assert pick_init([10, 11, 12, 13], proc.root) == 13
    assert pick_init([10, 11, 12], proc.root) is None


def test_pick_init_keeps_runc_init(proc):
    # runc:[2:INIT] is in the container's final namespaces, waiting for `start`.
    proc.add(12, "runc:[1:CHILD]", SHIM)
    proc.add(13, "runc:[2:INIT]", SHIM)
    assert pick_init([12, 13], proc.root) == 13


def test_pick_init_prefers_the_process_whose_parent_is_outside(proc):
    proc.add(20, "sleep", 21)      # child of the init, listed first
    proc.add(22, "sh", 21)
    proc.add(21, "tini", SHIM)     # the init: parent is the shim
    assert pick_init([20, 22, 21], proc.root) == 21


def test_pick_init_falls_back_to_the_first_candidate(proc):
    # The init has exited; its children were reparented inside the cgroup (a subreaper).
    proc.add(30, "worker", 31)
    proc.add(31, "worker", 30)
    assert pick_init([30, 31], proc.root) == 30


def test_pick_init_reads_the_parent_after_an_awkward_comm(proc):
    # comm may contain ") " and digits: "40 (a) S 41 (b) S 4000 ..." has its parent at the end
    proc.add(40, "a) S 41 (b", SHIM)
    proc.add(41, "sh", 40)
    assert pick_init([41, 40], proc.root) == 40


# ------------------------------------------------------------------ find_container_namespaces

@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("driver", ["cgroupfs", "systemd"])
async def test_finds_the_init_once_it_appears(tmp_path, proc, polls, version, driver):
    cg = FakeCgroup(tmp_path / "cgroup", version, driver)
    before = ns_fds()
    task = asyncio.create_task(find_container_namespaces(CID, {}, proc.root, cg.root, FAST))
    await polls.more(5)
    assert not task.done()  # nothing to find yet: keeps looking

    proc.add(4241, "runc:[1:CHILD]", SHIM)
    proc.add(4242, "sh", SHIM)
    proc.add(4243, "sleep", 4242)
    cg.put(4241, 4243, 4242)
    held = await asyncio.wait_for(task, TIMEOUT)
    try:
        assert held.pid == 4242
        assert sorted(held.identities) == sorted(PRESENT)
        for t, ident in held.identities.items():
            assert ident.inode == os.stat(f"/proc/self/ns/{t}").st_ino
        assert ns_fds() - before == set(held.fds)  # the result's fds, nothing else
    finally:
        held.close()
    assert ns_fds() == before


async def test_a_process_in_the_host_mount_namespace_is_not_accepted(tmp_path, proc, polls,
                                                                     other_ns):
    cg = FakeCgroup(tmp_path / "cgroup", "v2", "cgroupfs")
    mine = hold_namespaces(os.getpid())
    mine.close()
    host = dict(mine.identities)
    proc.add(4242, "sh", SHIM)  # every namespace the host's: a runtime helper, not the container
    cg.put(4242)
    before = ns_fds()
    task = asyncio.create_task(find_container_namespaces(CID, host, proc.root, cg.root, FAST))
    await polls.more(10)
    assert not task.done()
    assert ns_fds() == before  # what it looked at and refused, it let go of

    proc.relink(4242, "mnt", other_ns["mnt"])  # it entered the container's mount namespace
    held = await asyncio.wait_for(task, TIMEOUT)
    try:
        assert held.pid == 4242
        assert (held.identities["mnt"].dev, held.identities["mnt"].inode) == \
            identity_of(other_ns["mnt"])
        assert held.identities["mnt"].key != host["mnt"].key
        assert held.identities["net"].key == host["net"].key  # e.g. --net=host
    finally:
        held.close()


async def test_runc_init_is_watched_until_it_execs(tmp_path, proc, polls, other_ns):
    cg = FakeCgroup(tmp_path / "cgroup", "v2", "systemd")
    proc.add(4242, "runc:[2:INIT]", SHIM)
    cg.put(4242)
    task = asyncio.create_task(find_container_namespaces(CID, {}, proc.root, cg.root, FAST))
    await polls.more(10)
    assert not task.done()  # waiting for `start`: not final yet

    # runc's init enters its own cgroup namespace, then execs the container's program.
    proc.relink(4242, "cgroup", other_ns["cgroup"])
    await polls.more(3)
    assert not task.done()
    proc.exec(4242, "nginx")
    held = await asyncio.wait_for(task, TIMEOUT)
    try:
        assert held.pid == 4242
        assert (held.identities["cgroup"].dev, held.identities["cgroup"].inode) == \
            identity_of(other_ns["cgroup"])
    finally:
        held.close()


async def test_runc_init_view_is_handed_out_early_and_again_when_it_changes(
        tmp_path, proc, polls, other_ns):
    cg = FakeCgroup(tmp_path / "cgroup", "v1", "cgroupfs")
    proc.add(4242, "runc:[2:INIT]", SHIM)
    cg.put(4242)
    updates: list[HeldNamespaces] = []
    got = asyncio.Event()

    def on_update(held: HeldNamespaces) -> None:
        updates.append(held)
        got.set()

    before = ns_fds()
    task = asyncio.create_task(find_container_namespaces(CID, {}, proc.root, cg.root, FAST,
                                                         on_update=on_update))
    await asyncio.wait_for(got.wait(), TIMEOUT)  # the first lines need not wait for `start`
    await polls.more(5)
    assert not task.done()
    assert len(updates) == 1  # an unchanged view is handed out once
    first = updates[0]
    assert first.pid == 4242
    assert first.identities["cgroup"].inode == os.stat("/proc/self/ns/cgroup").st_ino

    got.clear()
    proc.relink(4242, "cgroup", other_ns["cgroup"])
    await asyncio.wait_for(got.wait(), TIMEOUT)
    assert len(updates) == 2
    assert updates[1].identities["cgroup"].inode == os.stat(other_ns["cgroup"]).st_ino

    proc.exec(4242, "nginx")
    result = await asyncio.wait_for(task, TIMEOUT)
    assert len(updates) == 2  # nothing new at exec
    assert result is updates[-1]
    # The finder kept nothing: every open namespace fd is in a view handed out.
    assert ns_fds() - before == set(first.fds) | set(updates[1].fds)
    for h in updates:
        h.close()
    assert ns_fds() == before


async def test_init_that_exits_between_looks_gives_the_last_view(tmp_path, proc, polls):
    cg = FakeCgroup(tmp_path / "cgroup", "v2", "cgroupfs")
    proc.add(4242, "runc:[2:INIT]", SHIM)
    cg.put(4242)
    task = asyncio.create_task(find_container_namespaces(CID, {}, proc.root, cg.root, FAST))
    await polls.more(5)
    assert not task.done()
    # `docker run --rm busybox echo hi`: started, printed, exited before the next look.
    cg.put()
    proc.remove(4242)
    held = await asyncio.wait_for(task, TIMEOUT)
    try:
        assert held.pid == 4242
        assert held.identities["mnt"].inode == os.stat("/proc/self/ns/mnt").st_ino
    finally:
        held.close()


async def test_cancel_closes_every_fd_it_held(tmp_path, proc, polls):
    cg = FakeCgroup(tmp_path / "cgroup", "v2", "cgroupfs")
    proc.add(4242, "runc:[2:INIT]", SHIM)  # held while waiting for `start`
    cg.put(4242)
    before = ns_fds()
    task = asyncio.create_task(find_container_namespaces(CID, {}, proc.root, cg.root, FAST))
    await polls.more(5)
    assert ns_fds() - before  # it is holding a view
    await cancel_and_wait(task)
    assert task.cancelled()
    assert ns_fds() == before


async def test_cancel_leaves_views_already_handed_out_to_their_owner(tmp_path, proc, polls):
    cg = FakeCgroup(tmp_path / "cgroup", "v2", "cgroupfs")
    proc.add(4242, "runc:[2:INIT]", SHIM)
    cg.put(4242)
    updates: list[HeldNamespaces] = []
    before = ns_fds()
    task = asyncio.create_task(find_container_namespaces(CID, {}, proc.root, cg.root, FAST,
                                                         on_update=updates.append))
    await polls.until(lambda: bool(updates))
    await polls.more(3)
    await cancel_and_wait(task)
    assert task.cancelled()
    assert len(updates) == 1
    assert ns_fds() - before == set(updates[0].fds)  # the owner's, and nothing else
    updates[0].close()
    assert ns_fds() == before


async def test_cancel_during_a_proc_scan_closes_what_it_held(tmp_path, proc, monkeypatch):
    # A custom --cgroup-parent: the container is only found by scanning /proc.
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text("pids\n")
    proc.add(4242, "runc:[2:INIT]", SHIM, cgroup_text=f"0::/my-parent/{CID}\n")
    real_scan = cgroup.scan_proc
    loop = asyncio.get_running_loop()
    in_second_scan = asyncio.Event()
    release = threading.Event()
    calls = 0

    def scan_proc(container_id, proc_root=Path("/proc")):
        nonlocal calls
        calls += 1
        if calls >= 2:
            loop.call_soon_threadsafe(in_second_scan.set)
            release.wait(TIMEOUT)
        return real_scan(container_id, proc_root)

    monkeypatch.setattr(cgroup, "scan_proc", scan_proc)
    schedule = FinderSchedule(fast=0.001, fast_for=60, scan_after=0, scan_every=0)
    before = ns_fds()
    task = asyncio.create_task(find_container_namespaces(CID, {}, proc.root, root, schedule))
    try:
        await asyncio.wait_for(in_second_scan.wait(), TIMEOUT)
        assert ns_fds() - before  # holding the view of the first scan
        await cancel_and_wait(task)
    finally:
        release.set()
    assert task.cancelled()
    assert ns_fds() == before


async def test_runc_init_found_by_scanning_proc_is_watched_until_it_execs(tmp_path, proc, polls,
                                                                          other_ns):
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text("pids\n")
    proc.add(4242, "runc:[2:INIT]", SHIM, cgroup_text=f"0::/my-parent/{CID}\n")
    schedule = FinderSchedule(fast=0.001, fast_for=60, medium=0.001, medium_for=60,
                              slow=0.001, scan_after=0, scan_every=0.05)
    task = asyncio.create_task(find_container_namespaces(CID, {}, proc.root, root, schedule))
    try:
        await polls.until(lambda: polls.scans >= 1, task)
        await polls.more(5, task)
        assert not task.done()  # still runc's init: its view is not final
        proc.relink(4242, "cgroup", other_ns["cgroup"])
        proc.exec(4242, "nginx")
        held = await asyncio.wait_for(task, TIMEOUT)
        held.close()
        assert held.pid == 4242
        assert held.identities["cgroup"].inode == os.stat(other_ns["cgroup"]).st_ino
    finally:
        if task.done() and not task.cancelled() and task.exception() is None:
            task.result().close()
        await cancel_and_wait(task)


async def test_scanning_proc_finds_a_custom_cgroup_parent(tmp_path, proc, polls):
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text("pids\n")
    proc.add(1, "systemd", 0, cgroup_text="0::/init.scope\n")
    proc.add(4242, "sh", SHIM, cgroup_text=f"0::/my-parent/{CID}\n")
    schedule = FinderSchedule(fast=0.001, fast_for=60, scan_after=0.01, scan_every=0.01)
    held = await asyncio.wait_for(
        find_container_namespaces(CID, {}, proc.root, root, schedule), TIMEOUT)
    held.close()
    assert held.pid == 4242
    assert polls.scans >= 1


def _custom_parent_root(tmp_path: Path) -> Path:
    """A cgroup v2 root where Docker's layouts have nothing: only a /proc scan can find it."""
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text("pids\n")
    return root


GIVE_UP = FinderSchedule(fast=0.001, fast_for=60, scan_after=0, scan_every=0.05,
                         give_up_after=0.5)


async def test_never_found_it_gives_up_after_a_bounded_number_of_scans(tmp_path, proc, polls,
                                                                      caplog):
    root = _custom_parent_root(tmp_path)
    proc.add(1, "systemd", 0, cgroup_text="0::/init.scope\n")  # nothing of the container
    caplog.set_level("INFO", logger="pylog.namespaces")
    result = await asyncio.wait_for(
        find_container_namespaces(CID, {}, proc.root, root, GIVE_UP), TIMEOUT)
    assert result is None
    # One scan at most every scan_every until give_up_after: 10, and the one at the start.
    assert 1 <= polls.scans <= 11
    given_up = [r for r in caplog.records if "were not found" in r.getMessage()]
    assert len(given_up) == 1 and given_up[0].levelname == "INFO"
    assert CID[:12] in given_up[0].getMessage()


async def test_a_runc_init_that_never_starts_is_watched_until_give_up(tmp_path, proc, polls):
    cg = FakeCgroup(tmp_path / "cgroup", "v2", "cgroupfs")
    proc.add(4242, "runc:[2:INIT]", SHIM)  # `start` never comes
    cg.put(4242)
    updates: list[HeldNamespaces] = []
    before = ns_fds()
    held = await asyncio.wait_for(
        find_container_namespaces(CID, {}, proc.root, cg.root, GIVE_UP, on_update=updates.append),
        TIMEOUT)
    assert held is not None and updates == [held]  # the init's view stands
    assert held.pid == 4242
    assert polls.scans == 0  # found in its cgroup: no /proc scan
    assert ns_fds() - before == set(held.fds)
    held.close()


async def test_found_by_a_scan_it_returns_without_scanning_again(tmp_path, proc, polls):
    root = _custom_parent_root(tmp_path)
    proc.add(4242, "sh", SHIM, cgroup_text=f"0::/my-parent/{CID}\n")
    schedule = FinderSchedule(fast=0.001, fast_for=60, scan_after=0, scan_every=0.001,
                              give_up_after=60)
    held = await asyncio.wait_for(
        find_container_namespaces(CID, {}, proc.root, root, schedule), TIMEOUT)
    assert held is not None
    held.close()
    assert held.pid == 4242
    assert polls.scans == 1


async def test_driver_counts_a_container_given_up_on_once(env, tmp_path, proc, polls,
                                                          monkeypatch, caplog):
    client, driver, fifo_dir = env
    root = _custom_parent_root(tmp_path)
    driver.enrichment.proc = proc.root
    monkeypatch.setattr(enrichment_module, "find_container_namespaces",
                        functools.partial(find_container_namespaces, root=root,
                                          schedule=GIVE_UP))
    caplog.set_level("INFO")
    body = start_body("/longline")
    fifo = fifo_dir / "given-up"
    os.mkfifo(fifo)
    wfd = os.open(fifo, os.O_RDWR)
    body["File"] = str(fifo)
    try:
        r = await client.post("/LogDriver.StartLogging", data=json.dumps(body))
        assert (await r.json()) == {"Err": ""}
        container = driver.containers[body["Info"]["ContainerID"]]
        assert container.finder is not None
        await asyncio.wait_for(asyncio.shield(container.finder), TIMEOUT)
        assert driver.enrichment.lookups_failed == 1
        r = await client.post("/LogDriver.StopLogging", data=json.dumps({"File": str(fifo)}))
        assert (await r.json()) == {"Err": ""}
    finally:
        os.close(wfd)
    assert driver.enrichment.lookups_failed == 1  # not once more at StopLogging
    assert polls.scans >= 1
    given_up = [r for r in caplog.records if "were not found" in r.getMessage()]
    assert len(given_up) == 1


async def test_awaited_inside_an_except_block_the_result_is_still_open(tmp_path, proc):
    cg = FakeCgroup(tmp_path / "cgroup", "v2", "cgroupfs")
    proc.add(4242, "sh", SHIM)
    cg.put(4242)

    async def caller() -> HeldNamespaces:
        try:
            raise KeyError("a caller retrying after some error")
        except KeyError:
            return await find_container_namespaces(CID, {}, proc.root, cg.root, FAST)

    held = await asyncio.wait_for(caller(), TIMEOUT)
    try:
        assert held.pid == 4242
        assert len(held.fds) == len(held.identities) == len(PRESENT)
        for fd in held.fds:
            os.fstat(fd)  # the caller's to close: must still be open
    finally:
        held.close()
