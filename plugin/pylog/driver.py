"""Which containers are attached, one stream per FIFO, and the store they write to.

The API layer calls :meth:`Driver.start_logging`, :meth:`Driver.stop_logging` and
:meth:`Driver.read_logs`; everything here answers at once and does its slow work in the background.

A container can have more than one attachment at a time (``docker logs`` on a stopped container
makes dockerd attach a second, empty FIFO); its store, context and namespaces are per container.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import stat
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .delivery import Delivery
from .docker_api import DockerAPI
from .entry import LogEntry
from .errors import PylogError, RequestError, UnknownContainerError
from .logreader import ReadConfig, read_entries, read_logs
from .namespaces import (
    HeldNamespaces,
    NamespaceIdentity,
    NamespaceRegistry,
    find_container_namespaces,
    host_namespaces,
)
from .options import LogOptions, parse_log_options
from .record import ContainerContext, build_context, context_from_fields, select
from .sinks import SinkPool, configured_sinks
from .store import CONTAINER_ID_RE, ContainerLog, Store, StoreOptions, write_json_atomic
from .stream import FifoStream

log = logging.getLogger(__name__)

DEFAULT_FIFO_DIR = "/run/docker/logging"
STOP_GRACE = 10.0  # seconds to wait for end of stream after StopLogging before closing anyway
SHUTDOWN_GRACE = 5.0  # seconds sinks get at shutdown to deliver what is stored; the rest waits
CONTEXT_FILE = "context.json"
OPTIONS_FILE = "log-opts.json"  # the container's log-opts, to resume its sinks after a restart
ATTACHMENTS_DIR = "attachments"  # one {File, Info} per live FIFO, to re-attach after a restart


@dataclass(eq=False)
class Container:
    """An attached container: its store, its context, and the search for its namespaces."""

    container_id: str
    info: Mapping[str, Any]
    options: LogOptions
    clog: ContainerLog
    context: ContainerContext
    attachments: set[Attachment] = field(default_factory=set)
    finder: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self.context.name


@dataclass(eq=False)
class Attachment:
    """One StartLogging: a FIFO and the container it belongs to."""

    file: str
    container: Container
    stream: FifoStream | None = None
    stopping: bool = False
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def container_id(self) -> str:
        return self.container.container_id

    @property
    def container_name(self) -> str:
        return self.container.name

    @property
    def context(self) -> ContainerContext:
        return self.container.context


class Driver:
    def __init__(self, state_dir: Path, fifo_dir: str = DEFAULT_FIFO_DIR,
                 docker: DockerAPI | None = None, gc_interval: float = 300.0,
                 proc: Path = Path("/proc")) -> None:
        self.state_dir = state_dir
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(state_dir, 0o700)
        self.fifo_dir = os.path.realpath(fifo_dir)
        self._compressor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pylog-compress")
        self.store = Store(state_dir, self._compressor)
        self.attachments: dict[str, Attachment] = {}
        self.containers: dict[str, Container] = {}
        self.docker = docker
        self.gc_interval = gc_interval
        self.proc = proc
        self.host_ns: dict[str, NamespaceIdentity] = host_namespaces(proc)
        self.registry = NamespaceRegistry()
        self.lookups_failed = 0
        self.sinks = SinkPool(state_dir)
        self.deliveries: dict[tuple[str, str], Delivery] = {}
        self._gc_task: asyncio.Task[None] | None = None
        self._closing = False
        self.host_name = os.uname().nodename
        # For the metrics: containers and deliveries that finished, kept this many seconds
        # (0: not kept; `pylog serve --metrics-address` sets it) so a scrape sees their final
        # counts. Bounded by the time: pruned whenever one is added or the metrics are read.
        self.metrics_linger = 0.0
        self.retired_logs: dict[str, tuple[float, str, ContainerLog]] = {}
        self.retired_deliveries: dict[tuple[str, str], tuple[float, Delivery]] = {}

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        self._reattach()
        self._resume_deliveries()
        if self.docker is not None and self.gc_interval > 0:
            self._gc_task = asyncio.create_task(self._gc_loop(), name="pylog-gc")

    def _reattach(self) -> None:
        """After a restart (crash, kill -9, upgrade) dockerd sends no StartLogging for running
        containers: attach again to every FIFO that was attached and still exists. What dockerd
        wrote meanwhile waited in the FIFO; a frame the old process had half moved into the
        store is completed by the first splice."""
        directory = self.state_dir / ATTACHMENTS_DIR
        directory.mkdir(mode=0o700, exist_ok=True)
        for path in sorted(directory.glob("*.json")):
            try:
                saved = json.loads(path.read_text())
                self.start_logging(saved["File"], saved["Info"], resumed=True)
                log.info("re-attached %s after a restart", saved["File"])
            except (OSError, ValueError, KeyError, TypeError, PylogError) as e:
                log.info("not re-attaching %s: %s", path.name, e)
                path.unlink(missing_ok=True)

    def _attachment_path(self, fifo: str) -> Path:
        name = os.path.basename(fifo)
        if not re.fullmatch(r"[0-9A-Za-z_.-]{1,128}", name):
            name = hashlib.sha256(fifo.encode()).hexdigest()
        return self.state_dir / ATTACHMENTS_DIR / f"{name}.json"

    def _persist_attachment(self, att: Attachment) -> None:
        """Keep {File, Info}; of the environment and labels only what the options select, so
        no secret of a container reaches the disk."""
        container = att.container
        info = dict(container.info)
        info["ContainerEnv"] = [f"{k}={v}" for k, v in container.context.env.items()]
        info["ContainerLabels"] = select(dict(info.get("ContainerLabels") or {}),
                                         container.options["labels"],
                                         container.options["labels-regex"])
        try:
            write_json_atomic(self._attachment_path(att.file), {"File": att.file, "Info": info})
        except OSError as e:
            log.warning("could not persist the attachment of %s: %s", att.file, e)

    def _resume_deliveries(self) -> None:
        """Sinks pick up where they were: every stored container whose log-opts switch on a
        sink gets its deliveries back (one that had delivered everything ends at once)."""
        for cid in self.store.stored_ids():
            try:
                config = json.loads((self.store.root / cid / OPTIONS_FILE).read_text())
                options = parse_log_options(config)
            except (OSError, ValueError, PylogError) as e:
                if not isinstance(e, FileNotFoundError):
                    log.warning("%s: cannot resume its sinks: %s", cid[:12], e)
                continue
            if configured_sinks(options):
                clog = self.store.get(cid)
                assert clog is not None
                self._start_deliveries(cid, clog, options)

    async def close(self) -> None:
        self._closing = True
        if self._gc_task is not None:
            self._gc_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._gc_task
        for att in list(self.attachments.values()):
            if att.stream is not None:
                att.stream.close()
        for container in list(self.containers.values()):
            self._forget(container)
        # Sinks deliver what is stored for a bounded time; the rest stays for the next start.
        deliveries = list(self.deliveries.values())
        for d in deliveries:
            d.closing = True
            d.clog.wake()
        tasks = [d.task for d in deliveries if d.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=SHUTDOWN_GRACE)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self.sinks.close()
        self.registry.close()
        self.store.close()
        self._compressor.shutdown(wait=True)

    # ----------------------------------------------------------------- protocol

    def start_logging(self, file: Any, info: Any, resumed: bool = False) -> Attachment:
        """Validate and attach; raises PylogError with a message for ``docker run`` to show."""
        if not isinstance(info, dict):
            raise RequestError("StartLogging: Info must be an object")
        fifo = self._check_fifo(file)
        container_id = info.get("ContainerID")
        if not isinstance(container_id, str) or not CONTAINER_ID_RE.match(container_id):
            raise RequestError(f"StartLogging: Info.ContainerID must be 64 hex characters, "
                               f"got {container_id!r}")
        if fifo in self.attachments:
            raise RequestError(f"StartLogging: {fifo} is already attached")
        options = parse_log_options(info.get("Config"))
        container = self.containers.get(container_id)
        if container is None:
            clog = self.store.open(container_id, StoreOptions(
                max_size=options["max-size"], max_file=options["max-file"],
                compress=options["compress"]))
            retired = self.retired_logs.pop(container_id, None)
            if retired is not None and retired[2] is not clog:
                clog.stats.carry_over(retired[2].stats)  # its metrics go on, never backwards
            container = Container(container_id, info, options, clog,
                                  build_context(info, options, host=self.host_ns))
        if not resumed and not container.attachments:
            # A new FIFO: a half frame left by a writer that is gone will never be completed.
            # (After a restart the same FIFO goes on, and completes it.)
            container.clog.abandon_partial()
        att = Attachment(file=fifo, container=container)
        stream = FifoStream(fifo, container.clog, lambda: self._on_end(att))
        try:
            stream.start()
        except OSError as e:
            if not container.attachments:
                self.store.release(container_id)
            raise RequestError(f"StartLogging: cannot open {fifo}: {e.strerror}") from None
        att.stream = stream
        container.clog.writers += 1
        container.attachments.add(att)
        self.attachments[fifo] = att
        if container_id not in self.containers:
            self.containers[container_id] = container
            if not (container.clog.directory / CONTEXT_FILE).exists():
                self._save_context(container)  # so records of it can be read after it stops
            self._save_options(container)
            if options["namespaces"]:
                # Starts after our reply, when runc creates the container's process.
                container.finder = asyncio.create_task(self._find_namespaces(container),
                                                       name=f"pylog-ns-{container_id[:12]}")
            self._start_deliveries(container_id, container.clog, options)
        if not resumed:
            self._persist_attachment(att)
        log.info("attached %s (%s) on %s", container.name, container_id[:12], fifo)
        return att

    def stop_logging(self, file: Any) -> None:
        """Answer at once: dockerd closes its end only after our reply, which ends the stream."""
        if not isinstance(file, str) or not file:
            raise RequestError("StopLogging: File must be a non-empty string")
        att = self.attachments.get(os.path.realpath(file))
        if att is None:
            # Not an error for dockerd: it closes and deletes the FIFO, and lets go of the
            # plugin, only after a successful StopLogging (an Err leaves the plugin "in use").
            log.warning("StopLogging for %s, which is not attached: nothing to stop", file)
            return
        att.stopping = True
        task = asyncio.create_task(self._close_after_grace(att))
        att.tasks.add(task)
        task.add_done_callback(att.tasks.discard)

    async def _close_after_grace(self, att: Attachment) -> None:
        assert att.stream is not None
        try:
            await asyncio.wait_for(att.stream.done.wait(), STOP_GRACE)
        except TimeoutError:
            log.warning("no end of stream on %s %.0fs after StopLogging; closing it",
                        att.file, STOP_GRACE)
            att.stream.close()

    def read_logs(self, info: Any, config: Any) -> AsyncIterator[bytes]:
        if not isinstance(info, dict):
            raise RequestError("ReadLogs: Info must be an object")
        container_id = info.get("ContainerID")
        if not isinstance(container_id, str) or not CONTAINER_ID_RE.match(container_id):
            raise RequestError(f"ReadLogs: Info.ContainerID must be 64 hex characters, "
                               f"got {container_id!r}")
        if config is not None and not isinstance(config, dict):
            raise RequestError("ReadLogs: Config must be an object")
        cfg = ReadConfig.from_request(config)
        clog = self.store.get(container_id)
        if clog is None:
            raise UnknownContainerError(f"no logs stored for container {container_id[:12]}")
        self._drain(container_id)
        return self._released_after(container_id, read_logs(clog, cfg))

    def _drain(self, container_id: str) -> None:
        """What dockerd has written to the container's FIFOs so far goes into the store first:
        dockerd writes a line before ``docker wait`` returns, so ``docker logs`` after it must
        show the line, as with json-file, even if the event loop has not read it yet."""
        container = self.containers.get(container_id)
        for att in list(container.attachments) if container else ():
            if att.stream is not None:
                att.stream.drain()

    def read_entries(self, container_id: str, cfg: ReadConfig) -> AsyncIterator[Sequence[LogEntry]]:
        clog = self.store.get(container_id)
        if clog is None:
            raise UnknownContainerError(f"no logs stored for container {container_id[:12]}")
        return self._released_after(container_id, read_entries(clog, cfg))

    async def _released_after(self, container_id: str, items: AsyncIterator[Any]
                              ) -> AsyncIterator[Any]:
        try:
            async for item in items:
                yield item
        finally:
            await items.aclose()  # type: ignore[attr-defined]
            self.store.release(container_id)

    # ----------------------------------------------------------------- end of a stream

    def _on_end(self, att: Attachment) -> None:
        self.attachments.pop(att.file, None)
        if not self._closing:  # shutting down: keep it, to re-attach at the next start
            self._attachment_path(att.file).unlink(missing_ok=True)
        container = att.container
        container.attachments.discard(att)
        container.clog.writers -= 1
        container.clog.wake()
        stats = att.stream.stats if att.stream else None
        log.info("detached %s (%s): %d bytes stored, %d dropped; %d corrupt regions so far",
                 container.name, container.container_id[:12], stats.bytes if stats else 0,
                 stats.dropped_bytes if stats else 0, container.clog.stats.corrupt)
        if not container.attachments:
            self._forget(container)

    def _forget(self, container: Container) -> None:
        """The container's last attachment ended: let go of its namespaces and files."""
        if self.containers.get(container.container_id) is container:
            del self.containers[container.container_id]
            if not any(cid == container.container_id for cid, _ in self.deliveries):
                self._retire_log(container.container_id, container.name, container.clog)
        if container.finder is not None:
            container.finder.cancel()
        for cid in self.registry.remove(container.container_id):
            self._refresh(cid)
        self.store.release(container.container_id)

    # ----------------------------------------------------------------- sinks

    def _start_deliveries(self, cid: str, clog: ContainerLog, options: LogOptions) -> None:
        """One delivery per sink the container's options switch on (one that is still
        catching up from the container's previous run goes on instead)."""
        for config in configured_sinks(options):
            key = (cid, config.key)
            if key in self.deliveries:
                continue
            sink = self.sinks.acquire(config)
            delivery = Delivery(clog, sink, functools.partial(self.context_of, cid))
            retired = self.retired_deliveries.pop(key, None)
            if retired is not None:
                delivery.carry_over(retired[1])  # its metrics go on, never backwards
            self.deliveries[key] = delivery
            delivery.start().add_done_callback(
                functools.partial(self._delivery_done, key, delivery))

    def _delivery_done(self, key: tuple[str, str], delivery: Delivery,
                       task: asyncio.Task[None]) -> None:
        if self.deliveries.get(key) is delivery:
            del self.deliveries[key]
            if self.metrics_linger > 0:
                self.retired_deliveries[key] = (time.monotonic(), delivery)
                self.prune_retired()
            cid = key[0]
            if cid not in self.containers and not any(c == cid for c, _ in self.deliveries):
                self._retire_log(cid, delivery.container_name, delivery.clog)
        if not task.cancelled() and task.exception() is not None:
            log.error("delivery to %s for %s failed: %r", delivery.sink.key, key[0][:12],
                      task.exception())
        release = asyncio.ensure_future(self.sinks.release(delivery.sink))
        release.add_done_callback(lambda _: self.store.release(key[0]))

    # ----------------------------------------------------------------- for the metrics

    @property
    def closing(self) -> bool:
        return self._closing

    def _retire_log(self, container_id: str, name: str, clog: ContainerLog) -> None:
        if self.metrics_linger > 0:
            self.retired_logs[container_id] = (time.monotonic(), name, clog)
            self.prune_retired()

    def prune_retired(self, now: float | None = None) -> None:
        """Forget finished containers and deliveries older than the linger time, and any
        that came back (their live series take over)."""
        now = time.monotonic() if now is None else now
        cutoff = now - self.metrics_linger
        for cid in [c for c, (t, _, _) in self.retired_logs.items()
                    if t < cutoff or c in self.containers]:
            del self.retired_logs[cid]
        for key in [k for k, (t, _) in self.retired_deliveries.items()
                    if t < cutoff or k in self.deliveries]:
            del self.retired_deliveries[key]

    # ----------------------------------------------------------------- namespaces

    async def _find_namespaces(self, container: Container) -> None:
        started = time.monotonic()

        def update(held: HeldNamespaces) -> None:
            if self.containers.get(container.container_id) is not container:
                held.close()
                return
            touched = self.registry.add(container.container_id, held)
            self._refresh(container.container_id)
            for cid in touched:
                self._refresh(cid)
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

    def _refresh(self, container_id: str) -> None:
        """Rebuild a container's context after what it says changed; keep it for later reads."""
        container = self.containers.get(container_id)
        if container is None:
            return
        container.context = build_context(
            container.info, container.options, self.registry.held(container_id), self.host_ns,
            self.registry, names={cid: c.name for cid, c in self.containers.items()})
        self._save_context(container)

    def _save_context(self, container: Container) -> None:
        try:
            write_json_atomic(container.clog.directory / CONTEXT_FILE, container.context.fields())
        except OSError as e:
            log.warning("could not save the context of %s: %s", container.container_id[:12], e)

    def _save_options(self, container: Container) -> None:
        try:
            write_json_atomic(container.clog.directory / OPTIONS_FILE,
                              dict(container.info.get("Config") or {}))
        except OSError as e:
            log.warning("could not save the log-opts of %s: %s", container.container_id[:12], e)

    def context_of(self, container_id: str) -> ContainerContext:
        """The live context of an attached container, else the one saved with its logs (else
        just its ID)."""
        container = self.containers.get(container_id)
        if container is not None:
            return container.context
        try:
            text = (self.store.root / container_id / CONTEXT_FILE).read_text()
            return context_from_fields(json.loads(text))
        except (OSError, ValueError, KeyError, TypeError):
            return ContainerContext(container_id=container_id, name="", image_name="",
                                    image_id="", tag=container_id[:12], host_name="")

    def resolve(self, ref: str) -> str:
        """A container ID from a full or unique partial ID or a name, attached ones first."""
        ref = ref.lstrip("/")
        for cid, c in self.containers.items():
            if c.name == ref:
                return cid
        stored = self.store.stored_ids()
        for cid in stored:
            if self.context_of(cid).name == ref:
                return cid
        matches = {cid for cid in [*self.containers, *stored] if cid.startswith(ref)}
        if len(matches) == 1 and ref:
            return matches.pop()
        if len(matches) > 1:
            raise UnknownContainerError(f"{ref!r} matches more than one container")
        raise UnknownContainerError(f"no container {ref!r} is attached or stored")

    # ----------------------------------------------------------------- housekeeping

    def _check_fifo(self, file: Any) -> str:
        if not isinstance(file, str) or not file:
            raise RequestError("StartLogging: File must be a non-empty string")
        path = os.path.realpath(file)
        if os.path.dirname(path) != self.fifo_dir:
            raise RequestError(f"StartLogging: File {file!r} is not in {self.fifo_dir}")
        try:
            st = os.stat(path)
        except OSError as e:
            raise RequestError(f"StartLogging: cannot stat {file}: {e.strerror}") from None
        if not stat.S_ISFIFO(st.st_mode):
            raise RequestError(f"StartLogging: {file} is not a FIFO")
        return path

    async def collect_garbage(self) -> list[str]:
        """Delete the stores of containers dockerd no longer knows (``docker rm``)."""
        assert self.docker is not None
        existing = await self.docker.container_ids()
        removed = []
        for cid in self.store.stored_ids():
            if cid not in existing and cid not in self.containers and not self.store.in_use(cid):
                self.store.remove(cid)
                removed.append(cid)
        if removed:
            log.info("removed the logs of %d deleted containers", len(removed))
        return removed

    async def _gc_loop(self) -> None:
        while True:
            try:
                await self.collect_garbage()
            except Exception as e:  # dockerd away: keep everything, try again later
                log.warning("could not ask dockerd which containers exist, keeping all logs: %s", e)
            await asyncio.sleep(self.gc_interval)
