"""Which attached containers share which namespace, and each namespace's key.

A namespace's **key** names that namespace and no other: on any host, in any boot, at any time,
whether or not the kernel has ``NS_GET_ID``. It is what records, ``pylog ps``, the map page, the
syslog structured data and the Kibana dashboards group by. It is the first 20 hex digits (80 bits)
of a SHA-256 over the boot id (random per boot, so per host too), the type and:

- the ``NS_GET_ID`` id, where the kernel has it (never reused during a boot);
- for the host's own namespaces, their inode (they live as long as the boot);
- otherwise the inode and a random 64-bit *lifetime* drawn when pylog first holds that inode.
  An inode is handed to the next namespace once one is freed, but pylog holds an fd on every
  namespace of each attached container, so while any container in it is attached, the inode
  names one namespace and every container seen in it gets the same key. When the last of them
  detaches pylog closes the fds and forgets the lifetime: a namespace that gets the inode later
  gets a new one.

After pylog restarts, a container that is still running keeps its saved keys where its init has
the same pid and its namespace the same inode in the same boot (that process kept the namespace
alive all along). The inode stays beside the key: it is what ``ls -l /proc/<pid>/ns`` shows.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from .hostid import host_identity
from .namespaces import HeldNamespaces, NamespaceIdentity

KEY_BITS = 80  # collisions stay unlikely (< 1e-6) up to 10^9 namespaces in one index
KEY_CHARS = 14  # 80 bits in base 62 (62**14 > 2**80): letters and digits, safe in every query
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _base62(value: int, width: int) -> str:
    out = []
    for _ in range(width):
        value, digit = divmod(value, 62)
        out.append(_BASE62[digit])
    return "".join(reversed(out))


def namespace_key(boot_id: str, ident: NamespaceIdentity, lifetime: int | None = None) -> str:
    """The key of ``ident``: from its id where known, else its inode (and ``lifetime``)."""
    if ident.id is not None:
        what = f"id:{ident.id}"
    else:
        what = f"ino:{ident.dev}:{ident.inode}" + ("" if lifetime is None else f":{lifetime}")
    digest = hashlib.sha256(f"{boot_id}/{ident.type}/{what}".encode()).digest()
    # base 62, not hex: a record repeats eight keys on every line (6 bytes less each)
    return _base62(int.from_bytes(digest[:KEY_BITS // 8]), KEY_CHARS)


@dataclass(frozen=True)
class SavedKeys:
    """Keys a container's saved context gave its namespaces, to take again after a restart."""

    boot_id: str
    pid: int
    keys: Mapping[str, tuple[int, str]]  # type -> (inode, key)

    def for_ident(self, boot_id: str, pid: int, ident: NamespaceIdentity) -> str | None:
        if boot_id != self.boot_id or pid != self.pid:
            return None
        inode, key = self.keys.get(ident.type, (None, None))
        return key if inode == ident.inode else None


class NamespaceRegistry:
    """Which attached containers are in which namespace, to say who shares what, and the key of
    each namespace they hold."""

    def __init__(self, host: Mapping[str, NamespaceIdentity] | None = None,
                 boot_id: str | None = None) -> None:
        self.host = dict(host or {})
        self.boot_id = host_identity().boot_id if boot_id is None else boot_id
        self._members: dict[tuple[str, int, int], set[str]] = {}
        self._keys: dict[tuple[str, int, int], str] = {}
        self._held: dict[str, HeldNamespaces] = {}

    def add(self, container_id: str, held: HeldNamespaces,
            saved: SavedKeys | None = None) -> set[str]:
        """Register; returns the other containers whose sharing changed."""
        old = self._held.get(container_id)
        # A new view of the same container (runc's init entered its cgroup namespace): the
        # namespaces it still shows keep their keys (its fds hold them while the old ones close).
        kept = {i.key: self._keys[i.key] for i in old.identities.values()} if old else {}
        touched = self.remove(container_id)  # those that shared the old view
        self._held[container_id] = held
        for ident in held.identities.values():
            members = self._members.setdefault(ident.key, set())
            if not members:
                self._keys[ident.key] = kept.get(ident.key) or \
                    self._new_key(ident, held.pid, saved)
            touched |= members
            members.add(container_id)
        touched.discard(container_id)
        return touched

    def _new_key(self, ident: NamespaceIdentity, pid: int, saved: SavedKeys | None) -> str:
        if ident.id is not None or self.is_host(ident):
            return namespace_key(self.boot_id, ident)
        kept = saved.for_ident(self.boot_id, pid, ident) if saved is not None else None
        return kept or namespace_key(self.boot_id, ident, secrets.randbits(64))

    def is_host(self, ident: NamespaceIdentity) -> bool:
        host = self.host.get(ident.type)
        return host is not None and host.key == ident.key

    def key_of(self, ident: NamespaceIdentity) -> str:
        """The key of a namespace a registered container holds (or of the host's)."""
        key = self._keys.get(ident.key)
        # Held by no registered container: a key of its own (never another's, if not shared).
        return key if key is not None else self._new_key(ident, 0, None)

    def remove(self, container_id: str) -> set[str]:
        """Unregister and close the fds; returns the containers that shared with it."""
        held = self._held.pop(container_id, None)
        if held is None:
            return set()
        touched: set[str] = set()
        for ident in held.identities.values():
            members = self._members.get(ident.key)
            if members is None:
                continue
            members.discard(container_id)
            touched |= members
            if not members:
                del self._members[ident.key]
                del self._keys[ident.key]  # its fds close below: the inode may name another
        held.close()
        return touched

    @property
    def count(self) -> int:
        return len(self._held)

    def held(self, container_id: str) -> HeldNamespaces | None:
        return self._held.get(container_id)

    def sharing(self, container_id: str, ident: NamespaceIdentity) -> list[str]:
        """The other registered containers in the same namespace."""
        return sorted(self._members.get(ident.key, set()) - {container_id})

    def close(self) -> None:
        for cid in list(self._held):
            self.remove(cid)
