"""The log-driver protocol's state: which containers are attached, one stream per FIFO, and the
store they write to; attachments (:mod:`pylog.attachments`), enrichment
(:mod:`pylog.enrichment`), delivery supervision (:mod:`pylog.supervision`) and the cleanup of
removed containers (:mod:`pylog.cleanup`) are their own units.

The API layer calls :meth:`Driver.start_logging`, :meth:`Driver.stop_logging` and
:meth:`Driver.read_logs`; everything here answers at once and does its slow work in the background.

A container can have more than one attachment at a time (``docker logs`` on a stopped container
makes dockerd attach a second, empty FIFO); its store, context and namespaces are per container.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .attachments import (
    Attachment,
    AttachmentRecords,
    Container,
    check_fifo,
    close_after_grace,
    in_background,
    watch_when_walked,
)
from .cleanup import Cleanup
from .delivery import Delivery
from .docker_api import DockerAPI
from .enrichment import Enrichment
from .entry import LogEntry
from .errors import PylogError, RequestError
from .logreader import ReadConfig, read_entries, read_logs, read_request
from .looplag import LoopLag
from .options import parse_log_options
from .record import ContainerContext, build_context
from .store import CONTAINER_ID_RE, ContainerLog, Store, StoreOptions
from .stream import FifoStream
from .supervision import Deliveries

log = logging.getLogger(__name__)

DEFAULT_FIFO_DIR = "/run/docker/logging"
STOP_GRACE = 10.0  # seconds to wait for end of stream after StopLogging before closing anyway
SHUTDOWN_GRACE = 5.0  # seconds sinks get at shutdown to deliver what is stored; the rest waits
ATTACHMENTS_DIR = "attachments"


class Driver:
    def __init__(self, state_dir: Path, fifo_dir: str = DEFAULT_FIFO_DIR,
                 docker: DockerAPI | None = None, gc_interval: float = 300.0,
                 proc: Path = Path("/proc")) -> None:
        self.state_dir = state_dir
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(state_dir, 0o700)
        self.fifo_dir = os.path.realpath(fifo_dir)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pylog-compress")
        self.store = Store(state_dir, self._worker)
        self.attachments: dict[str, Attachment] = {}
        self.containers: dict[str, Container] = {}
        self.records = AttachmentRecords(state_dir / ATTACHMENTS_DIR)
        self.enrichment = Enrichment(self.containers, self.store.root, proc)
        self.supervisor = Deliveries(state_dir, self.store, self.context_of, self._delivered)
        self.cleanup = (Cleanup(docker, self.store, gc_interval, self.containers.__contains__)
                        if docker is not None else None)
        self._closing = False
        self.host_name = os.uname().nodename
        self.loop_lag = LoopLag()  # filled by looplag.watch_loop in `pylog serve`
        # Containers that finished, kept `metrics_linger` seconds for a scrape's final counts.
        self.retired_logs: dict[str, tuple[float, str, ContainerLog]] = {}

    # The metrics and the API read these.
    @property
    def deliveries(self) -> dict[tuple[str, str], Delivery]:
        return self.supervisor.active

    @property
    def retired_deliveries(self) -> dict[tuple[str, str], tuple[float, Delivery]]:
        return self.supervisor.retired

    @property
    def metrics_linger(self) -> float:
        return self.supervisor.linger

    @metrics_linger.setter
    def metrics_linger(self, seconds: float) -> None:
        self.supervisor.linger = seconds

    @property
    def closing(self) -> bool:
        return self._closing

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        self._reattach()
        self.supervisor.resume()
        if self.cleanup is not None and self.cleanup.interval > 0:
            self.cleanup.start()

    def _reattach(self) -> None:
        """After a restart (crash, kill -9, upgrade) dockerd sends no StartLogging for running
        containers: attach again to every FIFO that was attached and still exists. What dockerd
        wrote meanwhile waited in the FIFO; a frame the old process had half moved into the
        store is completed by the first splice."""
        for path, file, info in self.records.saved():
            try:
                self.start_logging(file, info, resumed=True)
                log.info("re-attached %s after a restart", file)
            except (OSError, PylogError) as e:
                log.info("not re-attaching %s: %s", path.name, e)
                path.unlink(missing_ok=True)

    async def close(self) -> None:
        self._closing = True
        if self.cleanup is not None:
            await self.cleanup.stop()
        for att in list(self.attachments.values()):
            if att.stream is not None:
                att.stream.close()
        for container in list(self.containers.values()):
            self._forget(container)
        await self.supervisor.close(SHUTDOWN_GRACE)
        self.enrichment.close()
        self.store.close()
        self._worker.shutdown(wait=True)

    # ----------------------------------------------------------------- protocol

    def start_logging(self, file: Any, info: Any, resumed: bool = False) -> Attachment:
        """Validate and attach; raises PylogError with a message for ``docker run`` to show."""
        if not isinstance(info, dict):
            raise RequestError("StartLogging: Info must be an object")
        fifo = check_fifo(self.fifo_dir, file)
        container_id = info.get("ContainerID")
        if not isinstance(container_id, str) or not CONTAINER_ID_RE.match(container_id):
            raise RequestError(f"StartLogging: Info.ContainerID must be 64 hex characters, "
                               f"got {container_id!r}")
        if fifo in self.attachments:
            raise RequestError(f"StartLogging: {fifo} is already attached")
        container = self.containers.get(container_id) or self._container(container_id, info)
        if not resumed and not container.attachments:
            # A new FIFO: a half frame left by a writer that is gone will never be completed.
            # (After a restart the same FIFO goes on, and completes it.)
            container.clog.abandon_partial()
        # While a log opened again is walked, a new FIFO's frames must wait for that cut.
        hold = not resumed and container.clog.walking
        att = Attachment(file=fifo, container=container)
        stream = FifoStream(fifo, container.clog, lambda: self._on_end(att))
        try:
            stream.start(watch=not hold)
        except OSError as e:
            if not container.attachments:
                self.store.release(container_id)
            raise RequestError(f"StartLogging: cannot open {fifo}: {e.strerror}") from None
        att.stream = stream
        if hold:
            in_background(att, watch_when_walked(att))
        container.clog.writers += 1
        container.attachments.add(att)
        self.attachments[fifo] = att
        if container_id not in self.containers:
            self.containers[container_id] = container
            self.enrichment.start(container)
            self.supervisor.save_options(container.clog, dict(info.get("Config") or {}))
            self.supervisor.start(container_id, container.clog, container.options)
        if not resumed:
            self.records.save(att)
        log.info("attached %s (%s) on %s", container.name, container_id[:12], fifo)
        return att

    def _container(self, container_id: str, info: dict[str, Any]) -> Container:
        """A container attaching: its options checked, its log opened with them."""
        options = parse_log_options(info.get("Config"))
        clog = self.store.open(container_id, StoreOptions(
            max_size=options["max-size"], max_file=options["max-file"],
            compress=options["compress"]))
        retired = self.retired_logs.pop(container_id, None)
        if retired is not None and retired[2] is not clog:
            clog.stats.carry_over(retired[2].stats)  # its metrics go on, never backwards
        return Container(container_id, info, options, clog,
                         build_context(info, options, host=self.enrichment.host_ns))

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
        in_background(att, close_after_grace(att, STOP_GRACE))

    def read_logs(self, info: Any, config: Any) -> AsyncIterator[bytes]:
        container_id, cfg = read_request(info, config)
        clog = self.store.stored(container_id)
        # What dockerd has written to the FIFOs so far goes into the store first: `docker logs`
        # right after `docker wait` must show the last line, as with json-file.
        container = self.containers.get(container_id)
        for att in list(container.attachments) if container else ():
            if att.stream is not None:
                att.stream.drain()
        return self.store.reading(container_id, read_logs(clog, cfg))

    def read_entries(self, container_id: str, cfg: ReadConfig) -> AsyncIterator[Sequence[LogEntry]]:
        clog = self.store.stored(container_id)
        return self.store.reading(container_id, read_entries(clog, cfg))

    # ----------------------------------------------------------------- end of a stream

    def _on_end(self, att: Attachment) -> None:
        self.attachments.pop(att.file, None)
        if not self._closing:  # shutting down: keep it, to re-attach at the next start
            self.records.forget(att.file)
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
            if not self.supervisor.of(container.container_id):
                self._retire_log(container.container_id, container.name, container.clog)
        self.enrichment.forget(container)
        self.store.release(container.container_id)

    def _delivered(self, container_id: str, delivery: Delivery) -> None:
        """A container's last delivery ended."""
        if container_id not in self.containers:
            self._retire_log(container_id, delivery.container_name, delivery.clog)

    # ----------------------------------------------------------------- for the metrics and CLI

    def _retire_log(self, container_id: str, name: str, clog: ContainerLog) -> None:
        if self.metrics_linger > 0:
            self.retired_logs[container_id] = (time.monotonic(), name, clog)
            self.prune_retired()

    def prune_retired(self, now: float | None = None) -> None:
        """Forget finished containers and deliveries older than the linger time, and any
        that came back (their live series take over)."""
        cutoff = (time.monotonic() if now is None else now) - self.metrics_linger
        for cid in [c for c, (t, _, _) in self.retired_logs.items()
                    if t < cutoff or c in self.containers]:
            del self.retired_logs[cid]
        self.supervisor.prune(cutoff)

    def context_of(self, container_id: str) -> ContainerContext:
        """The live context of an attached container, else the one saved with its logs."""
        return self.enrichment.context_of(container_id)

    async def resolve(self, ref: str) -> str:
        """A container ID from a full or unique partial ID or a name, attached ones first;
        stored ones are looked up in a worker (their saved contexts are files)."""
        found = self.enrichment.resolve_attached(ref)
        if found is not None:
            return found
        return await asyncio.to_thread(self.enrichment.resolve, ref, list(self.containers))
