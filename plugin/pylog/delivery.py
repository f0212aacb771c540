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

Each delivery keeps plain counters (lines delivered, retries, the batch in flight, the time of
the last line delivered) that :mod:`pylog.metrics` reads at scrape time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .entry import LogEntry
from .frames import Columns, FrameDecoder, decode_columns, decode_frames
from .reassembly import Line, Reassembler
from .record import ContainerContext
from .sinks.base import Sink, SinkError
from .store import CURRENT, MAX_STORED_FRAME, ContainerLog, file_pieces, write_json_atomic

log = logging.getLogger(__name__)

READ_BYTES = 256 << 10  # one batch: up to 256 KiB of stored frames (~10,000 short lines); it is
# also what a crash can make a sink receive twice


@dataclass(frozen=True, slots=True)
class Position:
    """A place in a container's log: file ``seq`` (a rotated file, or the current file, which
    will get seq ``next_seq`` when rotated) and a byte offset into its (uncompressed) content."""

    seq: int
    offset: int


class _Inflated:
    """A compressed rotated file, read forward by uncompressed offset a piece at a time (the
    positions a delivery reads at only grow): at most a piece and a batch of it in memory, not
    the whole inflated file (max-size, 20 MB by default and as much as the user sets, per
    container catching up)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._pieces = file_pieces(fd, True)
        self._buf = b""
        self._start = 0  # the uncompressed offset of _buf[0]

    def read(self, off: int, n: int) -> bytes:
        if off < self._start:  # backwards: never in a delivery, but start again to be right
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


class StoreTail:
    """Reads a container's stored frames from a position onwards, across rotations."""

    def __init__(self, clog: ContainerLog, pos: Position | None) -> None:
        self.clog = clog
        if pos is None:
            rotated = [s for s, _ in clog._rotated_files()]
            pos = Position(min(rotated, default=clog.next_seq), 0)
        self.pos = pos
        self.dropped_bytes = 0  # pruned before it was read (uncompressed bytes)
        self.fell_behind = 0  # times that happened
        self._fd: int | None = None
        self._gz: _Inflated | None = None  # set when the open file is compressed
        self._open_seq = -1

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._gz, self._open_seq = None, None, -1

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
                sizes = self.clog.rotated_sizes
                lost = max(0, sizes.get(seq, 0) - self.pos.offset) + sum(
                    sizes.get(s, 0) for s in range(seq + 1, nxt))
                log.warning("%s: a sink fell behind the store's retention; files %d..%d "
                            "(%d bytes) were deleted before it read them",
                            self.clog.directory.name, seq, nxt - 1, lost)
                self.dropped_bytes += lost
                self.fell_behind += 1
                self.pos = Position(nxt, 0)
                return self._open()
            fd, is_gz = opened
            self._fd = fd
            if is_gz:
                self._gz = _Inflated(fd)
        else:
            try:
                self._fd = os.open(self.clog.directory / CURRENT, os.O_RDONLY)
            except FileNotFoundError:
                return False
        self._open_seq = seq
        return True

    def read(self, max_bytes: int = READ_BYTES, columns: bool = False,
             ) -> tuple[list[LogEntry] | Columns, list[int], bool]:
        """Whole entries from the position on; the offset after each in the file
        ``self.pos.seq``; and whether the end of what is stored was reached. With ``columns``,
        whole lines may come as :class:`Columns`, with only the offset after the last."""
        while True:
            if not self._open():
                return [], [], True
            off = self.pos.offset
            finished = self.pos.seq < self.clog.next_seq  # nothing more is written to this file
            if self._gz is not None:
                data = self._gz.read(off, max_bytes)
            else:
                assert self._fd is not None
                # Of the current file, only whole frames are ours to read.
                want = max_bytes if finished else min(max_bytes, self.clog.frame_end - off)
                data = os.pread(self._fd, want, off) if want > 0 else b""
            # One protobuf parse for the batch; frame by frame (skipping damage) only if needed.
            if columns and data:
                cols = decode_columns(data, MAX_STORED_FRAME)
                if cols is not None:
                    self.pos = Position(self.pos.seq, off + cols[1])
                    return cols[0], [off + cols[1]], False
            fast = decode_frames(data, MAX_STORED_FRAME) if data else None
            if fast is not None and fast[0]:
                entries, ends = fast
                ends = [off + e for e in ends]
                self.pos = Position(self.pos.seq, ends[-1])
                return entries, ends, False
            chunk = FrameDecoder(MAX_STORED_FRAME).feed(data)
            if chunk.runs:
                ends = [off + end for _, end in chunk.spans()]
                self.pos = Position(self.pos.seq, ends[-1])
                return chunk.entries, ends, False
            if data and len(data) == max_bytes:
                # No whole frame in a full read: damage; skip what the decoder skipped.
                self.pos = Position(self.pos.seq, off + max(1, len(data) - 8))
                continue
            if finished:
                self.pos = Position(self.pos.seq + 1, 0)  # done with it (a torn tail is skipped)
                continue
            return [], [], True


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
        self.task: asyncio.Task[None] | None = None
        self._waiter = clog.waiter()  # also keeps the store from being released or collected
        # Counters for the metrics, read at scrape time (never touched per line).
        self.lines = 0  # lines the sink took
        self.retries = 0  # failed sends of a batch (each retried after a backoff)
        self.in_flight = 0  # lines of the batch being sent; 0 between batches
        self.last_delivered_ns = 0  # time of the newest line the sink took
        self.first_unsent_ns = 0  # time of the oldest line read but not yet taken
        self.last_success = 0.0  # wall time the sink last took a batch
        self.acked: Position | None = None  # where the saved cursor is
        self.done = False
        self._tail: StoreTail | None = None
        self._rejected_final = 0
        self._dropped_before = 0  # carried over from an earlier delivery (see carry_over)
        self._rejected_before = 0
        try:
            self.container_name = context().name
        except Exception:  # noqa: BLE001 - a name for the metrics only
            self.container_name = ""

    @property
    def container_id(self) -> str:
        return self.clog.directory.name

    def start(self) -> asyncio.Task[None]:
        self.task = asyncio.create_task(self.run(), name=f"pylog-{self.sink.key}-"
                                                         f"{self.container_id[:12]}")
        return self.task

    def carry_over(self, old: Delivery) -> None:
        """Go on counting from a finished delivery of the same container to the same sink
        (its metrics still showed it), so the counters never go backwards."""
        self.lines += old.lines
        self.retries += old.retries
        self._dropped_before += old.dropped_bytes
        self._rejected_before += old.rejected

    # ----------------------------------------------------------------- read at scrape time

    @property
    def spool_bytes(self) -> int:
        """Stored bytes after the saved cursor: what the sink has still to take."""
        if self.acked is None:
            return 0
        return self.clog.bytes_after(self.acked.seq, self.acked.offset)

    @property
    def dropped_bytes(self) -> int:
        """Bytes the store deleted (retention) before this delivery read them."""
        return self._dropped_before + (self._tail.dropped_bytes if self._tail else 0)

    @property
    def rejected(self) -> int:
        """Lines the sink refused for good (Elasticsearch: dead-lettered documents)."""
        if self.done:
            return self._rejected_before + self._rejected_final
        return self._rejected_before + self.sink.rejected.get(self.container_id, 0)

    def lag_seconds(self) -> float | None:
        """Time of the newest stored line minus time of the last line the sink took; 0 when
        caught up; None when unknown (nothing stored or read yet)."""
        if self.spool_bytes == 0:
            return 0.0
        newest = self.clog.newest_time()
        since = self.last_delivered_ns or self.first_unsent_ns
        if newest is None or not since:
            return None
        return max(0.0, (newest - since) / 1e9)

    # ----------------------------------------------------------------- the loop

    async def run(self) -> None:
        await self.clog.ready()  # a log opened again is walked first (in a worker)
        tail = self._tail = StoreTail(self.clog, self.cursor.load())
        self.acked = tail.pos
        reassembler = Reassembler(self.max_line)
        waiter = self._waiter
        try:
            while True:
                waiter.clear()
                entries, ends, at_end = tail.read(
                    columns=self.sink.COLUMNS and not reassembler.pending)
                if len(entries):
                    if not self.first_unsent_ns:
                        self.first_unsent_ns = entries[0].time_nano
                    safe = None  # the cursor may move only to where no line is half-read
                    if isinstance(entries, Columns):
                        lines: Sequence[Line] = entries  # whole lines, as columns
                        safe = ends[-1]
                    elif not reassembler.pending and not any([e.partial for e in entries]):  # noqa: C419
                        lines = entries  # whole lines already: the common case
                        safe = ends[-1]
                    else:
                        pieces: list[Line] = []
                        lines = pieces
                        for entry, end in zip(entries, ends):
                            line = reassembler.push(entry)
                            if line is not None:
                                pieces.append(line)
                            if not reassembler.pending:
                                safe = end
                    if lines:
                        await self._send(lines)
                    if safe is not None:
                        self.acked = Position(tail.pos.seq, safe)
                        self.cursor.save(self.acked)
                    continue
                if at_end and self.closing:
                    return  # shutting down: a half-read line is read again at the next start
                if at_end and self.clog.writers == 0:
                    rest = reassembler.flush()
                    if rest:
                        await self._send(rest)
                    self.cursor.save(tail.pos)
                    self.acked = tail.pos
                    return
                await waiter.wait()
        finally:
            tail.close()
            self.clog.drop_waiter(waiter)
            self.in_flight = 0
            self._rejected_final = self.sink.rejected.pop(self.container_id, 0)
            self.done = True

    async def _send(self, lines: Sequence[Line]) -> None:
        """Send one batch until the sink takes it. An outage is logged once when it starts
        (the sink's first failure) and once when it ends (its first success after failures),
        whatever the number of retries or of containers sending to that sink."""
        attempt = 0
        self.in_flight = len(lines)
        rejected_before = self.rejected
        try:
            while True:
                try:
                    await self.sink.send(lines, self.context())
                except (TimeoutError, SinkError, OSError) as e:
                    first = self.sink.status.failures == 0
                    self.sink.note_failure(e)
                    self.retries += 1
                    if first:
                        log.warning("sink %s: delivery failed, retrying until it works: %s",
                                    self.sink.key, self.sink.status.last_error,
                                    extra={"event": "sink_down", "sink": self.sink.key})
                    else:
                        log.debug("sink %s: retry %d for %s failed: %s", self.sink.key,
                                  attempt + 1, self.container_id[:12],
                                  self.sink.status.last_error)
                    if self.closing:
                        raise asyncio.CancelledError from e  # keep it stored for the next start
                    delay = min(self.sink.retry_wait * (2 ** attempt), self.sink.MAX_RETRY_WAIT)
                    attempt += 1
                else:
                    self._sent(lines, rejected_before)
                    return
                # Backoff before the next try, outside the except block: the error's traceback
                # holds the failed try's locals (what the sink encoded from the batch: ~6 MB
                # of fluentd messages), which every container's delivery kept through its
                # backoff. With fluentd encoding only once connected: B2 with the sink down,
                # pylog's peak RSS 180 -> 64 MB.
                await asyncio.sleep(delay)
        finally:
            self.in_flight = 0

    def _sent(self, lines: Sequence[Line], rejected_before: int) -> None:
        """The sink took the batch: count it, and say so if it had been failing."""
        if self.sink.status.state != "up":
            down = time.time() - self.sink.status.failing_since
            log.warning("sink %s: delivering again after %d failed tries (%.1f s down)",
                        self.sink.key, self.sink.status.failures, down,
                        extra={"event": "sink_up", "sink": self.sink.key})
        taken = len(lines) - (self.rejected - rejected_before)  # not the refused
        self.sink.note_success(taken)
        self.lines += taken
        self.last_delivered_ns = lines[-1].time_nano
        self.first_unsent_ns = 0
        self.last_success = self.sink.status.last_success
