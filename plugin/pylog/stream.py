"""Reading one container's FIFO: never stopping, and nothing held only in pylog's memory.

dockerd opens the FIFO read-write, so its writes block while nobody reads: a reader that pauses
(waiting on a sink, say) stalls the container and can hang ``docker stop``. This reader is driven
by the event loop's readiness callback (in batches when the container is busy: see
:meth:`FifoStream._on_readable`) and moves what the FIFO holds straight into the
container's store file with ``splice(2)`` — in the kernel, without copying it through Python —
so the hot path costs a few syscalls per megabyte plus a walk over the length prefixes (see
:meth:`pylog.store.ContainerLog._index`). A crash or ``kill -9`` at any moment loses nothing:
a byte is either still in the FIFO or already in the file. Frames are decoded by the readers
(``docker logs``, the sinks), which also reassemble dockerd's 16 KiB chunks into lines.

If the file cannot take the bytes (disk full), the FIFO is still read, the bytes are dropped and
counted, and splicing is tried again on the next wakeup.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

from .pacing import INGEST
from .store import ContainerLog

log = logging.getLogger(__name__)

F_SETPIPE_SZ = 1031
PIPE_SIZE = 1 << 20  # fewer wakeups, and dockerd's writes block less often
READ_SIZE = 1 << 20
READ_BUDGET = 8 << 20  # per wakeup, so one busy container cannot starve the others
# A wakeup that found less than BATCH_BYTES pauses watching the FIFO for BATCH_WAIT seconds
# (see FifoStream._on_readable); 1 MiB of pipe fills in that time only above 200 MB/s, and
# then the reader watches the FIFO again without pausing.
BATCH_BYTES = 128 << 10
BATCH_WAIT = 0.005


@dataclass(slots=True)
class StreamStats:
    reads: int = 0
    bytes: int = 0
    dropped_bytes: int = 0


class FifoStream:
    """Moves ``path`` into ``clog`` until end of stream; ``on_end`` runs once, after that."""

    def __init__(self, path: str, clog: ContainerLog, on_end: Callable[[], None]) -> None:
        self.path = path
        self.clog = clog
        self.stats = StreamStats()
        self._on_end = on_end
        self._fd: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._watching = False
        self.done = asyncio.Event()

    def start(self, watch: bool = True) -> None:
        """Open the FIFO (non-blocking: dockerd already holds the write side) and start reading,
        or, without ``watch``, only open it (:meth:`watch` starts reading)."""
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)
        except OSError as e:  # over /proc/sys/fs/pipe-max-size for unprivileged users
            log.debug("could not enlarge pipe %s: %s", self.path, e)
        self._fd = fd
        self._loop = asyncio.get_running_loop()
        INGEST.opened()
        if watch:
            self.watch()

    def watch(self) -> None:
        """Start reading the opened FIFO (no-op once it ended)."""
        if self._fd is not None and self._loop is not None and not self._watching:
            self._watching = True
            self._loop.add_reader(self._fd, self._on_readable)

    def drain(self) -> None:
        """Take in everything the FIFO holds now (without waiting for more), so that a reader
        asking after dockerd wrote a line (``docker logs`` right after ``docker wait``) sees it."""
        if self._watching:
            self._move(1 << 62, chase=True)

    def _on_readable(self) -> None:
        """The FIFO has bytes. Move them; if that was a trickle (dockerd writes each frame on
        its own, so a busy container wakes the loop for every few lines), stop watching the FIFO
        for BATCH_WAIT and let a batch gather in the pipe instead. The first line after a quiet
        spell is stored at once; lines of a burst wait BATCH_WAIT at most. What it buys: 60%
        less of pylog's CPU in B1 with the store only (bench/run.py)."""
        moved = self._move(READ_BUDGET)
        if moved is not None and moved < BATCH_BYTES:
            assert self._loop is not None and self._fd is not None
            self._loop.remove_reader(self._fd)
            self._timer = self._loop.call_later(BATCH_WAIT, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        moved = self._move(READ_BUDGET)
        if moved is None:
            return
        assert self._loop is not None and self._fd is not None
        if 0 < moved < BATCH_BYTES:
            self._timer = self._loop.call_later(BATCH_WAIT, self._on_timer)
        else:  # quiet (wait for the next line without polling), or flowing fast
            self._loop.add_reader(self._fd, self._on_readable)

    def _move(self, budget: int, chase: bool = False) -> int | None:
        """Splice what the FIFO holds into the store, up to ``budget`` bytes: the bytes moved,
        or None if the stream ended (or had ended). One splice takes all the pipe holds; unless
        ``chase``, a splice that emptied it ends the call, rather than chasing dockerd's next
        few writes one small splice at a time: fewer, bigger splices (counted in B1,
        bench/run.py)."""
        fd = self._fd
        if fd is None:
            return None
        moved = 0
        eof = False
        while budget > 0:
            try:
                n = self.clog.splice_from(fd, READ_SIZE)
            except OSError as e:
                if e.errno == errno.EINTR:
                    continue
                n = self._read_and_drop(fd, e)
            if n is None:
                break
            if n == 0:
                eof = True
                break
            self.stats.reads += 1
            self.stats.bytes += n
            self.clog.stats.reads += 1  # per splice (up to 1 MiB), not per line
            INGEST.moved()
            budget -= n
            moved += n
            if n < READ_SIZE and not chase:
                break
        if eof:
            self._finish()
            return None
        return moved

    def _read_and_drop(self, fd: int, error: OSError) -> int | None:
        """The store cannot take bytes: keep the FIFO flowing anyway, and count the loss."""
        try:
            data = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return None
        except OSError as e:
            log.error("reading %s failed: %s", self.path, e)
            return 0
        if data:
            self.stats.dropped_bytes += len(data)
            self.clog.note_dropped(len(data), error)
            # The file may end in a frame whose rest was just dropped (the disk filled up in
            # the middle of a splice): cut it off, or it would swallow the first frame stored
            # once there is room again.
            self.clog.abandon_partial()
        return len(data)

    def _finish(self) -> None:
        if self._fd is None:
            return
        assert self._loop is not None
        self._loop.remove_reader(self._fd)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        os.close(self._fd)
        self._fd = None
        INGEST.closed()
        try:
            self._on_end()
        finally:
            self.done.set()

    def close(self) -> None:
        """Stop reading now (end of stream not reached)."""
        self._finish()
