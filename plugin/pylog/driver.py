"""Which containers are attached, one stream per FIFO, and the store they write to.

The API layer calls :meth:`Driver.start_logging`, :meth:`Driver.stop_logging` and
:meth:`Driver.read_logs`; everything here answers at once and does its slow work in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .docker_api import DockerAPI
from .frames import Chunk
from .errors import RequestError, UnknownContainerError
from .logreader import ReadConfig, read_logs
from .options import LogOptions, parse_log_options
from .reassembly import Line
from .store import CONTAINER_ID_RE, ContainerLog, Store, StoreOptions
from .stream import FifoStream

log = logging.getLogger(__name__)

DEFAULT_FIFO_DIR = "/run/docker/logging"
STOP_GRACE = 10.0  # seconds to wait for end of stream after StopLogging before closing anyway


@dataclass(eq=False)
class Attachment:
    """One StartLogging: a FIFO, the container it belongs to, and where its entries go."""

    file: str
    info: Mapping[str, Any]
    options: LogOptions
    container_id: str
    clog: ContainerLog
    stream: FifoStream | None = None
    stopping: bool = False
    lines: int = 0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def container_name(self) -> str:
        return str(self.info.get("ContainerName") or "").lstrip("/")


LineConsumer = Callable[[Attachment, list[Line]], None]


class Driver:
    def __init__(self, state_dir: Path, fifo_dir: str = DEFAULT_FIFO_DIR,
                 docker: DockerAPI | None = None, gc_interval: float = 300.0) -> None:
        self.state_dir = state_dir
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(state_dir, 0o700)
        self.fifo_dir = os.path.realpath(fifo_dir)
        self._compressor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pylog-compress")
        self.store = Store(state_dir, self._compressor)
        self.attachments: dict[str, Attachment] = {}
        self.line_consumers: list[LineConsumer] = []
        self.docker = docker
        self.gc_interval = gc_interval
        self._gc_task: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        if self.docker is not None and self.gc_interval > 0:
            self._gc_task = asyncio.create_task(self._gc_loop(), name="pylog-gc")

    async def close(self) -> None:
        if self._gc_task is not None:
            self._gc_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._gc_task
        for att in list(self.attachments.values()):
            if att.stream is not None:
                att.stream.close()
        self.store.close()
        self._compressor.shutdown(wait=True)

    # ----------------------------------------------------------------- protocol

    def start_logging(self, file: Any, info: Any) -> Attachment:
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
        clog = self.store.open(container_id, StoreOptions(
            max_size=options["max-size"], max_file=options["max-file"],
            compress=options["compress"]))
        att = Attachment(file=fifo, info=info, options=options, container_id=container_id,
                         clog=clog)
        stream = FifoStream(fifo, lambda chunk, lines: self._on_batch(att, chunk, lines),
                            lambda: self._on_end(att),
                            wants_lines=lambda: bool(self.line_consumers))
        try:
            stream.start()
        except OSError as e:
            self.store.release(container_id)
            raise RequestError(f"StartLogging: cannot open {fifo}: {e.strerror}") from None
        att.stream = stream
        clog.writers += 1
        self.attachments[fifo] = att
        log.info("attached %s (%s) on %s", att.container_name, container_id[:12], fifo)
        return att

    def stop_logging(self, file: Any) -> None:
        """Answer at once: dockerd closes its end only after our reply, which ends the stream."""
        if not isinstance(file, str) or not file:
            raise RequestError("StopLogging: File must be a non-empty string")
        att = self.attachments.get(os.path.realpath(file))
        if att is None:
            raise RequestError(f"StopLogging: {file} is not attached")
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
        return self._read_and_release(clog, container_id, cfg)

    async def _read_and_release(self, clog: ContainerLog, container_id: str,
                                cfg: ReadConfig) -> AsyncIterator[bytes]:
        try:
            async for chunk in read_logs(clog, cfg):
                yield chunk
        finally:
            self.store.release(container_id)

    # ----------------------------------------------------------------- the hot path

    def _on_batch(self, att: Attachment, chunk: Chunk, lines: list[Line]) -> None:
        if chunk.runs:
            att.clog.append(chunk.data, chunk.runs)
        if lines:
            att.lines += len(lines)
            for consumer in self.line_consumers:
                consumer(att, lines)

    def _on_end(self, att: Attachment) -> None:
        self.attachments.pop(att.file, None)
        att.clog.writers -= 1
        att.clog.wake()
        stats = att.stream.decoder.stats if att.stream else None
        log.info("detached %s (%s): %d entries, %d corrupt frames skipped", att.container_name,
                 att.container_id[:12], stats.frames if stats else 0, stats.corrupt if stats else 0)
        self.store.release(att.container_id)

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
        attached = {a.container_id for a in self.attachments.values()}
        removed = []
        for cid in self.store.stored_ids():
            if cid not in existing and cid not in attached and not self.store.in_use(cid):
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
