"""Reading one container's FIFO: non-blocking, in big chunks, and never stopping.

dockerd opens the FIFO read-write, so its writes block while nobody reads: a reader that pauses
(waiting on a sink, say) stalls the container and can hang ``docker stop``. This reader is driven
by the event loop's readiness callback and hands every batch to its consumer synchronously; the
consumer must not block (the store writes to the page cache; sinks queue).
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

from .frames import DEFAULT_MAX_FRAME, Chunk, FrameDecoder
from .reassembly import DEFAULT_MAX_LINE, Line, Reassembler

log = logging.getLogger(__name__)

F_SETPIPE_SZ = 1031
PIPE_SIZE = 1 << 20  # fewer wakeups, and dockerd's writes block less often
READ_SIZE = 1 << 20
READ_BUDGET = 8 << 20  # per wakeup, so one busy container cannot starve the others


@dataclass(slots=True)
class StreamStats:
    reads: int = 0
    bytes: int = 0


BatchCallback = Callable[[Chunk, list[Line]], None]


class FifoStream:
    """Reads ``path`` until end of stream; calls ``on_batch(chunk, lines)`` for what it decodes.

    ``chunk`` holds the frames as dockerd sent them (bytes and entries); ``lines`` are the
    reassembled lines completed by this batch. ``on_end`` runs once, after the final batch.
    """

    def __init__(self, path: str, on_batch: BatchCallback, on_end: Callable[[], None],
                 max_frame: int = DEFAULT_MAX_FRAME, max_line: int = DEFAULT_MAX_LINE,
                 wants_lines: Callable[[], bool] = lambda: True) -> None:
        self.path = path
        # Reassembly costs ~1 us a line: skipped while nobody consumes lines (store only).
        self.wants_lines = wants_lines
        self.decoder = FrameDecoder(max_frame)
        self.reassembler = Reassembler(max_line)
        self.stats = StreamStats()
        self._on_batch = on_batch
        self._on_end = on_end
        self._fd: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.done = asyncio.Event()

    def start(self) -> None:
        """Open the FIFO (non-blocking: dockerd already holds the write side) and start reading."""
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)
        except OSError as e:  # over /proc/sys/fs/pipe-max-size for unprivileged users
            log.debug("could not enlarge pipe %s: %s", self.path, e)
        self._fd = fd
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(fd, self._on_readable)

    def _on_readable(self) -> None:
        fd = self._fd
        if fd is None:
            return
        chunks = []
        budget = READ_BUDGET
        eof = False
        while budget > 0:
            try:
                chunk = os.read(fd, READ_SIZE)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == errno.EINTR:
                    continue
                log.error("reading %s failed: %s", self.path, e)
                eof = True
                break
            if not chunk:
                eof = True
                break
            chunks.append(chunk)
            budget -= len(chunk)
        if chunks:
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            self.stats.reads += len(chunks)
            self.stats.bytes += len(data)
            self._deliver(self.decoder.feed(data))
        if eof:
            self._finish()

    def _deliver(self, chunk: Chunk) -> None:
        lines = []
        if self.wants_lines():
            push = self.reassembler.push
            for entry in chunk.entries:
                line = push(entry)
                if line is not None:
                    lines.append(line)
        try:
            self._on_batch(chunk, lines)
        except Exception:  # a consumer bug must not end the stream
            log.exception("consumer of %s failed on a batch", self.path)

    def _finish(self) -> None:
        if self._fd is None:
            return
        assert self._loop is not None
        self._loop.remove_reader(self._fd)
        os.close(self._fd)
        self._fd = None
        for salvaged in self.decoder.finish():
            self._deliver(salvaged)
        tail = self.reassembler.flush() if self.wants_lines() else []
        if tail:
            try:
                self._on_batch(Chunk(), tail)
            except Exception:
                log.exception("consumer of %s failed on the final batch", self.path)
        try:
            self._on_end()
        finally:
            self.done.set()

    def close(self) -> None:
        """Stop reading now (end of stream not reached): flush what is pending."""
        self._finish()

    @property
    def running(self) -> bool:
        return self._fd is not None
