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
from dataclasses import dataclass
from pathlib import Path

from .namespaces import dockerd_pid

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HostIdentity:
    machine_id: str = ""  # empty: unknown (no machine id on this host)
    boot_id: str = ""


def _first_line(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


@functools.lru_cache(maxsize=4)
def host_identity(proc: str = "/proc") -> HostIdentity:
    """Read once per ``proc`` (both stay the same until the next boot)."""
    roots = [Path(proc) / str(pid) / "root" for pid in (1, dockerd_pid(Path(proc))) if pid]
    candidates = [root / name for root in roots
                  for name in ("etc/machine-id", "var/lib/dbus/machine-id")]
    machine = ""
    for candidate in [*candidates, Path("/etc/machine-id")]:
        machine = _first_line(candidate)
        if machine:
            break
    boot = _first_line(Path(proc) / "sys/kernel/random/boot_id")
    if not machine or not boot:
        log.warning("host identity incomplete: machine id %r, boot id %r", machine, boot)
    return HostIdentity(machine, boot)
