"""The local store: every entry of a container, kept per container ID, for ``docker logs``.

Files hold the FIFO's own format, ``[4-byte big-endian length][LogEntry protobuf]`` repeated:
what dockerd wrote is kept byte for byte, a batch read from the FIFO is stored with one write and
no per-line copy (see :class:`pylog.frames.Chunk`), and one decoder (:mod:`pylog.frames`) reads
the FIFO and the files alike.

Layout under ``<state-dir>/containers/<container-id>/``: ``container.log`` is written to;
rotation renames it to ``container.log.<seq>`` (seq grows by one each time, so renames never
cascade and a reader can tell which file comes next), and a worker thread compresses that to
``container.log.<seq>.gz``. At most ``max-file`` files are kept, the current one included.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import os
import re
import shutil
import struct
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

from .frames import FrameDecoder

log = logging.getLogger(__name__)

MAX_STORED_FRAME = 64 << 20  # what a stored frame may be (FIFO frames are capped lower)

CURRENT = "container.log"
_ROTATED_RE = re.compile(r"^container\.log\.(\d+)(\.gz)?$")
_LEN = struct.Struct(">I")
CONTAINER_ID_RE = re.compile(r"^[0-9a-f]{64}$")
GZIP_LEVEL = 1  # 20 MiB of log text compresses ~8x at level 1 in ~0.1 s; level 6 gains little for 3x CPU


@dataclass(frozen=True, slots=True)
class StoreOptions:
    max_size: int = 20 * 1024 * 1024
    max_file: int = 5
    compress: bool = True


@dataclass(slots=True)
class StoreStats:
    bytes: int = 0
    rotations: int = 0
    dropped_bytes: int = 0  # frames that could not be written (disk full, I/O error)
    last_error: str = ""


@dataclass(slots=True)
class Snapshot:
    """Open file descriptors on a container's files at one instant, oldest first.

    ``rotated`` are finished files ``(seq, fd, is_gzip)``; ``current`` is the file being written
    (None if there is none yet) and ``current_seq`` the seq it will get when it is rotated.
    """

    rotated: list[tuple[int, int, bool]]
    current: int | None
    current_seq: int
    fds: list[int] = field(default_factory=list)

    def close(self) -> None:
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds.clear()


class ContainerLog:
    """One container's files. All methods run on the event loop thread, except compression."""

    def __init__(self, directory: Path, options: StoreOptions, compressor: Executor) -> None:
        self.directory = directory
        self.options = options
        self.stats = StoreStats()
        self.writers = 0  # live attachments (streams) writing here
        self._compressor = compressor
        self._waiters: set[asyncio.Event] = set()
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        seqs = [s for s, _ in self._rotated_files()]
        self.next_seq = max(seqs, default=0) + 1
        self._fd = os.open(directory / CURRENT, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        self._size = os.fstat(self._fd).st_size
        self._repair_tail()

    def _repair_tail(self) -> None:
        """Cut off a frame a crash left half-written, so new entries do not follow garbage.

        Walks the length prefixes (~60 ms for a full 20 MiB file); only if that does not land
        on the end of the file is it decoded, and cut after its last whole frame. Readers skip
        damage in the middle.
        """
        if self._size == 0:
            return
        data = os.pread(self._fd, self._size, 0)
        pos, end = 0, len(data)
        unpack = _LEN.unpack_from
        while end - pos >= 4:
            nxt = pos + 4 + unpack(data, pos)[0]
            if nxt > end:
                break
            pos = nxt
        if pos == end:
            return
        decoder = FrameDecoder(MAX_STORED_FRAME)
        last = 0
        for chunk in [decoder.feed(data), *decoder.finish()]:
            if chunk.runs:
                last = chunk.base + chunk.runs[-1][1]
        if last < end:
            log.warning("%s: cutting %d bytes of a torn entry off the end of the log",
                        self.directory.name, end - last)
            os.ftruncate(self._fd, last)
            self._size = last

    # ----------------------------------------------------------------- writing

    def append(self, data: bytes, runs: list[tuple[int, int]]) -> None:
        """Keep the whole frames in ``data[start:end]`` for each run, rotating as max-size says.

        Never raises. A run that fits is written as it is; only where a rotation falls inside a
        run are its frames walked to find the boundary.
        """
        view = memoryview(data)
        max_size = self.options.max_size
        for start, end in runs:
            while start < end:
                room = max_size - self._size
                if end - start <= room:
                    self._write(view[start:end])
                    break
                cut = start
                while cut < end:  # the longest prefix of whole frames that fits
                    nxt = cut + 4 + _LEN.unpack_from(data, cut)[0]
                    if nxt - start > room:
                        break
                    cut = nxt
                if cut > start:
                    self._write(view[start:cut])
                    start = cut
                if self._size > 0 and self._rotate():
                    continue
                if cut == start:  # one frame larger than max-size (or no rotation): write it
                    nxt = start + 4 + _LEN.unpack_from(data, start)[0]
                    self._write(view[start:nxt])
                    start = nxt
        self._wake()

    def _write(self, data: memoryview) -> None:
        size = len(data)
        try:
            while data:
                data = data[os.write(self._fd, data):]
        except OSError as e:
            # Keep the file whole: cut off a torn write so readers never see half an entry.
            try:
                os.ftruncate(self._fd, self._size)
            except OSError:
                pass
            self.stats.dropped_bytes += size
            error = f"write: {e}"
            if self.stats.last_error != error:
                log.error("store write failed for %s: %s", self.directory.name, e)
            self.stats.last_error = error
            return
        self._size += size
        self.stats.bytes += size
        if self.stats.last_error.startswith("write:"):
            self.stats.last_error = ""  # writing works again (a rotation error stays shown)

    def _rotate(self) -> bool:
        """Start a new current file; False if that failed (we keep writing to this one)."""
        seq = self.next_seq
        rotated = self.directory / f"{CURRENT}.{seq}"
        try:
            os.rename(self.directory / CURRENT, rotated)
            new_fd = os.open(self.directory / CURRENT, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as e:
            if not os.path.exists(self.directory / CURRENT):
                os.rename(rotated, self.directory / CURRENT)  # undo, keep writing here
            log.error("store rotation failed for %s: %s", self.directory.name, e)
            self.stats.last_error = f"rotate: {e}"
            return False
        os.close(self._fd)
        self._fd = new_fd
        self._size = 0
        self.next_seq = seq + 1
        self.stats.rotations += 1
        self.stats.last_error = ""
        keep = self.options.max_file - 1  # rotated files kept besides the current one
        # Compression and pruning run in one worker thread, in order, so a file is never pruned
        # while it is being compressed (which would leave a stale .gz behind).
        self._compressor.submit(_finish_rotation, self.directory, rotated,
                                keep > 0 and self.options.compress, seq - keep)
        return True

    def _rotated_files(self) -> list[tuple[int, Path]]:
        found = []
        for name in os.listdir(self.directory):
            m = _ROTATED_RE.match(name)
            if m:
                found.append((int(m.group(1)), self.directory / name))
        found.sort()
        return found

    def close(self) -> None:
        try:
            os.close(self._fd)
        except OSError:
            pass
        self._wake()

    # ----------------------------------------------------------------- reading support

    def snapshot(self) -> Snapshot:
        """Open every file now (fds survive later rotation, compression and pruning)."""
        snap = Snapshot(rotated=[], current=None, current_seq=self.next_seq)
        by_seq: dict[int, list[Path]] = {}
        for seq, path in self._rotated_files():
            by_seq.setdefault(seq, []).append(path)
        for seq in sorted(by_seq):
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


def _finish_rotation(directory: Path, rotated: Path, compress: bool, prune_upto: int) -> None:
    """Worker thread: compress the newly rotated file, then delete rotated files <= prune_upto."""
    if compress:
        _compress(rotated)
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return  # the container's logs were removed meanwhile
    for name in names:
        m = _ROTATED_RE.match(name)
        if m and int(m.group(1)) <= prune_upto:
            _unlink(directory / name)


def _compress(path: Path) -> None:
    gz = path.with_name(path.name + ".gz")
    tmp = path.with_name(path.name + ".gz.tmp")
    try:
        with open(path, "rb") as src, gzip.open(tmp, "wb", compresslevel=GZIP_LEVEL) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        os.chmod(tmp, 0o600)
        os.rename(tmp, gz)
        _unlink(path)
    except FileNotFoundError:
        _unlink(tmp)
    except OSError as e:
        log.error("compressing %s failed, keeping it uncompressed: %s", path, e)
        _unlink(tmp)


def write_json_atomic(path: Path, obj: object) -> None:
    """Replace ``path`` with ``obj`` as JSON (mode 0600) so a reader never sees half of it."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f)
    os.rename(tmp, path)


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class Store:
    """All containers' logs under ``<state-dir>/containers``; one ContainerLog per live container."""

    def __init__(self, state_dir: Path, compressor: Executor) -> None:
        self.root = state_dir / "containers"
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._compressor = compressor
        self._open: dict[str, ContainerLog] = {}

    def open(self, container_id: str, options: StoreOptions) -> ContainerLog:
        """The container's log, opened once and shared by every attachment of that container."""
        _check_id(container_id)
        clog = self._open.get(container_id)
        if clog is None:
            clog = self._open[container_id] = ContainerLog(
                self.root / container_id, options, self._compressor
            )
        else:
            clog.options = options
        return clog

    def get(self, container_id: str) -> ContainerLog | None:
        """The open log, or the stored one of a stopped container, or None if there is none."""
        _check_id(container_id)
        clog = self._open.get(container_id)
        if clog is None and (self.root / container_id).is_dir():
            clog = self.open(container_id, StoreOptions())
        return clog

    def release(self, container_id: str) -> None:
        """Close the container's files when nothing writes or reads them any more."""
        clog = self._open.get(container_id)
        if clog is not None and clog.idle:
            clog.close()
            del self._open[container_id]

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
