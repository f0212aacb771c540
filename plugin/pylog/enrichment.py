"""What a container's records say about it: its context (identity, selected env and labels,
namespaces), found off the hot path and saved with its log so records of a stopped container
still carry it."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

from .attachments import Container
from .durable import write_json
from .errors import UnknownContainerError
from .namespaces import (
    HeldNamespaces,
    NamespaceIdentity,
    find_container_namespaces,
    host_namespaces,
)
from .nsregistry import NamespaceRegistry, SavedKeys
from .record import ContainerContext, build_context, context_from_fields
from .store import CONTAINER_ID_RE

log = logging.getLogger(__name__)

CONTEXT_FILE = "context.json"
STORED_CONTEXTS = 256  # stopped containers' contexts kept in memory


class Enrichment:
    """Contexts of the attached containers (``containers``, shared with the driver), the
    namespaces they hold, and the saved contexts of stopped ones under ``store_root``."""

    def __init__(self, containers: Mapping[str, Container], store_root: Path,
                 proc: Path = Path("/proc")) -> None:
        self.containers = containers
        self.store_root = store_root
        self.proc = proc
        self.host_ns: dict[str, NamespaceIdentity] = host_namespaces(proc)
        self.registry = NamespaceRegistry(self.host_ns)
        self.lookups_failed = 0
        self._stored: OrderedDict[str, ContainerContext] = OrderedDict()  # read lately
        self._stored_lock = threading.Lock()

    def start(self, container: Container) -> None:
        """A newly attached container: keep its context with its log, look for its namespaces."""
        saved = (container.clog.directory / CONTEXT_FILE).exists()
        if not saved:
            self.save(container)  # so records of it can be read after it stops
        if container.options["namespaces"]:
            # Starts after our reply, when runc creates the container's process.
            container.finder = asyncio.create_task(
                self._find_namespaces(container, saved),
                name=f"pylog-ns-{container.container_id[:12]}")

    def forget(self, container: Container) -> None:
        """The container's last attachment ended: let go of its namespaces."""
        if container.finder is not None:
            container.finder.cancel()
        for cid in self.registry.remove(container.container_id):
            self.refresh(cid)

    async def _find_namespaces(self, container: Container, saved: bool) -> None:
        started = time.monotonic()
        # pylog restarted under a running container: its namespaces keep their keys
        keys = await asyncio.to_thread(self._saved_keys, container) if saved else None

        def update(held: HeldNamespaces) -> None:
            if self.containers.get(container.container_id) is not container:
                held.close()
                return
            touched = self.registry.add(container.container_id, held, keys)
            self.refresh(container.container_id)
            for cid in touched:
                self.refresh(cid)
            log.info("%s (%s): pid %d, namespaces known %.1f ms after StartLogging: %s",
                     container.name, container.container_id[:12], held.pid,
                     (time.monotonic() - started) * 1000,
                     " ".join(f"{t}:{i.inode}" for t, i in sorted(held.identities.items())))

        try:
            found = await find_container_namespaces(container.container_id, self.host_ns,
                                                    proc=self.proc, on_update=update)
        except asyncio.CancelledError:
            if container.attachments and not any(a.stopping for a in container.attachments):
                self.lookups_failed += 1
            raise
        except Exception:
            self.lookups_failed += 1
            log.exception("finding the namespaces of %s failed", container.container_id[:12])
        else:
            if found is None:
                self.lookups_failed += 1  # given up on (the finder logged it): no more looks

    def _saved_keys(self, container: Container) -> SavedKeys | None:
        ctx = self.stored_context(container.container_id)  # the context saved before a restart
        if not ctx.namespaces or ctx.pid is None:
            return None
        return SavedKeys(ctx.boot_id, ctx.pid,
                         {t: (v.inode, v.key) for t, v in ctx.namespaces.items() if v.key})

    def refresh(self, container_id: str) -> None:
        """Rebuild a container's context after what it says changed; keep it for later reads."""
        container = self.containers.get(container_id)
        if container is None:
            return
        container.context = build_context(
            container.info, container.options, self.registry.held(container_id), self.host_ns,
            self.registry, names={cid: c.name for cid, c in self.containers.items()})
        self.save(container)

    def save(self, container: Container) -> None:
        with self._stored_lock:
            self._stored.pop(container.container_id, None)
        try:
            write_json(container.clog.directory / CONTEXT_FILE, container.context.fields())
        except OSError as e:
            log.warning("could not save the context of %s: %s", container.container_id[:12], e)

    def context_of(self, container_id: str) -> ContainerContext:
        """The live context of an attached container, else the one saved with its logs (else
        just its ID). Reads a file for a stopped container: call it off the loop then."""
        container = self.containers.get(container_id)
        if container is not None:
            return container.context
        return self.stored_context(container_id)

    def stored_context(self, container_id: str) -> ContainerContext:
        """The context saved with a stopped container's log (kept in memory once read: a
        delivery asks for it at every batch, and only an attached container changes it)."""
        with self._stored_lock:  # also called from workers (pylog tail, name lookups)
            ctx = self._stored.get(container_id)
            if ctx is not None:
                self._stored.move_to_end(container_id)
                return ctx
        bare = ContainerContext(container_id=container_id, name="", image_name="",
                                image_id="", tag=container_id[:12], host_name="")
        try:
            text = (self.store_root / container_id / CONTEXT_FILE).read_text()
            ctx = context_from_fields(json.loads(text))
        except FileNotFoundError:
            ctx = bare  # none saved: kept too (only save(), which forgets it, makes one)
        except (OSError, ValueError, KeyError, TypeError):
            return bare
        with self._stored_lock:
            self._stored[container_id] = ctx
            if len(self._stored) > STORED_CONTEXTS:
                self._stored.popitem(last=False)
        return ctx

    def resolve_attached(self, ref: str) -> str | None:
        """An attached container's ID by name, or None (the stored ones: :meth:`resolve`)."""
        ref = ref.lstrip("/")
        return next((cid for cid, c in self.containers.items() if c.name == ref), None)

    def resolve(self, ref: str, attached: list[str]) -> str:
        """A container ID from a full or unique partial ID or a name, stored ones included
        (reads their saved contexts: a worker's job). ``attached``: the attached IDs."""
        ref = ref.lstrip("/")
        stored = sorted(n for n in _listdir(self.store_root) if CONTAINER_ID_RE.match(n))
        for cid in stored:
            if self.stored_context(cid).name == ref:
                return cid
        matches = {cid for cid in [*attached, *stored] if cid.startswith(ref)}
        if len(matches) == 1 and ref:
            return matches.pop()
        if len(matches) > 1:
            raise UnknownContainerError(f"{ref!r} matches more than one container")
        raise UnknownContainerError(f"no container {ref!r} is attached or stored")

    def close(self) -> None:
        self.registry.close()


def _listdir(path: Path) -> list[str]:
    try:
        return [p.name for p in path.iterdir()]
    except OSError:
        return []

