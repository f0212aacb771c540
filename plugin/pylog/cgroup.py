"""Where a container's processes are: its cgroup, for every cgroup driver and version.

dockerd gives a logging plugin no PID, and must not be asked while StartLogging runs, so pylog
finds the container's processes through the cgroup named after the container ID:

- cgroupfs driver: ``/docker/<id>`` (v1: in every hierarchy; v2: in the unified tree);
- systemd driver: ``/system.slice/docker-<id>.scope``;
- nested (dockerd inside a container), or a ``--cgroup-parent``: the same names deeper down,
  e.g. ``/docker/<outer>/docker/<id>`` — the *last* container ID in the path is the container's.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
_ID = r"[0-9a-f]{64}"
# A path component that names a container: "<id>", "docker-<id>.scope", "cri-containerd-<id>.scope"
_COMPONENT_RE = re.compile(rf"^(?:[a-z0-9-]+-)?({_ID})(?:\.scope)?$")
# v1 hierarchies that every Docker container is placed in; "name=systemd" is mounted as "systemd".
V1_HIERARCHIES = ("pids", "memory", "systemd", "cpu,cpuacct", "cpu", "devices")


def container_id_from_cgroup(text: str) -> str | None:
    """The container ID in the contents of ``/proc/<pid>/cgroup``, or None for a host process.

    Lines are ``hierarchy-ID:controllers:path`` (v1) or ``0::path`` (v2). The innermost container
    component of any path wins (nested containers).
    """
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        found = None
        for component in parts[2].split("/"):
            m = _COMPONENT_RE.match(component)
            if m:
                found = m.group(1)
        if found:
            return found
    return None


def is_unified(root: Path = CGROUP_ROOT) -> bool:
    """cgroup v2 only (no v1 hierarchies mounted)."""
    return (root / "cgroup.controllers").exists()


def procs_files(container_id: str, root: Path = CGROUP_ROOT) -> list[Path]:
    """The ``cgroup.procs`` files where the container's processes appear, for the layouts
    Docker's cgroup drivers use, cheapest first. A custom ``--cgroup-parent`` is not among
    them; :func:`scan_proc` finds those."""
    leaves = (f"docker/{container_id}", f"system.slice/docker-{container_id}.scope")
    bases = [root] if is_unified(root) else [root / h for h in V1_HIERARCHIES] + [root / "unified"]
    return [base / leaf / "cgroup.procs" for base in bases if base.is_dir() for leaf in leaves]


def read_procs(files: list[Path]) -> list[int]:
    """PIDs listed in the first of ``files`` that exists and is not empty."""
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        pids = [int(p) for p in text.split()]
        if pids:
            return pids
    return []


def scan_proc(container_id: str, proc: Path = Path("/proc")) -> list[int]:
    """Every process whose cgroup names the container (slow: reads each process's cgroup).
    Not psutil: it reads no cgroup file, and its /proc (PROCFS_PATH) is one for the whole
    process, where this reads the /proc it is given (a managed plugin's host /proc, tests')."""
    found = []
    for name in os.listdir(proc):
        if not name.isdigit():
            continue
        try:
            text = (proc / name / "cgroup").read_text()
        except OSError:
            continue
        if container_id in text and container_id_from_cgroup(text) == container_id:
            found.append(int(name))
    return found
