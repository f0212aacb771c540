"""The local store: every entry of a container, kept per container ID, for ``docker logs``.

Files hold the FIFO's own format, ``[4-byte big-endian length][LogEntry protobuf]`` repeated:
what dockerd wrote is kept byte for byte, a batch read from the FIFO is stored with one write and
no per-line copy (see :class:`pylog.frames.Chunk`), and one decoder (:mod:`pylog.frames`) reads
the FIFO and the files alike.

Layout under ``<state-dir>/containers/<container-id>/``: ``container.log`` is written to;
rotation renames it to ``container.log.<seq>`` (seq grows by one each time, so renames never
cascade and a reader can tell which file comes next), and a worker thread compresses that to
``container.log.<seq>.gz``. At most ``max-file`` files are kept, the current one included.

Retention is a property of the stored log: the container's options are saved beside its files
(``store-options.json``) when it starts logging, and every later opener (a restart, ``pylog
tail``, ReadLogs, a sink catching up) uses them. Opening a log never rotates, prunes or
compresses anything; only writing does, by the container's own options.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from .durable import StateError, read_json, write_json
from .errors import UnknownContainerError
from .frameindex import (
    MARK_EVERY,
    WALK_PIECE,
    WALKED,
    BackgroundWalk,
    WalkState,
    load_walk,
    save_walk,
    walk,
    walk_file,
)
from .frames import DEFAULT_MAX_FRAME as MAX_FRAME
from .rotation import SEQ, first_free_seq, recover_rotation, rotate_files, save_seq
from .storedlog import Snapshot, StoredLog, StoreStats
from .storefiles import CURRENT, file_pieces, finish_rotation, rotated_files, uncompressed_size

__all__ = ["CURRENT", "MARK_EVERY", "SEQ", "WALKED", "Snapshot", "StoreStats", "file_pieces"]

log = logging.getLogger(__name__)

MAX_STORED_FRAME = MAX_FRAME  # the store holds what the FIFO carried, under the same cap
OPTIONS = "store-options.json"  # the container's retention, saved with its log
SPLICE_MIN = 64 << 10  # least bytes one splice may move, also past max-size
_T = TypeVar("_T")
CONTAINER_ID_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class StoreOptions:
    max_size: int = 20 * 1024 * 1024
    max_file: int = 5
    compress: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"max-size": self.max_size, "max-file": self.max_file, "compress": self.compress}

    @classmethod
    def from_json(cls, saved: Any) -> StoreOptions:
        """The options saved with a log; StateError naming what is wrong with them."""
        try:
            size, count, compress = saved["max-size"], saved["max-file"], saved["compress"]
        except (KeyError, TypeError):
            raise StateError(f"not store options: {saved!r}") from None
        if not (isinstance(size, int) and isinstance(count, int) and size > 0 and count > 0
                and isinstance(compress, bool)):
            raise StateError(f"store options out of range: {saved!r}")
        return cls(max_size=size, max_file=count, compress=compress)


def saved_options(directory: Path) -> StoreOptions | None:
    """The options saved with the log in ``directory``, or None (none saved, or unusable: then
    an opener changes nothing and the next writer saves its own)."""
    try:
        saved = read_json(directory / OPTIONS)
        return None if saved is None else StoreOptions.from_json(saved)
    except StateError as e:
        log.warning("%s: the saved store options are unusable (%s); they are saved again when "
                    "the container logs", directory.name, e)
    except OSError as e:
        log.warning("%s: cannot read the saved store options: %s", directory.name, e)
    return None


class ContainerLog(StoredLog):
    """The writer of one container's files (splice, append, rotate, recover); what its readers
    see is :class:`~pylog.storedlog.StoredLog`. Runs on the event loop thread; the walk over a
    file opened again (:mod:`pylog.frameindex`) and compression run in worker threads.

    Bytes reach the current file straight from the FIFO (:meth:`splice_from`, in the kernel:
    nothing read from the FIFO is ever only in pylog's memory, so a crash loses nothing) or
    through :meth:`append`. :meth:`_index` then walks the new bytes by their length prefixes:
    it counts corrupt regions, rotates at a frame boundary, and moves ``frame_end``, the end of
    what readers may read of the current file (a frame still arriving is not theirs yet).
    """

    def __init__(self, directory: Path, options: StoreOptions | None, worker: Executor) -> None:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        # A log stored by a version that saved no options is never rotated by an opener; its
        # next writer saves its own.
        self._saved = saved_options(directory)  # what every later opener will use
        super().__init__(directory, self._saved or StoreOptions())
        self._worker = worker
        if options is not None:
            self.set_options(options)
        recover_rotation(directory)
        self.next_seq = first_free_seq(directory)
        self._fd = os.open(directory / CURRENT, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._size = os.fstat(self._fd).st_size
        # A tail that is half a frame stays: after a crash the rest of that frame is still in
        # the FIFO, and the next splice completes it.
        self.idx = load_walk(directory, self._fd, self.options.max_size, self._size)
        self.frame_end = self.idx.scan
        self.rotated_sizes = {s: uncompressed_size(p) for s, p in rotated_files(directory)}
        self._abandon = False  # abandon_partial asked for while the walk was under way
        self._start_walk()

    def set_options(self, options: StoreOptions) -> None:
        """The writer's options: kept with the log (durably) for every later opener."""
        if options != self._saved:
            try:
                write_json(self.directory / OPTIONS, options.to_json())
                self._saved = options
            except OSError as e:
                log.error("%s: cannot save the store options: %s", self.directory.name, e)
        self.options = options

    # ----------------------------------------------------------------- opening

    def _start_walk(self) -> None:
        """Walk what the saved walk (if any) does not cover: in a worker thread when there is an
        event loop (a GiB takes seconds), else here."""
        if self.idx.scan >= self._size:
            return
        state = replace(self.idx, marks=list(self.idx.marks))
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # a tool or a test without a loop
            self._walked(walk_file(self._fd, state, self._size))
            return
        self._walk = BackgroundWalk(self._fd, state, self._size, self._on_walked,
                                    self.directory.name[:12], self.directory / CURRENT)

    def _on_walked(self, walk: BackgroundWalk, state: WalkState | None) -> None:
        self._walk = None
        if state is not None:
            self._walked(state)
        if self.closed:
            self._close_files()
        elif self._size - self.idx.scan > WALK_PIECE:
            self._start_walk()  # much was written meanwhile: walk that in the worker too
        else:
            if self._abandon and self._size == walk.size:
                self.abandon_partial()
            self._index()  # what was written meanwhile, rotated by the writer's options
        self._abandon = False
        self._wake()

    def _walked(self, state: WalkState) -> None:
        _, regions, _ = state.take_counts()  # found in what was stored before: not "in" now
        self.stats.corrupt += regions
        self.idx = state
        self.frame_end = state.scan

    def abandon_partial(self) -> None:
        """A new stream starts: a half frame at the end (its writer is gone) will never be
        completed. It is cut off (counted as corrupt), so the new frames start on a boundary."""
        if self._walk is not None:
            self._abandon = True  # the walk will say where the last whole frame ends
            return
        scan = self.idx.scan
        if scan < self._size:
            try:
                os.ftruncate(self._fd, scan)
            except OSError as e:
                log.error("cannot cut a half frame off %s: %s", self.directory.name, e)
                return
            self.stats.corrupt += 1
            self.stats.corrupt_regions += 1
            self.stats.corrupt_bytes += self._size - scan
            self._size = scan
            self.idx.in_garbage = False

    # ----------------------------------------------------------------- writing

    def splice_from(self, fifo_fd: int, max_bytes: int) -> int | None:
        """Move up to ``max_bytes`` from the FIFO into the current file, in the kernel.

        Returns the bytes moved, 0 at end of stream, None if the FIFO is empty. OSError if the
        file cannot take them (disk full): they are still in the FIFO then.
        """
        room = self.options.max_size - self._size
        count = min(max_bytes, max(room, SPLICE_MIN))  # rotation copies at most this much
        try:
            n = os.splice(fifo_fd, self._fd, count, offset_dst=self._size,
                          flags=os.SPLICE_F_NONBLOCK | os.SPLICE_F_MOVE)
        except BlockingIOError:
            return None
        if n:
            self._size += n
            self.stats.bytes += n
            self._index()
            if self.stats.last_error.startswith("write:"):
                self.stats.last_error = ""  # writing works again
        return n

    def note_dropped(self, nbytes: int, error: OSError) -> None:
        """The FIFO was read but the bytes could not be kept (disk full): count and report."""
        self.stats.dropped_bytes += nbytes
        text = f"write: {error}"
        if self.stats.last_error != text:
            log.error("store write failed for %s, dropping lines until it works again: %s",
                      self.directory.name, error)
        self.stats.last_error = text
        self._wake()  # the counters changed: whoever waits on the store looks again

    def append(self, data: bytes, runs: list[tuple[int, int]] | None = None) -> None:
        """Keep ``data`` (or the ``[start, end)`` runs of it) at the end of the current file,
        rotating as max-size says. Never raises: a failed write is counted as dropped."""
        view = memoryview(data)
        for start, end in runs if runs is not None else [(0, len(data))]:
            chunk = view[start:end]
            written = 0
            try:
                while written < len(chunk):
                    written += os.pwrite(self._fd, chunk[written:], self._size + written)
            except OSError as e:
                try:
                    os.ftruncate(self._fd, self._size)  # no torn frame in the file
                except OSError:
                    pass
                self.note_dropped(len(chunk), e)
                continue
            self._size += written
            self.stats.bytes += written
            self._index()
            if self.stats.last_error.startswith("write:"):
                self.stats.last_error = ""
        self._wake()

    def _index(self) -> None:
        """Walk the bytes added since the last walk (a splice's worth): count corrupt regions,
        rotate at a frame boundary, and let readers see every whole frame."""
        if self._walk is not None or self.idx.scan >= self._size:
            return
        data = os.pread(self._fd, self._size - self.idx.scan, self.idx.scan)
        start: int | None = 0
        limit: int | None = self.options.max_size
        while start is not None:
            start = walk(self.idx, data, start, limit)
            if start is not None and not self._rotate(self.idx.scan):
                limit = None  # rotation failed: keep writing here, no retry loop
        frames, regions, nbytes = self.idx.take_counts()
        self.stats.frames += frames
        self.stats.corrupt += regions
        self.stats.corrupt_regions += regions
        self.stats.corrupt_bytes += nbytes
        self.frame_end = self.idx.scan
        self._wake()

    def _rotate(self, boundary: int) -> bool:
        """Start a new current file with the bytes after ``boundary``; False if that failed
        (nothing changed then: we keep writing to this one).

        The renames and crash safety: :func:`pylog.rotation.rotate_files`."""
        seq = self.next_seq
        try:
            new_fd = rotate_files(self.directory, self._fd, self._size, seq, boundary)
        except OSError as e:
            log.error("store rotation failed for %s: %s", self.directory.name, e)
            self.stats.last_error = f"rotate: {e}"
            return False
        os.close(self._fd)
        self._fd = new_fd
        self._size = os.fstat(new_fd).st_size
        self.next_seq = seq + 1
        try:
            save_seq(self.directory, self.next_seq)
            saved = True
        except OSError as e:  # the rotated file keeps saying it, as long as it is not pruned
            log.error("cannot save the log sequence of %s: %s", self.directory.name, e)
            self.stats.last_error = f"rotate: {e}"
            saved = False
        self.stats.rotations += 1
        self.rotated_sizes[seq] = boundary
        self.idx.restart()
        # Sizes of pruned files are kept a while: a sink that was reading there counts them.
        for old in [s for s in self.rotated_sizes if s <= seq - 2 * self.options.max_file]:
            del self.rotated_sizes[old]
        if saved and self.stats.last_error.startswith("rotate:"):
            self.stats.last_error = ""
        keep = self.options.max_file - 1  # rotated files kept besides the current one
        self._worker.submit(finish_rotation, self.directory, seq, keep > 0 and
                            self.options.compress, seq - keep if saved else seq - keep - 1)
        return True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self._walk is None:  # else the walk's end closes the files
                self._close_files()
        self._wake()

    def _close_files(self) -> None:
        # Saved so that `docker logs` of a stopped container, which opens its log again each
        # time, does not walk the whole current file again.
        save_walk(self.directory, self._fd, self.options.max_size, self.idx)
        try:
            os.close(self._fd)
        except OSError:
            pass

class Store:
    """All containers' logs under ``<state-dir>/containers``; one ContainerLog per live container."""

    def __init__(self, state_dir: Path, worker: Executor) -> None:
        self.root = state_dir / "containers"
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._worker = worker
        self._open: dict[str, ContainerLog] = {}

    def open(self, container_id: str, options: StoreOptions) -> ContainerLog:
        """The container's log, opened once and shared by every attachment of that container."""
        _check_id(container_id)
        clog = self._open.get(container_id)
        if clog is None:
            clog = self._open[container_id] = ContainerLog(
                self.root / container_id, options, self._worker
            )
        else:
            clog.set_options(options)  # saved only if they are not what is saved already
        return clog

    def get(self, container_id: str) -> ContainerLog | None:
        """The open log, or the stored one of a stopped container opened with its own saved
        options (opening changes no file), or None if there is none."""
        _check_id(container_id)
        clog = self._open.get(container_id)
        if clog is None and (self.root / container_id).is_dir():
            clog = self._open[container_id] = ContainerLog(
                self.root / container_id, None, self._worker)
        return clog

    def stored(self, container_id: str) -> ContainerLog:
        """:meth:`get`, or UnknownContainerError if nothing is stored for the container."""
        clog = self.get(container_id)
        if clog is None:
            raise UnknownContainerError(f"no logs stored for container {container_id[:12]}")
        return clog

    async def reading(self, container_id: str, items: AsyncIterator[_T]) -> AsyncIterator[_T]:
        """``items`` read from the container's log, which is released when they end."""
        try:
            async for item in items:
                yield item
        finally:
            await items.aclose()  # type: ignore[attr-defined]
            self.release(container_id)

    def release(self, container_id: str) -> None:
        """Close the container's files when nothing writes or reads them any more."""
        clog = self._open.get(container_id)
        if clog is not None and clog.idle:
            clog.close()
            del self._open[container_id]

    @property
    def open_count(self) -> int:
        return len(self._open)

    def in_use(self, container_id: str) -> bool:
        clog = self._open.get(container_id)
        return clog is not None and not clog.idle

    def stored_ids(self) -> list[str]:
        return sorted(n for n in os.listdir(self.root) if CONTAINER_ID_RE.match(n))

    def remove(self, container_id: str) -> None:
        """Delete a removed container's logs (the caller checked nothing is attached)."""
        _check_id(container_id)
        clog = self._open.pop(container_id, None)
        if clog is not None:
            clog.close()
        shutil.rmtree(self.root / container_id, ignore_errors=True)

    def close(self) -> None:
        for clog in self._open.values():
            clog.close()
        self._open.clear()


def _check_id(container_id: str) -> None:
    if not CONTAINER_ID_RE.match(container_id):
        raise ValueError(f"invalid container ID {container_id!r}: expected 64 hex characters")
