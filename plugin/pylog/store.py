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
import struct
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .durable import StateError, read_json, write_json
from .entry import DecodeError, LogEntry
from .fds import close_all
from .frameindex import MARK_EVERY, WALKED, WalkState, load_walk, save_walk, walk, walk_file
from .frames import DEFAULT_MAX_FRAME as MAX_FRAME
from .storefiles import (
    CURRENT,
    NEXT,
    cut_tail,
    file_pieces,
    finish_rotation,
    rotated_files,
    uncompressed_size,
    unlink,
)

__all__ = ["CURRENT", "MARK_EVERY", "WALKED", "file_pieces", "write_json_atomic"]

log = logging.getLogger(__name__)

MAX_STORED_FRAME = MAX_FRAME  # the store holds what the FIFO carried, under the same cap
SEQ = "seq.json"  # the current file's seq, saved at each rotation (see ContainerLog._save_seq)
OPTIONS = "store-options.json"  # the container's retention, saved with its log
SPLICE_MIN = 64 << 10  # least bytes one splice may move, also past max-size
_LEN = struct.Struct(">I")
CONTAINER_ID_RE = re.compile(r"^[0-9a-f]{64}$")
write_json_atomic = write_json


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


@dataclass(slots=True)
class StoreStats:
    """What this process stored for a container since it opened its log (the metrics read
    these at scrape time; nothing here costs more than an integer add per frame)."""

    bytes: int = 0
    frames: int = 0  # whole frames (log entries) stored: one per line, one per 16 KiB piece
    reads: int = 0  # FIFO reads (splices) that moved bytes
    corrupt: int = 0  # regions of the FIFO's bytes that were no frames (skipped by readers)
    # The same, counting only what arrived since this process opened the log (for the metrics;
    # ``corrupt`` also counts the regions found in the file when it was opened).
    corrupt_regions: int = 0
    corrupt_bytes: int = 0  # bytes in those regions, and half frames cut off a new stream
    rotations: int = 0
    dropped_bytes: int = 0  # frames that could not be written (disk full, I/O error)
    last_error: str = ""

    def carry_over(self, old: StoreStats) -> None:
        """Go on counting from ``old`` (the same container's log, closed and opened again
        while its metrics still showed it), so its counters never go backwards."""
        self.bytes += old.bytes
        self.frames += old.frames
        self.reads += old.reads
        self.corrupt_regions += old.corrupt_regions
        self.corrupt_bytes += old.corrupt_bytes
        self.rotations += old.rotations
        self.dropped_bytes += old.dropped_bytes


@dataclass(slots=True)
class Snapshot:
    """Open file descriptors on a container's files at one instant, oldest first.

    ``rotated`` are finished files ``(seq, fd, is_gzip)``; ``current`` is the file being written
    (None if there is none yet) and ``current_seq`` the seq it will get when it is rotated.
    """

    rotated: list[tuple[int, int, bool]]
    current: int | None
    current_seq: int
    current_end: int = 0  # readers read the current file up to here (whole frames)
    current_marks: list[int] = field(default_factory=list)  # ContainerLog.marks at that instant
    fds: list[int] = field(default_factory=list)

    def close(self) -> None:
        close_all(self.fds)



class ContainerLog:
    """One container's files: the writer (splice, append, rotate, recover) and what readers need
    to follow it. Runs on the event loop thread; the walk over a file opened again
    (:mod:`pylog.frameindex`) and compression run in worker threads.

    Bytes reach the current file straight from the FIFO (:meth:`splice_from`, in the kernel:
    nothing read from the FIFO is ever only in pylog's memory, so a crash loses nothing) or
    through :meth:`append`. :meth:`_index` then walks the new bytes by their length prefixes:
    it counts corrupt regions, rotates at a frame boundary, and moves ``frame_end``, the end of
    what readers may read of the current file (a frame still arriving is not theirs yet).
    """

    def __init__(self, directory: Path, options: StoreOptions | None, worker: Executor) -> None:
        self.directory = directory
        self.stats = StoreStats()
        self.writers = 0  # live attachments (streams) writing here
        self.closed = False
        self._worker = worker
        self._waiters: set[asyncio.Event] = set()
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        # A log stored by a version that saved no options is never rotated by an opener; its
        # next writer saves its own.
        self.options = saved_options(directory) or StoreOptions()
        if options is not None:
            self.set_options(options)
        self._recover_rotation()
        self.next_seq = self._first_free_seq()
        self._fd = os.open(directory / CURRENT, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._size = os.fstat(self._fd).st_size
        # A tail that is half a frame stays: after a crash the rest of that frame is still in
        # the FIFO, and the next splice completes it.
        self.idx = load_walk(directory, self._fd, self.options.max_size, self._size)
        self.frame_end = self.idx.scan  # readers read the current file up to here
        # Uncompressed size of each rotated file by seq, for how far behind a sink is (spool
        # bytes) and what it lost when it fell behind the retention.
        self.rotated_sizes = {s: uncompressed_size(p) for s, p in rotated_files(directory)}
        self._newest: tuple[int, int, int] = (-1, -1, 0)  # (seq, offset, time_nano) cache
        self._walking: asyncio.Future[WalkState] | None = None
        self._walked_event: asyncio.Event | None = None
        self._walk_size = 0  # the file's size when the walk in the worker began
        self._abandon = False  # abandon_partial asked for while the walk was under way
        self._start_walk()

    @property
    def marks(self) -> list[int]:
        """Frame starts in the current file, ascending, about MARK_EVERY apart (0 first): where
        ``docker logs --tail`` starts decoding, from the end backwards."""
        return self.idx.marks

    @property
    def last_frame(self) -> int:
        return self.idx.last_frame

    def set_options(self, options: StoreOptions) -> None:
        """The writer's options: kept with the log (durably) for every later opener."""
        if options != saved_options(self.directory):
            try:
                write_json(self.directory / OPTIONS, options.to_json())
            except OSError as e:
                log.error("%s: cannot save the store options: %s", self.directory.name, e)
        self.options = options

    # ----------------------------------------------------------------- opening

    def _recover_rotation(self) -> None:
        """A crash in the middle of a rotation leaves ``container.log.new`` (the copied tail)
        beside ``container.log``: finish the renames, without the tail twice. Compressing and
        pruning are left to the next rotation (opening changes no file's content)."""
        new = self.directory / NEXT
        if not new.exists():
            return
        current = self.directory / CURRENT
        tail = new.read_bytes()
        if not current.exists():
            # The crash came between the two renames: the rotated file may still hold the tail.
            seqs = [s for s, _ in rotated_files(self.directory)]
            if seqs:
                cut_tail(self.directory / f"{CURRENT}.{max(seqs)}", tail)
        elif current.stat().st_size > 0:
            cut_tail(current, tail)  # the crash came before the cut
            seq = self._first_free_seq()
            os.rename(current, self.directory / f"{CURRENT}.{seq}")
            self._save_seq(seq + 1)
        os.rename(new, current)

    # The current file's seq must never be used again for other bytes: a sink's cursor is a
    # (seq, offset), and a seq taken again would point it into the wrong file. Rotated files
    # alone do not say it once they are pruned (with max-file=1 none is kept), so it is saved
    # at each rotation, before the rotated file can be pruned.

    def _first_free_seq(self) -> int:
        after_rotated = max((s for s, _ in rotated_files(self.directory)), default=0) + 1
        try:
            saved = read_json(self.directory / SEQ)
            return after_rotated if saved is None else max(after_rotated, int(saved["next"]))
        except (StateError, OSError, KeyError, TypeError, ValueError) as e:
            # Past every seq a cursor names: a cursor then re-reads what is kept, never skips.
            seq = max([after_rotated, *(c + 1 for c in cursor_seqs(self.directory))])
            log.warning("%s: the saved log sequence is unusable (%s); taking %d, past every "
                        "file a sink has read", self.directory.name, e, seq)
            return seq

    def _save_seq(self, next_seq: int) -> None:
        write_json(self.directory / SEQ, {"next": next_seq})

    def _start_walk(self) -> None:
        """Walk what the saved walk (if any) does not cover: in a worker thread when there is an
        event loop (a GiB takes seconds), else here."""
        if self.idx.scan >= self._size:
            return
        state = replace(self.idx, marks=list(self.idx.marks))
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a tool or a test without a loop
            self._walked(walk_file(self._fd, state, self._size))
            return
        self._walk_size = self._size
        self._walked_event = self._walked_event or asyncio.Event()
        self._walking = loop.run_in_executor(None, walk_file, self._fd, state, self._size)
        self._walking.add_done_callback(self._on_walked)

    def _on_walked(self, fut: asyncio.Future[WalkState]) -> None:
        self._walking = None
        try:
            self._walked(fut.result())
        except (OSError, asyncio.CancelledError) as e:
            log.error("%s: walking the current file failed: %s", self.directory.name, e)
        if self.closed:
            self._close_files()
        elif self._size - self.idx.scan > 2 * SPLICE_MIN << 4:
            self._start_walk()  # much was written meanwhile: walk that in the worker too
            return
        else:
            if self._abandon and self._size == self._walk_size:
                self.abandon_partial()
            self._index()  # what was written meanwhile, rotated by the writer's options
        self._abandon = False
        assert self._walked_event is not None
        self._walked_event.set()
        self._wake()

    def _walked(self, state: WalkState) -> None:
        _, regions, _ = state.take_counts()  # found in what was stored before: not "in" now
        self.stats.corrupt += regions
        self.idx = state
        self.frame_end = state.scan

    @property
    def walking(self) -> bool:
        """The current file, opened again, is being walked in a worker."""
        return self._walking is not None

    async def ready(self) -> None:
        """Wait until the current file is walked (readers read it up to ``frame_end``)."""
        while self._walking is not None and self._walked_event is not None:
            await self._walked_event.wait()
            if self._walking is not None:
                self._walked_event.clear()

    def abandon_partial(self) -> None:
        """A new stream starts: a half frame at the end (its writer is gone) will never be
        completed. It is cut off (counted as corrupt), so the new frames start on a boundary."""
        if self._walking is not None:
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
        if self._walking is not None or self.idx.scan >= self._size:
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

        Order matters for crashes: the tail is copied into ``container.log.new``, the files
        are renamed, and only then is the rotated file cut at the boundary. A crash before the
        cut leaves the tail in both files, which :meth:`_recover_rotation` or readers see
        once more at most (a duplicate, never a loss).
        """
        seq = self.next_seq
        new_fd = self._rotate_files(seq, boundary)
        if new_fd is None:
            return False
        os.close(self._fd)
        self._fd = new_fd
        self._size = os.fstat(new_fd).st_size
        self.next_seq = seq + 1
        try:
            self._save_seq(self.next_seq)
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

    def _rotate_files(self, seq: int, boundary: int) -> int | None:
        """The renames of a rotation: the new current file's fd, or None (all undone)."""
        new_path = self.directory / NEXT
        current = self.directory / CURRENT
        rotated = self.directory / f"{CURRENT}.{seq}"
        step = "copy"
        new_fd = -1
        try:
            tail = os.pread(self._fd, self._size - boundary, boundary)
            new_fd = os.open(new_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            if tail:
                os.write(new_fd, tail)
            os.rename(current, rotated)
            step = "renamed"
            os.rename(new_path, current)
            step = "both"
            os.ftruncate(self._fd, boundary)  # the rotated file ends at the boundary
            return new_fd
        except OSError as e:
            try:  # undo: the old file (tail and all) stays current
                if step == "both":
                    os.rename(current, new_path)
                if step != "copy":
                    os.rename(rotated, current)
            except OSError:
                log.exception("undoing a failed rotation of %s failed", self.directory.name)
            unlink(new_path)
            if new_fd >= 0:
                os.close(new_fd)
            log.error("store rotation failed for %s: %s", self.directory.name, e)
            self.stats.last_error = f"rotate: {e}"
            return None

    def rotated_seqs(self) -> list[int]:
        return [s for s, _ in rotated_files(self.directory)]

    def _rotated_files(self) -> list[tuple[int, Path]]:
        return rotated_files(self.directory)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self._walking is None:  # else the walk's end closes the files
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

    # ----------------------------------------------------------------- for metrics (scrape time)

    def newest_time(self) -> int | None:
        """The time (ns) of the newest whole entry in the current file, or of the last one seen
        (None if none was): one pread and one parse per change, at scrape time only."""
        last = self.idx.last_frame
        key = (self.next_seq, last)
        if last < 0 or key == self._newest[:2] or self.closed:
            return self._newest[2] or None
        try:
            head = os.pread(self._fd, 4, last)
            (n,) = _LEN.unpack(head)
            body = os.pread(self._fd, n, last + 4)
            t = int(LogEntry.FromString(body).time_nano)
        except (OSError, struct.error, DecodeError):
            return self._newest[2] or None
        self._newest = (key[0], key[1], t)
        return t or None

    def bytes_after(self, seq: int, offset: int) -> int:
        """Stored bytes (uncompressed, whole frames) after position ``(seq, offset)``: how
        far a reader there is behind the end of the log."""
        if seq >= self.next_seq:
            return max(0, self.frame_end - offset)
        total = self.frame_end
        kept = self.next_seq - self.options.max_file  # files up to this one are pruned
        for s, size in self.rotated_sizes.items():
            if s > seq and s > kept:
                total += size
            elif s == seq and s > kept:
                total += max(0, size - offset)
        return total

    @property
    def retention_bytes(self) -> int:
        """What the store keeps of this container at most: max-size x max-file."""
        return self.options.max_size * self.options.max_file

    # ----------------------------------------------------------------- reading support

    def snapshot(self) -> Snapshot:
        """Open every file now (fds survive later rotation, compression and pruning)."""
        snap = Snapshot(rotated=[], current=None, current_seq=self.next_seq,
                        current_end=self.frame_end, current_marks=list(self.idx.marks))
        for seq in sorted(set(self.rotated_seqs())):
            opened = self.open_rotated(seq)
            if opened is not None:
                fd, is_gz = opened
                snap.fds.append(fd)
                snap.rotated.append((seq, fd, is_gz))
        try:
            snap.current = os.open(self.directory / CURRENT, os.O_RDONLY)
            snap.fds.append(snap.current)
        except FileNotFoundError:
            pass
        return snap

    def open_rotated(self, seq: int) -> tuple[int, bool] | None:
        """Open rotated file ``seq``: the plain file while it exists, else its .gz; None if pruned."""
        for suffix, is_gz in (("", False), (".gz", True)):
            try:
                return os.open(self.directory / f"{CURRENT}.{seq}{suffix}", os.O_RDONLY), is_gz
            except FileNotFoundError:
                continue
        return None

    @property
    def idle(self) -> bool:
        """Nothing writes to or follows this log."""
        return self.writers == 0 and not self._waiters

    def waiter(self) -> asyncio.Event:
        ev = asyncio.Event()
        self._waiters.add(ev)
        return ev

    def drop_waiter(self, ev: asyncio.Event) -> None:
        self._waiters.discard(ev)

    def _wake(self) -> None:
        for ev in self._waiters:
            ev.set()

    def wake(self) -> None:
        self._wake()


def cursor_seqs(directory: Path) -> list[int]:
    """The seqs the sinks' cursors (``cursor-<sink>.json``, :class:`pylog.delivery.Cursor`)
    name: what a seq taken after a lost seq.json must be past."""
    seqs = []
    for path in directory.glob("cursor-*.json"):
        try:
            saved = read_json(path)
            if saved is not None:
                seqs.append(int(saved["seq"]))
        except (StateError, OSError, KeyError, TypeError, ValueError):
            continue
    return seqs


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
        elif options != clog.options:
            clog.set_options(options)
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
