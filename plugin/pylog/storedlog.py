"""What the readers of a container's log see of it (:class:`StoredLog`): its files, where the
current file's whole frames end, the marks to read it backwards from, a way to wait for more,
and the counters the metrics read. The writer (:class:`pylog.store.ContainerLog`) keeps them."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .fds import close_all
from .frameindex import WalkState
from .frames import entry_at
from .storefiles import CURRENT, rotated_files

if TYPE_CHECKING:
    from .frameindex import BackgroundWalk
    from .store import StoreOptions

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


class StoredLog:
    """A container's stored log as its readers see it; all on the event loop thread."""

    def __init__(self, directory: Path, options: StoreOptions) -> None:
        self.directory = directory
        self.options = options
        self.stats = StoreStats()
        self.writers = 0  # live attachments (streams) writing here
        self.closed = False
        self.next_seq = 1  # the seq the current file gets when it is rotated
        self.frame_end = 0  # readers read the current file up to here
        self.idx = WalkState()
        # Uncompressed size of each rotated file by seq, for how far behind a sink is (spool
        # bytes) and what it lost when it fell behind the retention.
        self.rotated_sizes: dict[int, int] = {}
        self._fd = -1  # the current file
        self._newest: tuple[int, int, int] = (-1, -1, 0)  # (seq, offset, time_nano) cache
        self._walk: BackgroundWalk | None = None
        self._waiters: set[asyncio.Event] = set()

    @property
    def marks(self) -> list[int]:
        """Frame starts in the current file, ascending, about MARK_EVERY apart (0 first): where
        ``docker logs --tail`` starts decoding, from the end backwards."""
        return self.idx.marks

    @property
    def last_frame(self) -> int:
        return self.idx.last_frame

    @property
    def walking(self) -> bool:
        """The current file, opened again, is being walked in a worker."""
        return self._walk is not None

    async def ready(self) -> None:
        """Wait until the current file is walked (readers read it up to ``frame_end``)."""
        while self._walk is not None:
            await self._walk.done.wait()

    def rotated_seqs(self) -> list[int]:
        return [s for s, _ in rotated_files(self.directory)]

    # ----------------------------------------------------------------- for metrics (scrape time)

    def newest_time(self) -> int | None:
        """The time (ns) of the newest whole entry in the current file, or of the last one seen
        (None if none was): one pread and one parse per change, at scrape time only."""
        last = self.idx.last_frame
        key = (self.next_seq, last)
        if last < 0 or key == self._newest[:2] or self.closed:
            return self._newest[2] or None
        try:
            entry = entry_at(self._fd, last)
        except OSError:
            entry = None
        if entry is None:
            return self._newest[2] or None
        t = int(entry.time_nano)
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
