"""A container's namespace identities: found off the hot path, once, and held for its lifetime.

For each type the identity is the nsfs inode (``st_ino``) and, on Linux 6.x, the 64-bit
``NS_GET_ID`` id, which unlike the inode is never reused. pylog keeps an open fd on each of a
container's namespaces while the container is attached: that keeps the namespace (and so its
inode) alive, so a recycled inode can never be attributed to the wrong container.

The process is found through the container's cgroup (see :mod:`pylog.cgroup`), polled from the
moment StartLogging returns: runc puts the container's init in its cgroup at ``create`` and it
waits there until ``start``, so even ``docker run --rm busybox echo hi`` is caught.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import logging
import os
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from . import cgroup
from .fds import close_all

log = logging.getLogger(__name__)

NS_TYPES = ("cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts")
NS_GET_ID = 0x8008B70D  # _IOR(0xb7, 0xd, __u64), Linux 6.x
PROC = Path("/proc")
# runc's set-up stages, still in the host's (or half-made) namespaces: never the container's.
_RUNC_SETUP_COMMS = ("runc", "runc:[0:PARENT]", "runc:[1:CHILD]")
_RUNC_INIT_COMM = "runc:[2:INIT]"  # final namespaces, waiting for `start` (cgroupns may follow)


@dataclass(frozen=True, slots=True)
class NamespaceIdentity:
    type: str
    inode: int
    dev: int
    id: int | None  # NS_GET_ID, None where the kernel has no such ioctl

    @property
    def key(self) -> tuple[str, int, int]:
        """What makes two namespaces the same: the never-reused id, else device and inode."""
        return (self.type, 0, self.id) if self.id is not None else (self.type, self.dev, self.inode)


@dataclass(eq=False)
class HeldNamespaces:
    """A process's namespaces, each with an open fd that keeps it alive."""

    pid: int
    identities: dict[str, NamespaceIdentity]
    fds: list[int] = field(default_factory=list)

    def close(self) -> None:
        close_all(self.fds)


def _ns_get_id(fd: int) -> int | None:
    try:
        buf = fcntl.ioctl(fd, NS_GET_ID, b"\0" * 8)
    except OSError:
        return None  # ENOTTY / EINVAL before Linux 6.x
    return int(struct.unpack("=Q", buf)[0])


@functools.cache
def _kernel_types(proc: Path) -> frozenset[str]:
    """The namespace types this kernel has (those pylog's own process shows)."""
    own = proc / "self" / "ns"
    return frozenset(t for t in NS_TYPES if (own / t).exists()) if own.exists() \
        else frozenset(NS_TYPES)


def hold_namespaces(pid: int, proc: Path = PROC, types: Iterable[str] = NS_TYPES) -> HeldNamespaces:
    """Open and identify ``pid``'s namespaces; OSError if the process is gone or unreadable."""
    held = HeldNamespaces(pid, {})
    try:
        for ns_type in types:
            try:
                fd = os.open(proc / str(pid) / "ns" / ns_type, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                if ns_type in _kernel_types(proc):
                    raise  # the process is exiting: its view would be incomplete
                continue  # this kernel has no such namespace type (time before 5.6)
            held.fds.append(fd)
            st = os.fstat(fd)
            held.identities[ns_type] = NamespaceIdentity(ns_type, st.st_ino, st.st_dev,
                                                         _ns_get_id(fd))
    except BaseException:
        held.close()
        raise
    return held


def read_stripped(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _ppid(pid: int, proc: Path) -> int:
    stat = read_stripped(proc / str(pid) / "stat")
    try:
        return int(stat.rsplit(")", 1)[1].split()[1])
    except (IndexError, ValueError):
        return 0


def pick_init(pids: list[int], proc: Path = PROC) -> int | None:
    """The container's init among the processes of its cgroup: not a runc set-up stage, and
    whose parent is outside the cgroup (the shim)."""
    members = set(pids)
    candidates = [p for p in pids if read_stripped(proc / str(p) / "comm") not in _RUNC_SETUP_COMMS]
    for p in candidates:
        if _ppid(p, proc) not in members:
            return p
    return candidates[0] if candidates else None


@dataclass
class FinderSchedule:
    """How often to look: fast while a container is being created, slower later, and not after
    ``give_up_after`` (a container whose process never shows up, or whose runc init never
    starts its program, is not looked for forever)."""

    fast: float = 0.001
    fast_for: float = 2.0
    medium: float = 0.01
    medium_for: float = 10.0
    slow: float = 0.1
    scan_after: float = 1.0  # then also scan /proc, for custom --cgroup-parent layouts
    scan_every: float = 1.0
    give_up_after: float = 60.0

    def delay(self, elapsed: float) -> float:
        return (self.fast if elapsed < self.fast_for
                else self.medium if elapsed < self.medium_for else self.slow)

    def scan_due(self, elapsed: float, since_scan: float) -> bool:
        return elapsed >= self.scan_after and since_scan >= self.scan_every


async def find_container_namespaces(
        container_id: str, host: dict[str, NamespaceIdentity], proc: Path = PROC,
        root: Path = cgroup.CGROUP_ROOT, schedule: FinderSchedule | None = None,
        on_update: Callable[[HeldNamespaces], None] | None = None) -> HeldNamespaces | None:
    """Wait for the container's init and hold its namespaces. Runs until found, cancelled, or
    ``schedule.give_up_after`` has passed.

    runc's init sits in the container's final namespaces waiting for ``start``; a view seen the
    same on two looks in a row is handed to ``on_update`` at once (so even the first line of a
    container gets it), and again if it changes before the container's program runs. Each view
    handed to ``on_update`` belongs to the callee from then on; the return value is the last
    one handed out (or, without ``on_update``, the caller's to close). On giving up that is
    runc's init's view if one was seen, else None (logged once).
    """
    finder = _Finder(container_id, host, proc, cgroup.procs_files(container_id, root),
                     schedule or FinderSchedule(), on_update)
    try:
        return await finder.run()
    finally:
        finder.close()


class _Finder:
    """find_container_namespaces's state: the views it holds, and when it last scanned /proc."""

    def __init__(self, container_id: str, host: dict[str, NamespaceIdentity], proc: Path,
                 files: list[Path], schedule: FinderSchedule,
                 on_update: Callable[[HeldNamespaces], None] | None) -> None:
        self.container_id = container_id
        self.host = host
        self.proc = proc
        self.files = files
        self.schedule = schedule
        self.on_update = on_update
        self.start = self.last_scan = time.monotonic()
        self.published: HeldNamespaces | None = None
        self.seen: HeldNamespaces | None = None  # ours: looked at, not handed out
        self.returned = False

    async def run(self) -> HeldNamespaces | None:
        while True:
            now = time.monotonic()
            elapsed = now - self.start
            if elapsed >= self.schedule.give_up_after:
                return self._give_up(elapsed)
            init, candidate = await self._look(now, elapsed)
            if candidate is not None:
                if self._take(candidate):
                    return self._result()
            elif init is None and (self.published is not None or self.seen is not None):
                return self._result()  # it ran and exited between two looks: the last view
            await asyncio.sleep(self.schedule.delay(elapsed))  # there is no event to wait on

    async def _look(self, now: float, elapsed: float) -> tuple[int | None, HeldNamespaces | None]:
        """The container's init, and its namespaces if they are the container's."""
        pids = cgroup.read_procs(self.files)
        if not pids and self.schedule.scan_due(elapsed, now - self.last_scan):
            self.last_scan = now
            pids = await asyncio.to_thread(cgroup.scan_proc, self.container_id, self.proc)
        last = self.seen or self.published
        if not pids and last is not None and (self.proc / str(last.pid)).exists():
            pids = [last.pid]  # found by a /proc scan, and no scan is due: still there
        init = pick_init(pids, self.proc) if pids else None
        if init is None:
            return None, None
        try:
            held = hold_namespaces(init, self.proc)
        except OSError:
            return init, None  # gone already, or not ours to read; look again
        if not _is_container_view(held, self.host):
            held.close()
            return init, None
        return init, held

    def _take(self, candidate: HeldNamespaces) -> bool:
        """Keep the newest view, hand it out once seen twice; True if it is final."""
        final = read_stripped(self.proc / str(candidate.pid) / "comm") != _RUNC_INIT_COMM
        same = self.seen is not None and self.seen.pid == candidate.pid and \
            self.seen.identities == candidate.identities
        if self.seen is not None:
            self.seen.close()
        self.seen = candidate
        if final or same:
            self._publish()
        return final

    def _publish(self) -> None:
        assert self.seen is not None
        if self.published is not None and self.published.identities == self.seen.identities:
            self.seen.close()  # nothing new
        else:
            self.published = self.seen
            if self.on_update is not None:
                self.on_update(self.published)
        self.seen = None

    def _result(self) -> HeldNamespaces:
        if self.seen is not None:
            self._publish()
        assert self.published is not None
        self.returned = True
        return self.published

    def _give_up(self, elapsed: float) -> HeldNamespaces | None:
        if self.published is not None or self.seen is not None:
            return self._result()  # runc's init never started the program: its view stands
        log.info("the namespaces of container %s were not found in %.0f s: its records carry "
                 "none", self.container_id[:12], elapsed)
        self.returned = True
        return None

    def close(self) -> None:
        if self.seen is not None:
            self.seen.close()
        if self.published is not None and self.on_update is None and not self.returned:
            self.published.close()  # cancelled: nobody else will


def _is_container_view(held: HeldNamespaces, host: dict[str, NamespaceIdentity]) -> bool:
    """Docker always gives a container its own mount namespace; a process still in the host's
    is a runtime helper that has not entered the container yet."""
    mnt = held.identities.get("mnt")
    host_mnt = host.get("mnt")
    return mnt is not None and (host_mnt is None or mnt.key != host_mnt.key)


def dockerd_pid(proc: Path) -> int | None:
    for pidfile in (Path("/var/run/docker.pid"), Path("/run/docker.pid")):
        try:
            return int(pidfile.read_text().strip())
        except (OSError, ValueError):
            pass
    for name in os.listdir(proc):
        if name.isdigit() and read_stripped(proc / name / "comm") == "dockerd":
            return int(name)
    return None


def host_namespaces(proc: Path = PROC) -> dict[str, NamespaceIdentity]:
    """The host's identities: those of PID 1 as seen in the host PID namespace (never our own:
    a managed plugin has its own mount, net, uts, ipc namespaces). Where PID 1 cannot be read
    (some sandboxes deny it even to root), dockerd's own: ``--net=host`` and the like mean
    dockerd's namespaces."""
    for pid in (1, dockerd_pid(proc)):
        if pid is None:
            continue
        try:
            held = hold_namespaces(pid, proc)
        except OSError as e:
            log.info("cannot read the namespaces of PID %d: %s", pid, e)
            continue
        held.close()
        if pid != 1:
            log.warning("PID 1's namespaces are unreadable; using dockerd's (PID %d) as the host's",
                        pid)
        return held.identities
    log.warning("cannot read the host's namespaces (PID 1, dockerd): is_host will be false")
    return {}
