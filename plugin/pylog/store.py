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
import zlib
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from itertools import accumulate, repeat
from operator import add
from pathlib import Path

from .entry import DecodeError, LogEntry
from .fds import close_all
from .frames import DEFAULT_MAX_FRAME as MAX_FRAME
from .frames import frame_at, frame_lengths, next_sync

log = logging.getLogger(__name__)
_GZIP = 16 + zlib.MAX_WBITS  # zlib's wbits for the gzip format
MARK_EVERY = 1 << 20  # a known frame start in the current file at least every MiB (marks)

MAX_STORED_FRAME = MAX_FRAME  # the store holds what the FIFO carried, under the same cap

CURRENT = "container.log"
NEXT = "container.log.new"  # the next current file, while a rotation is under way
WALKED = "walked.json"  # where the walk over the current file got to, saved when it is closed
SEQ = "seq.json"  # the current file's seq, saved at each rotation (see ContainerLog._save_seq)
SPLICE_MIN = 64 << 10  # least bytes one splice may move, also past max-size
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
    """One container's files. All methods run on the event loop thread, except compression.

    Bytes reach the current file straight from the FIFO (:meth:`splice_from`, in the kernel:
    nothing read from the FIFO is ever only in pylog's memory, so a crash loses nothing) or
    through :meth:`append`. :meth:`_index` then walks the new bytes by their length prefixes:
    it counts corrupt regions, rotates at a frame boundary, and moves ``frame_end``, the end of
    what readers may read of the current file (a frame still arriving is not theirs yet).
    """

    def __init__(self, directory: Path, options: StoreOptions, compressor: Executor) -> None:
        self.directory = directory
        self.options = options
        self.stats = StoreStats()
        self.writers = 0  # live attachments (streams) writing here
        self.closed = False
        self._compressor = compressor
        self._waiters: set[asyncio.Event] = set()
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._recover_rotation()
        self.next_seq = self._first_free_seq()
        self._fd = os.open(directory / CURRENT, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._size = os.fstat(self._fd).st_size
        self._scan = 0  # where the walk over the current file goes on
        self.frame_end = 0  # readers read the current file up to here
        self.last_frame = -1  # where the newest whole frame of the current file starts
        # Frame starts in the current file, ascending, about MARK_EVERY apart (0 first): where
        # `docker logs --tail` starts decoding, from the end backwards, instead of at 0.
        self.marks: list[int] = [0]
        self._in_garbage = False
        # Uncompressed size of each rotated file by seq, for how far behind a sink is (spool
        # bytes) and what it lost when it fell behind the retention.
        self.rotated_sizes: dict[int, int] = {}
        self._newest: tuple[int, int, int] = (-1, -1, 0)  # (seq, offset, time_nano) cache
        # A tail that is half a frame stays: after a crash the rest of that frame is still in
        # the FIFO, and the next splice completes it.
        self._load_walk()
        self._index()
        # What was stored before this process opened the log is not "in" (nor dropped) now.
        self.stats.frames = self.stats.corrupt_regions = self.stats.corrupt_bytes = 0
        for seq, path in self._rotated_files():
            if seq not in self.rotated_sizes:
                self.rotated_sizes[seq] = _uncompressed_size(path)

    def _recover_rotation(self) -> None:
        """A crash in the middle of a rotation leaves ``container.log.new`` (the copied tail)
        beside ``container.log``: finish the rotation, without the tail twice."""
        new = self.directory / NEXT
        if not new.exists():
            return
        current = self.directory / CURRENT
        tail = new.read_bytes()
        if not current.exists():
            # The crash came between the two renames: the rotated file may still hold the tail.
            seqs = [s for s, _ in self._rotated_files()]
            if seqs:
                _cut_tail(self.directory / f"{CURRENT}.{max(seqs)}", tail)
        elif current.stat().st_size > 0:
            _cut_tail(current, tail)  # the crash came before the cut
            seq = self._first_free_seq()
            os.rename(current, self.directory / f"{CURRENT}.{seq}")
            self._save_seq(seq + 1)
            keep = self.options.max_file - 1
            self._compressor.submit(_finish_rotation, self.directory,
                                    self.directory / f"{CURRENT}.{seq}",
                                    keep > 0 and self.options.compress, seq - keep)
        os.rename(new, current)

    # The current file's seq must never be used again for other bytes: a sink's cursor is a
    # (seq, offset), and a seq taken again would point it into the wrong file. Rotated files
    # alone do not say it once they are pruned (with max-file=1 none is kept), so it is saved
    # at each rotation, before the rotated file can be pruned. Without it, a restart with
    # max-file=1 started again at seq 1, and a delivery whose cursor said seq 4 read the new
    # current file from the old offset: 30 of 45 lines were skipped, uncounted.

    def _first_free_seq(self) -> int:
        seqs = [s for s, _ in self._rotated_files()]
        try:
            saved = int(json.loads((self.directory / SEQ).read_text())["next"])
        except (OSError, ValueError, KeyError, TypeError):
            saved = 0
        return max(max(seqs, default=0) + 1, saved)

    def _save_seq(self, next_seq: int) -> None:
        write_json_atomic(self.directory / SEQ, {"next": next_seq})

    def abandon_partial(self) -> None:
        """A new stream starts: a half frame at the end (its writer is gone) will never be
        completed. It is cut off (counted as corrupt), so the new frames start on a boundary."""
        if self._scan < self._size:
            try:
                os.ftruncate(self._fd, self._scan)
            except OSError as e:
                log.error("cannot cut a half frame off %s: %s", self.directory.name, e)
                return
            self.stats.corrupt += 1
            self.stats.corrupt_regions += 1
            self.stats.corrupt_bytes += self._size - self._scan
            self._size = self._scan
            self._in_garbage = False

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
        """Walk the bytes added since the last walk: count corrupt regions, rotate at a frame
        boundary, and let readers see every whole frame."""
        if self._scan >= self._size:
            return
        data = os.pread(self._fd, self._size - self._scan, self._scan)
        if not self._in_garbage and self._index_whole_frames(data):
            return
        base = self._scan  # file offset of data[0]
        pos = 0
        # Per frame only local variables change (one add for the count, one store for where
        # the newest frame starts): the walk is the hot path of every byte pylog stores.
        frames = 0
        last = -1
        in_garbage = self._in_garbage
        limit = self.options.max_size - base  # a frame ending past this in data rotates
        while True:
            end = frame_at(data, pos, MAX_FRAME)
            if end == 0:
                break
            if end < 0:
                if not in_garbage:
                    self.stats.corrupt += 1
                    self.stats.corrupt_regions += 1
                    in_garbage = True
                skip = next_sync(data, pos, MAX_FRAME)
                self.stats.corrupt_bytes += skip - pos
                pos = skip
                continue
            in_garbage = False
            if end > limit and base + pos > 0:
                base, limit = self._rotate_before(base, pos)
            last = pos
            frames += 1
            pos = end
        self._in_garbage = in_garbage
        self._indexed(frames, base + last, base + pos)

    def _rotate_before(self, base: int, start: int) -> tuple[int, int]:
        """The frame at ``start`` in the bytes being walked (file offset ``base + start``) would
        take the file past max-size: it starts the next file. The walk's new ``base`` (file
        offset of the bytes' start) and ``limit`` (a frame ending past it rotates)."""
        if not self._rotate(base + start):
            return base, 1 << 62  # rotation failed: keep writing here, no retry loop
        return -start, self.options.max_size + start

    def _indexed(self, frames: int, last_frame: int, scan: int) -> None:
        """A walk found ``frames`` more whole frames, the newest at ``last_frame``, and got to
        ``scan``: readers may read up to there."""
        if frames:
            self.stats.frames += frames
            self.last_frame = last_frame
            if not self._in_garbage and scan - self.marks[-1] >= MARK_EVERY:
                self.marks.append(scan)
        self._scan = scan
        self.frame_end = scan
        self._wake()

    def _index_whole_frames(self, data: bytes) -> bool:
        """:meth:`_index` when ``data`` is plainly good frames (the usual case): they are found
        in C (:func:`pylog.frames.frame_lengths`) and only rotations take Python steps.
        False (nothing done) if the bytes need the frame-by-frame walk."""
        lengths = frame_lengths(data, MAX_FRAME)
        if lengths is None:
            return False
        base = self._scan  # file offset of data[0]
        end = 4 * len(lengths) + sum(lengths)
        if base + end <= self.options.max_size:  # no rotation: no list of frame ends needed
            if end > MARK_EVERY:  # a long walk (a file opened again): marks along the way
                self._mark(base, list(accumulate(map(add, lengths, repeat(4)))))
            self._indexed(len(lengths), base + end - 4 - lengths[-1], base + end)
            return True
        ends = list(accumulate(map(add, lengths, repeat(4))))
        limit = self.options.max_size - base  # a frame ending past this rotates
        i = 0
        while True:
            i = bisect_right(ends, limit, lo=i)  # the first frame that ends past the limit
            if i >= len(ends):
                break
            start = ends[i - 1] if i else 0
            if base + start > 0:  # (a frame bigger than max-size alone stays where it is)
                base, limit = self._rotate_before(base, start)
            i += 1
        self._indexed(len(ends), base + (ends[-2] if len(ends) > 1 else 0), base + ends[-1])
        return True

    def _mark(self, base: int, ends: list[int]) -> None:
        """Marks among frame ``ends`` (offsets after each frame in bytes that start at file
        offset ``base``), one at least every MARK_EVERY; the last end is :meth:`_indexed`'s."""
        i = 0
        while True:
            i = bisect_left(ends, self.marks[-1] + MARK_EVERY - base, lo=i)
            if i >= len(ends) - 1:
                return
            self.marks.append(base + ends[i])

    def _rotate(self, boundary: int) -> bool:
        """Start a new current file with the bytes after ``boundary``; False if that failed
        (nothing changed then: we keep writing to this one).

        Order matters for crashes: the tail is copied into ``container.log.new``, the files
        are renamed, and only then is the rotated file cut at the boundary. A crash before the
        cut leaves the tail in both files, which :meth:`_recover_rotation` or readers see
        once more at most (a duplicate, never a loss).
        """
        seq = self.next_seq
        new_path = self.directory / NEXT
        current = self.directory / CURRENT
        rotated = self.directory / f"{CURRENT}.{seq}"
        renamed = False
        try:
            tail = os.pread(self._fd, self._size - boundary, boundary)
            new_fd = os.open(new_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                if tail:
                    os.write(new_fd, tail)
                os.rename(current, rotated)
                renamed = True
                os.rename(new_path, current)
            except OSError:
                os.close(new_fd)
                raise
        except OSError as e:
            if renamed:
                try:
                    os.rename(rotated, current)  # undo: the old file stays current
                except OSError:
                    log.exception("undoing a failed rotation of %s failed", self.directory.name)
            _unlink(new_path)
            log.error("store rotation failed for %s: %s", self.directory.name, e)
            self.stats.last_error = f"rotate: {e}"
            return False
        try:
            os.ftruncate(self._fd, boundary)  # the rotated file ends at the boundary
        except OSError as e:
            try:  # undo: the old file (tail and all) stays current
                os.rename(current, new_path)
                os.rename(rotated, current)
                _unlink(new_path)
            except OSError:
                log.exception("undoing a failed rotation of %s failed", self.directory.name)
            os.close(new_fd)
            log.error("store rotation failed for %s: %s", self.directory.name, e)
            self.stats.last_error = f"rotate: {e}"
            return False
        os.close(self._fd)
        self._fd = new_fd
        self._size = len(tail)
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
        self.last_frame = -1  # the walk that rotated sets it again (the frame that did not fit)
        self.marks = [0]
        # Sizes of pruned files are kept a while: a sink that was reading there counts them.
        for old in [s for s in self.rotated_sizes if s <= seq - 2 * self.options.max_file]:
            del self.rotated_sizes[old]
        if saved and self.stats.last_error.startswith("rotate:"):
            self.stats.last_error = ""
        keep = self.options.max_file - 1  # rotated files kept besides the current one
        # Compression and pruning run in one worker thread, in order, so a file is never pruned
        # while it is being compressed (which would leave a stale .gz behind).
        self._compressor.submit(_finish_rotation, self.directory,
                                self.directory / f"{CURRENT}.{seq}",
                                keep > 0 and self.options.compress,
                                seq - keep if saved else seq - keep - 1)
        return True

    def rotated_seqs(self) -> list[int]:
        """The seqs of the rotated files on disk now, ascending."""
        return [seq for seq, _ in self._rotated_files()]

    def _rotated_files(self) -> list[tuple[int, Path]]:
        found = []
        for name in os.listdir(self.directory):
            m = _ROTATED_RE.match(name)
            if m:
                found.append((int(m.group(1)), self.directory / name))
        found.sort()
        return found

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._save_walk()
            try:
                os.close(self._fd)
            except OSError:
                pass
        self._wake()

    # The walk over the current file, saved when the log is closed and taken up again when it is
    # opened, if the file is still the very same (inode, size, modification time): `docker
    # logs` of a stopped container opens the log again (dockerd starts a logger for it), and
    # walking a 20 MB current file each time cost ~0.1 s of the answer (bench/bench_logs.py,
    # --tail 1000). After a crash, or if anything changed the file, it is walked as before.

    def _walk_key(self) -> list[int]:
        st = os.fstat(self._fd)
        return [st.st_ino, st.st_size, st.st_mtime_ns, self.options.max_size]

    def _save_walk(self) -> None:
        try:
            write_json_atomic(self.directory / WALKED, {
                "file": self._walk_key(), "scan": self._scan, "last_frame": self.last_frame,
                "marks": self.marks, "in_garbage": self._in_garbage})
        except OSError as e:
            log.debug("%s: could not save the walk: %s", self.directory.name, e)

    def _load_walk(self) -> None:
        path = self.directory / WALKED
        try:
            saved = json.loads(path.read_text())
            os.unlink(path)  # good for this opening only: the file changes from now on
            if saved["file"] != self._walk_key():
                return
            scan, last, marks = int(saved["scan"]), int(saved["last_frame"]), saved["marks"]
            if not (0 <= scan <= self._size and -1 <= last < scan and marks and marks[0] == 0
                    and all(isinstance(m, int) and 0 <= m <= scan for m in marks)):
                return
        except (OSError, ValueError, KeyError, TypeError):
            return
        self._scan = self.frame_end = scan
        self.last_frame = last
        self.marks = sorted(marks)
        self._in_garbage = bool(saved.get("in_garbage"))

    # ----------------------------------------------------------------- for metrics (scrape time)

    def newest_time(self) -> int | None:
        """The time (ns) of the newest whole entry in the current file, or of the last one seen
        (None if none was): one pread and one parse per change, at scrape time only."""
        key = (self.next_seq, self.last_frame)
        if self.last_frame < 0 or key == self._newest[:2] or self.closed:
            return self._newest[2] or None
        try:
            head = os.pread(self._fd, 4, self.last_frame)
            (n,) = _LEN.unpack(head)
            body = os.pread(self._fd, n, self.last_frame + 4)
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
                        current_end=self.frame_end, current_marks=list(self.marks))
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


def _uncompressed_size(path: Path) -> int:
    """A rotated file's content size: its own size, or a .gz's trailer (ISIZE, mod 2**32: the
    files are far smaller than 4 GiB)."""
    try:
        if path.name.endswith(".gz"):
            with open(path, "rb") as f:
                f.seek(-4, os.SEEK_END)
                return int(struct.unpack("<I", f.read(4))[0])
        return path.stat().st_size
    except (OSError, struct.error):
        return 0


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


def _cut_tail(path: Path, tail: bytes) -> None:
    """Cut ``tail`` off the end of ``path`` if that is how the file ends."""
    try:
        with open(path, "r+b") as f:
            size = f.seek(0, os.SEEK_END)
            if tail and size >= len(tail):
                f.seek(size - len(tail))
                if f.read(len(tail)) == tail:
                    f.truncate(size - len(tail))
    except OSError:
        pass


def file_pieces(fd: int, is_gzip: bool, size: int | None = None, piece: int = 1 << 20,
                start: int = 0) -> Iterator[bytes]:
    """A stored file's bytes, about ``piece`` bytes at a time (inflated on the way if
    compressed): the current file up to ``size`` (where its last whole frame ends), a rotated
    one to its end; a damaged compressed file gives what came before the damage.

    Reading a piece at a time keeps `docker logs` of a big container (pylog.logreader) and a
    sink catching up through compressed files (pylog.delivery) from holding whole files. For
    `docker logs` of 1,000,000 lines (bench/bench_logs.py, pieces decoded as Columns): pylog's
    peak RSS while answering 710 -> 143 MB (56 MB before the read), its CPU 3.8 -> 1.8 s, the
    time 1.43x -> 1.14x json-file's. A plain file is read from ``start`` (a frame start)."""
    offset = start
    if not is_gzip:
        while size is None or offset < size:
            data = os.pread(fd, piece if size is None else min(piece, size - offset), offset)
            if not data:
                return
            offset += len(data)
            yield data
        return
    assert start == 0, "a compressed file is read from its start"
    inflate = zlib.decompressobj(_GZIP)
    started = False  # inflate has had input of a member that has not ended
    pending = b""
    try:
        while True:
            if not pending:
                pending = os.pread(fd, piece, offset)
                offset += len(pending)
                if not pending:
                    if started:
                        log.error("a compressed log file ends early; its last lines are lost")
                    return
            data = inflate.decompress(pending, piece)
            started = True
            if inflate.eof:  # the end of one gzip member; another may follow
                pending = inflate.unused_data
                inflate = zlib.decompressobj(_GZIP)
                started = False
            else:
                pending = inflate.unconsumed_tail
            if data:
                yield data
    except zlib.error as e:
        log.error("a compressed log file is damaged, skipping the rest of it: %s", e)


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
