"""Reading a container's stored frames from a position on: the one read path.

Every sink's delivery, ``docker logs`` (history and follow) and ``pylog tail`` read through a
:class:`LogReader`. ``await reader.read(max_bytes)`` reads at most about ``max_bytes`` from its
position and decodes them (:func:`pylog.frames.decode_batch`) in a worker thread, so the event
loop never waits on bytes that grow with what is stored; the position then moves on the event
loop, across the current file, rotated files, compressed ones and pruned ones.

What may be read of the current file (``frame_end``) and which file is current (``next_seq``)
are taken on the event loop before a read is handed to the worker: they change only there, a
rotation cuts the old file only at a boundary at or after the ``frame_end`` seen before it, and
an fd opened on the current file reads the same inode after a rotation renamed it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

from .entry import LogEntry
from .frames import Decoded, decode_batch
from .position import Position
from .store import CURRENT, MAX_STORED_FRAME, ContainerLog, Snapshot, file_pieces

log = logging.getLogger(__name__)

_WHOLE_FRAME = MAX_STORED_FRAME + 4  # a read this long holds any frame that starts it
INLINE_BYTES = 256 << 10  # at most this much of the current file is read on the loop (~2 ms)
_P = ParamSpec("_P")
_T = TypeVar("_T")


@dataclass(slots=True)
class Batch:
    """What one :meth:`LogReader.read` found: entries of file ``seq`` (a list of LogEntry, or
    Columns) and the offset after each (Columns: after the last only); or none, and then
    ``at_end``: nothing more is stored yet. ``damage``: bytes skipped as no frame."""

    entries: Sequence[LogEntry] = ()
    ends: list[int] = field(default_factory=list)
    seq: int = 0
    at_end: bool = False
    damage: int = 0


class _Inflated:
    """A compressed rotated file, read forward by uncompressed offset a piece at a time (the
    positions a reader reads at only grow): at most a piece and a batch of it in memory, not
    the whole inflated file (max-size, 20 MB by default and as much as the user sets, per
    container catching up)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._pieces = file_pieces(fd, True)
        self._buf = b""
        self._start = 0  # the uncompressed offset of _buf[0]

    def read(self, off: int, n: int) -> bytes:
        if off < self._start:  # backwards: never in a reader, but start again to be right
            self._pieces, self._buf, self._start = file_pieces(self.fd, True), b"", 0
        while True:
            if off > self._start:  # drop what is behind the position
                cut = min(off - self._start, len(self._buf))
                self._buf, self._start = self._buf[cut:], self._start + cut
            if self._start + len(self._buf) >= off + n:
                break
            piece = next(self._pieces, None)
            if piece is None:
                break  # the end of the file (or of what is not damaged)
            self._buf += piece
        return self._buf[off - self._start:off - self._start + n] if off >= self._start else b""


class _File:
    """One open stored file, read by (uncompressed) offset; the fd is closed with it only if
    the reader opened it (a snapshot's fds are the snapshot's)."""

    def __init__(self, fd: int, is_gz: bool, owned: bool) -> None:
        self.fd = fd
        self.owned = owned
        self._gz = _Inflated(fd) if is_gz else None

    @property
    def compressed(self) -> bool:
        return self._gz is not None

    def read(self, off: int, n: int) -> bytes:
        return self._gz.read(off, n) if self._gz is not None else os.pread(self.fd, n, off)

    def close(self) -> None:
        if self.owned:
            os.close(self.fd)


def _read_step(f: _File, off: int, want: int, room: int | None,
               columns: bool) -> tuple[Decoded, bool]:
    """Worker thread: read and decode at most ``want`` bytes at ``off`` (of the current file no
    more than ``room``; None: a finished file, read to its end); True as second value if the
    file may hold more after what was read."""
    n = want if room is None else min(want, room)
    while True:
        data = f.read(off, n)
        more = len(data) == n and (room is None or n < room)
        dec = decode_batch(data, MAX_STORED_FRAME, columns, final=room is None and not more)
        bigger = _WHOLE_FRAME if room is None else min(_WHOLE_FRAME, room)
        if dec.entries or dec.consumed or not more or bigger <= n:
            return dec, more
        n = bigger  # a frame longer than one read starts here: read it whole


class _Live:
    """The files of a container's log as they are now (a delivery, a follower)."""

    def __init__(self, clog: ContainerLog) -> None:
        self.clog = clog

    def current(self) -> tuple[int, int]:
        """The current file's seq and where its whole frames end (taken on the loop)."""
        return self.clog.next_seq, self.clog.frame_end

    def seqs(self) -> list[int]:
        return self.clog.rotated_seqs()

    def open(self, seq: int) -> _File | None:
        if seq < self.clog.next_seq:
            opened = self.clog.open_rotated(seq)
            return None if opened is None else _File(*opened, owned=True)
        try:
            return _File(os.open(self.clog.directory / CURRENT, os.O_RDONLY), False, True)
        except FileNotFoundError:
            return None


class _Frozen:
    """The files of a :class:`Snapshot` (``docker logs`` history): what was stored when it
    was taken, whatever rotation and pruning did since. Its files are numbered by their place
    in the snapshot (rotated ones oldest first, then the current one), not by seq."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def current(self) -> tuple[int, int]:
        return len(self.snap.rotated), self.snap.current_end

    def seqs(self) -> list[int]:
        return list(range(len(self.snap.rotated)))

    def open(self, index: int) -> _File | None:
        if index < len(self.snap.rotated):
            _seq, fd, gz = self.snap.rotated[index]
            return _File(fd, gz, owned=False)
        return None if self.snap.current is None else _File(self.snap.current, False, False)


class LogReader:
    """Reads a container's stored frames from a position on, across rotations.

    ``LogReader(clog, pos)`` reads the log as it grows (``pos`` None: from the oldest stored
    frame). With ``snapshot``, it reads only what the snapshot holds, from its oldest file
    (positions then number the snapshot's files, not seqs), and owns and closes it. One read
    at a time; the position changes only on the event loop.
    """

    def __init__(self, clog: ContainerLog, pos: Position | None,
                 snapshot: Snapshot | None = None) -> None:
        self.clog = clog
        self._source: _Live | _Frozen = _Live(clog) if snapshot is None else _Frozen(snapshot)
        self._snapshot = snapshot
        if pos is None:
            pos = Position(min(self._source.seqs(), default=self._source.current()[0]), 0)
        self.pos = pos
        self.dropped_bytes = 0  # pruned before it was read (uncompressed bytes)
        self.fell_behind = 0  # times that happened
        self._file: _File | None = None
        self._open_seq = -1
        self._busy: asyncio.Future[Any] | None = None  # the worker's job in flight

    async def read(self, max_bytes: int, columns: bool = False) -> Batch:
        """Whole entries from the position on (about ``max_bytes`` of frames at most, more
        only for one frame longer than that), or none and ``at_end``. With ``columns``, whole
        lines may come as :class:`pylog.frames.Columns`."""
        damage = 0
        while True:
            f = self._opened()
            seq, off = self.pos.seq, self.pos.offset
            current_seq, frame_end = self._source.current()
            # Of the current file, only whole frames are ours to read.
            room = None if seq < current_seq else frame_end - off
            if f is None or (room is not None and room <= 0):
                return Batch(seq=seq, at_end=True, damage=damage)
            if room is not None and room <= INLINE_BYTES and not f.compressed:
                # The few frames just written (a reader following the writer): a worker's
                # handoff and wakeups would cost more than decoding them here.
                dec, more = _read_step(f, off, max_bytes, room, columns)
            else:
                dec, more = await self.in_worker(_read_step, f, off, max_bytes, room, columns)
            damage += dec.damage
            if dec.entries:
                self.pos = Position(seq, off + dec.consumed)
                return Batch(dec.entries, [off + e for e in dec.ends], seq, False, damage)
            # No whole frame: skip what the decoder skipped (one byte at least, if more
            # follows), then read on; a finished file is done (a torn tail skipped).
            self.pos = Position(seq, off + max(dec.consumed, 1 if more else 0))
            if more:
                continue
            if room is None:
                self.pos = Position(seq + 1, 0)
                continue
            return Batch(seq=seq, at_end=True, damage=damage)

    async def in_worker(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """``fn`` in a worker thread, on this reader's files: :meth:`close` lets them go only
        once it has returned, also if the caller was cancelled meanwhile."""
        if self._busy is not None and not self._busy.done():
            raise RuntimeError("a LogReader does one read at a time")
        job = asyncio.ensure_future(asyncio.to_thread(fn, *args, **kwargs))
        job.add_done_callback(_retrieved)
        self._busy = job
        return await asyncio.shield(job)

    def close(self) -> None:
        """Let go of the open file (and the snapshot): now, or when the worker's job ends."""
        f, self._file, self._open_seq = self._file, None, -1
        snap, self._snapshot = self._snapshot, None

        def release() -> None:
            if f is not None:
                f.close()
            if snap is not None:
                snap.close()

        if self._busy is not None and not self._busy.done():
            self._busy.add_done_callback(lambda _: release())
        else:
            release()

    def _opened(self) -> _File | None:
        """The file at the position, opened; None if there is none (yet). A pruned file is
        counted as lost and the oldest one still there is next."""
        while self._open_seq != self.pos.seq:
            if self._file is not None:
                self._file.close()
                self._file, self._open_seq = None, -1
            seq = self.pos.seq
            current_seq = self._source.current()[0]
            self._file = self._source.open(seq)
            if self._file is not None:
                self._open_seq = seq
            elif seq < current_seq:
                self._skip_pruned(seq, current_seq)
            else:
                return None
        return self._file

    def _skip_pruned(self, seq: int, current_seq: int) -> None:
        nxt = min([s for s in self._source.seqs() if s > seq], default=current_seq)
        sizes = self.clog.rotated_sizes
        lost = max(0, sizes.get(seq, 0) - self.pos.offset) + sum(
            sizes.get(s, 0) for s in range(seq + 1, nxt))
        log.warning("%s: a reader fell behind the store's retention; files %d..%d (%d bytes) "
                    "were deleted before it read them", self.clog.directory.name, seq, nxt - 1,
                    lost)
        self.dropped_bytes += lost
        self.fell_behind += 1
        self.pos = Position(nxt, 0)


def _retrieved(job: asyncio.Future[Any]) -> None:
    """Mark a worker job's failure as seen (its awaiter may have been cancelled)."""
    if not job.cancelled():
        job.exception()
