"""Which machine and which boot a record comes from: ECS ``host.id`` (the machine id) and
``host.boot.id`` (the kernel's boot id). A namespace inode is only unique on one machine during
one boot; with these two beside it, records from two hosts or from before and after a reboot are
told apart.

The machine id is read through PID 1's root, or dockerd's where PID 1's cannot be read (some
sandboxes deny it even to root): pylog runs on the host or as the managed plugin with the host's
PID namespace, and their root is the host's file system either way (the plugin's own
/etc/machine-id, if any, would be its image's). The boot id is the kernel's, the same in every
container.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .namespaces import dockerd_pid, read_stripped

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HostIdentity:
    machine_id: str = ""  # empty: unknown (no machine id on this host)
    boot_id: str = ""


@functools.lru_cache(maxsize=4)
def host_identity(proc: str = "/proc") -> HostIdentity:
    """Read once per ``proc`` (both stay the same until the next boot)."""
    machine = _machine_id(Path(proc))
    boot = read_stripped(Path(proc) / "sys/kernel/random/boot_id")
    if not machine or not boot:
        log.warning("host identity incomplete: machine id %r, boot id %r", machine, boot)
    return HostIdentity(machine, boot)


def _roots(proc: Path) -> Iterator[Path]:
    yield proc / "1" / "root"
    pid = dockerd_pid(proc)  # looked for only if PID 1's root gave nothing: it may scan /proc
    if pid is not None:
        yield proc / str(pid) / "root"


def _machine_id(proc: Path) -> str:
    """PID 1's, else dockerd's, else the one in our own root."""
    for root in _roots(proc):
        for name in ("etc/machine-id", "var/lib/dbus/machine-id"):
            machine = read_stripped(root / name)
            if machine:
                return machine
    return read_stripped(Path("/etc/machine-id"))
