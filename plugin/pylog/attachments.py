"""Attachments: which FIFO belongs to which container, and the records (one per live FIFO)
that let pylog attach to them again after a restart, when dockerd sends no StartLogging."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import stat
from collections.abc import Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .durable import StateError, read_json, write_json
from .errors import RequestError
from .options import LogOptions
from .record import ContainerContext, select
from .store import ContainerLog
from .stream import FifoStream

log = logging.getLogger(__name__)


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


def in_background(att: Attachment, work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` for the attachment, keeping a reference until it ends."""
    task = asyncio.create_task(work)
    att.tasks.add(task)
    task.add_done_callback(att.tasks.discard)


async def watch_when_walked(att: Attachment) -> None:
    """Start reading the FIFO once the log opened again is walked (and a half frame cut)."""
    await att.container.clog.ready()
    assert att.stream is not None
    att.stream.watch()


async def close_after_grace(att: Attachment, grace: float) -> None:
    """After StopLogging: the stream's end, or after ``grace`` seconds closing it anyway."""
    assert att.stream is not None
    try:
        await asyncio.wait_for(att.stream.done.wait(), grace)
    except TimeoutError:
        log.warning("no end of stream on %s %.0fs after StopLogging; closing it", att.file, grace)
        att.stream.close()


def check_fifo(fifo_dir: str, file: Any) -> str:
    """The real path of StartLogging's FIFO; RequestError naming what is wrong with it."""
    if not isinstance(file, str) or not file:
        raise RequestError("StartLogging: File must be a non-empty string")
    path = os.path.realpath(file)
    if os.path.dirname(path) != fifo_dir:
        raise RequestError(f"StartLogging: File {file!r} is not in {fifo_dir}")
    try:
        st = os.stat(path)
    except OSError as e:
        raise RequestError(f"StartLogging: cannot stat {file}: {e.strerror}") from None
    if not stat.S_ISFIFO(st.st_mode):
        raise RequestError(f"StartLogging: {file} is not a FIFO")
    return path


class AttachmentRecords:
    """``<state-dir>/attachments/<fifo>.json``: {File, Info} of each live FIFO, written
    durably; of the environment and labels only what the options select."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(mode=0o700, exist_ok=True)

    def path(self, fifo: str) -> Path:
        name = os.path.basename(fifo)
        if not re.fullmatch(r"[0-9A-Za-z_.-]{1,128}", name):
            name = hashlib.sha256(fifo.encode()).hexdigest()
        return self.directory / f"{name}.json"

    def save(self, att: Attachment) -> None:
        container = att.container
        info = dict(container.info)
        info["ContainerEnv"] = [f"{k}={v}" for k, v in container.context.env.items()]
        info["ContainerLabels"] = select(dict(info.get("ContainerLabels") or {}),
                                         container.options["labels"],
                                         container.options["labels-regex"])
        try:
            write_json(self.path(att.file), {"File": att.file, "Info": info})
        except OSError as e:
            log.warning("could not persist the attachment of %s: %s", att.file, e)

    def forget(self, fifo: str) -> None:
        self.path(fifo).unlink(missing_ok=True)

    def saved(self) -> Iterator[tuple[Path, Any, Any]]:
        """(record, File, Info) of each saved attachment; a torn record is reported and kept
        aside as ``.bad`` (the FIFO it named may still hold a container's lines)."""
        for path in sorted(self.directory.glob("*.json")):
            try:
                saved = read_json(path)
                if saved is not None:
                    yield path, saved["File"], saved["Info"]
            except StateError as e:
                log.error("cannot re-attach: %s; kept as %s.bad", e, path.name)
                path.rename(path.with_name(path.name + ".bad"))
            except (OSError, KeyError, TypeError) as e:
                log.info("not re-attaching %s: %s", path.name, e)
                path.unlink(missing_ok=True)
