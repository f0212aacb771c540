"""Getting every line to every sink, in order, at least once — with the store as the spool.

A sink never sees the FIFO. Each (container, sink) pair has a :class:`Delivery` that reads the
container's store from a persisted cursor, reassembles lines, builds records with the container's
current context, sends them, and moves the cursor on only when the sink took them. So:

- a slow or dead sink never slows the FIFO reader, the container, ``docker logs`` or the other
  sinks: it only falls behind in a file on disk;
- when it comes back everything it missed is sent, in order; memory stays bounded;
- after a crash or restart delivery resumes at the cursor: at most the batch in flight is sent
  twice;
- the spool's limit is the store's (``max-size`` x ``max-file`` per container): a sink that falls
  further behind than that loses the oldest lines, which are counted (``dropped_bytes``).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .entry import LogEntry
from .frames import FrameDecoder
from .reassembly import Line, Reassembler
from .record import ContainerContext
from .sinks.base import Sink, SinkError
from .store import CURRENT, MAX_STORED_FRAME, ContainerLog, write_json_atomic

log = logging.getLogger(__name__)

READ_BYTES = 256 << 10  # one batch: up to 256 KiB of stored frames (~10,000 short lines); it is
# also what a crash can make a sink receive twice
_LEN = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class Position:
    """A place in a container's log: file ``seq`` (a rotated file, or the current file, which
    will get seq ``next_seq`` when rotated) and a byte offset into its (uncompressed) content."""

    seq: int
    offset: int


class StoreTail:
    """Reads a container's stored frames from a position onwards, across rotations."""

    def __init__(self, clog: ContainerLog, pos: Position | None) -> None:
        self.clog = clog
        if pos is None:
            rotated = [s for s, _ in clog._rotated_files()]
            pos = Position(min(rotated, default=clog.next_seq), 0)
        self.pos = pos
        self.dropped_bytes = 0  # pruned before it was read
        self._fd: int | None = None
        self._data: bytes | None = None  # a compressed rotated file, decompressed
        self._open_seq = -1

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._data, self._open_seq = None, None, -1

    def _open(self) -> bool:
        """Open the file at self.pos.seq; False if there is none (yet)."""
        if self._open_seq == self.pos.seq:
            return True
        self.close()
        seq = self.pos.seq
        if seq < self.clog.next_seq:
            opened = self.clog.open_rotated(seq)
            if opened is None:  # pruned: the oldest file still there is next
                later = [s for s, _ in self.clog._rotated_files() if s > seq]
                nxt = min(later, default=self.clog.next_seq)
                log.warning("%s: a sink fell behind the store's retention; files %d..%d were "
                            "deleted before it read them", self.clog.directory.name, seq, nxt - 1)
                self.dropped_bytes += 1  # unknown size: counted as an event
                self.pos = Position(nxt, 0)
                return self._open()
            fd, is_gz = opened
            if is_gz:
                try:
                    with os.fdopen(fd, "rb") as f:
                        self._data = gzip.decompress(f.read())
                except (OSError, EOFError) as e:
                    log.error("%s: compressed file %d is damaged: %s", self.clog.directory.name,
                              seq, e)
                    self._data = b""
            else:
                self._fd = fd
        else:
            try:
                self._fd = os.open(self.clog.directory / CURRENT, os.O_RDONLY)
            except FileNotFoundError:
                return False
        self._open_seq = seq
        return True

    def read(self, max_bytes: int = READ_BYTES) -> tuple[list[tuple[LogEntry, Position]], bool]:
        """Whole entries from the position on, each with the position after it; and whether
        the end of what is stored was reached."""
        while True:
            if not self._open():
                return [], True
            off = self.pos.offset
            finished = self.pos.seq < self.clog.next_seq  # nothing more is written to this file
            if self._data is not None:
                data = self._data[off:off + max_bytes]
            else:
                assert self._fd is not None
                # Of the current file, only whole frames are ours to read.
                want = max_bytes if finished else min(max_bytes, self.clog.frame_end - off)
                data = os.pread(self._fd, want, off) if want > 0 else b""
            chunk = FrameDecoder(MAX_STORED_FRAME).feed(data)
            if chunk.runs:
                out = []
                entries = iter(chunk.entries)
                for start, end in chunk.runs:
                    p = start
                    while p < end:
                        p += 4 + _LEN.unpack_from(chunk.data, p)[0]
                        out.append((next(entries), Position(self.pos.seq, off + p)))
                self.pos = out[-1][1]
                return out, False
            if data and len(data) == max_bytes:
                # No whole frame in a full read: damage; skip what the decoder skipped.
                self.pos = Position(self.pos.seq, off + max(1, len(data) - 8))
                continue
            if finished:
                self.pos = Position(self.pos.seq + 1, 0)  # done with it (a torn tail is skipped)
                continue
            return [], True


class Cursor:
    """Where a sink has got to in one container's log, kept in the container's store dir."""

    def __init__(self, directory: Path, sink_key: str) -> None:
        self.path = directory / f"cursor-{sink_key}.json"

    def load(self) -> Position | None:
        try:
            d = json.loads(self.path.read_text())
            return Position(int(d["seq"]), int(d["offset"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self, pos: Position) -> None:
        try:
            write_json_atomic(self.path, {"seq": pos.seq, "offset": pos.offset})
        except OSError as e:
            log.warning("could not save a sink cursor in %s: %s", self.path.parent.name, e)


class Delivery:
    """Sends one container's lines to one sink, from the store, until the container stops
    logging and everything is delivered (or until pylog shuts down)."""

    def __init__(self, clog: ContainerLog, sink: Sink, context: Callable[[], ContainerContext],
                 max_line: int = 1 << 20) -> None:
        self.clog = clog
        self.sink = sink
        self.context = context
        self.cursor = Cursor(clog.directory, sink.key)
        self.max_line = max_line
        self.closing = False  # shutting down: stop at the end of what is stored
        self.lines = 0
        self.task: asyncio.Task[None] | None = None
        self._waiter = clog.waiter()  # also keeps the store from being released or collected

    @property
    def container_id(self) -> str:
        return self.clog.directory.name

    def start(self) -> asyncio.Task[None]:
        self.task = asyncio.create_task(self.run(), name=f"pylog-{self.sink.key}-"
                                                         f"{self.container_id[:12]}")
        return self.task

    async def run(self) -> None:
        tail = StoreTail(self.clog, self.cursor.load())
        reassembler = Reassembler(self.max_line)
        waiter = self._waiter
        try:
            while True:
                waiter.clear()
                items, at_end = tail.read()
                if items:
                    lines: list[Line] = []
                    safe = None  # the cursor may move only to where no line is half-read
                    for entry, end in items:
                        line = reassembler.push(entry)
                        if line is not None:
                            lines.append(line)
                        if not reassembler.pending:
                            safe = end
                    if lines:
                        await self._send(lines)
                    if safe is not None:
                        self.cursor.save(safe)
                    continue
                if at_end and self.closing:
                    return  # shutting down: a half-read line is read again at the next start
                if at_end and self.clog.writers == 0:
                    rest = reassembler.flush()
                    if rest:
                        await self._send(rest)
                    self.cursor.save(tail.pos)
                    return
                await waiter.wait()
        finally:
            tail.close()
            self.clog.drop_waiter(waiter)

    async def _send(self, lines: list[Line]) -> None:
        attempt = 0
        while True:
            try:
                await self.sink.send(lines, self.context())
            except (TimeoutError, SinkError, OSError) as e:
                first = self.sink.status.failures == 0
                self.sink.note_failure(e)
                if first:
                    log.warning("sink %s: delivery failed, retrying until it works: %s",
                                self.sink.key, self.sink.status.last_error)
                if self.closing:
                    raise asyncio.CancelledError from e  # keep it stored for the next start
                delay = min(self.sink.retry_wait * (2 ** attempt), self.sink.MAX_RETRY_WAIT)
                attempt += 1
                await asyncio.sleep(delay)  # backoff before the next try
                continue
            if self.sink.status.state != "up":
                log.warning("sink %s: delivering again after %d failed tries", self.sink.key,
                            self.sink.status.failures)
            self.sink.note_success(len(lines))
            self.lines += len(lines)
            return
