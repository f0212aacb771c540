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

- a failure nobody expected (a bug in a sink or in pylog) does not end it: it is logged with its
  traceback once per streak, counted, and the delivery starts again from its saved cursor
  after a backoff;
- it reads through :class:`pylog.reader.LogReader` and saves its cursor durably, both in worker
  threads; a cursor found damaged at start is reported and the log is read from its oldest line.

Each delivery keeps plain counters (lines delivered, retries, restarts, the batch in flight, the
time of the last line delivered) that :mod:`pylog.metrics` reads at scrape time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from .cursor import Cursor
from .durable import STATE
from .frames import Columns
from .pacing import INGEST
from .position import Position
from .reader import Batch, LogReader
from .reassembly import Line
from .record import ContainerContext
from .shaping import LineRules, Shaper, ShapingCounts, Taken
from .sinks.base import SMALL_LINES, Sink, SinkError
from .store import ContainerLog

log = logging.getLogger(__name__)

MAX_RETRY_AFTER = 300.0  # seconds: the longest Retry-After a server's answer makes a batch wait
READ_BYTES = 256 << 10  # one batch: up to 256 KiB of stored frames (~10,000 short lines); it is
# also what a crash can make a sink receive twice


def _shaped(shaper: Shaper, sink: Sink, batch: Batch, ctx: ContainerContext) -> Taken:
    """A batch through the container's rules, then prepared by the sink (in a worker: parsed
    objects are encoded and freed where they were made, not on the loop)."""
    lines, cursor = shaper.take(batch)
    return sink.prepare(lines, ctx), cursor


def _whole(entries: Sequence[Line]) -> bool:
    """Whether a batch is whole lines as columns (nothing to join), or a few entries."""
    return isinstance(entries, Columns) or len(entries) <= SMALL_LINES


def _name_of(context: Callable[[], ContainerContext]) -> str:
    try:
        return context().name
    except Exception:  # noqa: BLE001 - a name for the metrics only
        return ""


async def _woken(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait for the event; False if ``timeout`` seconds passed first."""
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        return False
    return True


class Delivery:
    """Sends one container's lines to one sink, from the store, until the container stops
    logging and everything is delivered (or until pylog shuts down). A failure it does not
    expect (a bug in a sink or here) does not end it: it is logged, counted, and the delivery
    starts again from its saved cursor after a backoff."""

    def __init__(self, clog: ContainerLog, sink: Sink, context: Callable[[], ContainerContext],
                 max_line: int = 1 << 20, rules: LineRules | None = None) -> None:
        self.clog = clog
        self.sink = sink
        self.context = context
        self.cursor = Cursor(clog.directory, sink.key)
        self.max_line = max_line
        self.rules = rules or LineRules()
        self.counts = ShapingCounts()  # what the rules did (rate limit, parse=json)
        self.closing = False  # shutting down: stop at the end of what is stored
        self.task: asyncio.Task[None] | None = None
        self._waiter = clog.waiter()  # also keeps the store from being released or collected
        # Counters for the metrics, read at scrape time (never touched per line).
        self.lines = 0  # lines the sink took
        self.retries = 0  # failed sends of a batch (each retried after a backoff)
        self.restarts = 0  # unexpected failures, each followed by a start from the cursor
        self.in_flight = 0  # lines of the batch being sent; 0 between batches
        self.last_delivered_ns = 0  # time of the newest line the sink took
        self.first_unsent_ns = 0  # time of the oldest line read but not yet taken
        self.last_success = 0.0  # wall time the sink last took a batch
        self.acked: Position | None = None  # where the saved cursor is
        self.done = False
        self._reader: LogReader | None = None
        self._failure = ""  # the unexpected failure of the current streak ("" if none)
        self._rejected_final = 0
        self._dropped_before = 0  # carried over from an earlier delivery (see carry_over)
        self._rejected_before = 0
        self.container_name = _name_of(context)

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
        self.restarts += old.restarts
        self._dropped_before += old.dropped_bytes
        self._rejected_before += old.rejected
        self.counts.add(old.counts)

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
        return self._dropped_before + (self._reader.dropped_bytes if self._reader else 0)

    @property
    def rejected(self) -> int:
        """Lines the sink's server refused for good (dead-lettered: Elasticsearch, OTLP, Loki)."""
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
        """Deliver until done; after an unexpected failure, start again from the saved cursor
        after a backoff (doubling, capped). Cancelling it stops it."""
        attempt = 0
        try:
            while True:
                try:
                    await self._deliver()
                    return
                except Exception as e:  # any bug: retried, never silently dead
                    if self.closing:
                        raise
                    attempt = 0 if not self._failure else attempt
                    self._restarted(e)
                delay = min(self.sink.retry_wait * 2 ** attempt, self.sink.max_retry_wait)
                attempt += 1
                await asyncio.sleep(delay)  # outside the except block: see _send
        finally:
            self.clog.drop_waiter(self._waiter)
            self.in_flight = 0
            self._rejected_final = self.sink.rejected.pop(self.container_id, 0)
            self.done = True

    def _restarted(self, error: Exception) -> None:
        """Count an unexpected failure; log it with its traceback once per streak (until a
        batch gets through again), or again if it is another failure."""
        self.restarts += 1
        what = f"{type(error).__name__}: {error}"
        if what != self._failure:
            log.error("delivery to sink %s for %s failed unexpectedly; starting it again from "
                      "its saved cursor", self.sink.key, self.container_id[:12], exc_info=error,
                      extra={"event": "delivery_restart", "sink": self.sink.key})
        else:
            log.debug("delivery to sink %s for %s failed again: %s", self.sink.key,
                      self.container_id[:12], what)
        self._failure = what

    async def _deliver(self) -> None:
        """Read from the saved cursor and send, batch by batch, until the container stopped
        logging and all is sent (or, closing, until the end of what is stored)."""
        if self._reader is not None:  # a restart: what the last reader lost stays counted
            self._dropped_before += self._reader.dropped_bytes
            self._reader = None
        reader = self._reader = LogReader(self.clog, await asyncio.to_thread(self._saved))
        self.acked = reader.pos
        shaper = Shaper(reader.pos, self.max_line, self.rules, self.counts,
                        structs=self.sink.PACKS_STRUCTS)
        waiter = self._waiter
        ahead: asyncio.Task[Batch] | None = None  # the next batch, read while one is sent

        def read_next() -> Coroutine[Any, Any, Batch]:
            waiter.clear()  # before the read takes frame_end: no write is missed
            return reader.read(READ_BYTES, columns=(self.sink.COLUMNS or not shaper.plain)
                               and shaper.columns)

        try:
            while True:
                started = time.monotonic()
                batch, ahead = await (ahead or read_next()), None
                if batch.entries:
                    if not self.first_unsent_ns:
                        self.first_unsent_ns = batch.entries[0].time_nano
                    # Rules, and joining dockerd's 16 KiB pieces (a step a piece): in a worker
                    taken = (shaper.take(batch) if shaper.plain and _whole(batch.entries)
                             else await asyncio.to_thread(_shaped, shaper, self.sink, batch,
                                                          self.context()))
                    ahead = asyncio.create_task(read_next())
                    await self._deliver_taken(taken)
                    if self.clog.writers == 0 and not self.closing:  # catching up
                        await INGEST.yield_to_live(time.monotonic() - started)
                    continue
                if waiter.is_set():
                    continue  # written (or stopped) while the worker read: look again
                if self.closing:  # shutting down: a half-read line is read again at the next start
                    await self._deliver_taken((shaper.notices(), None))
                    return
                # A log opened again is readable up to where its walk (in a worker) got:
                # the rest is not delivered until the walk is done (it wakes the waiter).
                if self.clog.writers == 0 and not self.clog.walking:
                    await self._deliver_taken((shaper.end(), None))
                    await self._ack(reader.pos, last=True)
                    return
                if not await _woken(waiter, shaper.wait_s()):  # an open event's timeout
                    await self._deliver_taken(shaper.due())
        finally:
            if ahead is not None:
                ahead.cancel()
                await asyncio.gather(ahead, return_exceptions=True)
            reader.close()

    async def _deliver_taken(self, taken: Taken) -> None:
        lines, cursor = taken
        if lines:
            await self._send(lines)
        if cursor is not None:
            await self._ack(cursor)

    def _saved(self) -> Position | None:
        STATE.flush()  # a restart after a failure goes on from the newest cursor handed over
        return self.cursor.load()

    async def _ack(self, pos: Position, last: bool = False) -> None:
        """The sink has everything before ``pos``: save the cursor (durably, off the loop; the
        last one of a delivery is waited for)."""
        self.cursor.save(pos)
        if last:
            await asyncio.to_thread(STATE.flush)
        self.acked = pos
        self._failure = ""

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
                    delay = min(self.sink.retry_wait * (2 ** attempt), self.sink.max_retry_wait)
                    asked = getattr(e, "retry_after", None)  # the server's Retry-After
                    if asked is not None:
                        delay = max(delay, min(asked, MAX_RETRY_AFTER))
                    attempt += 1
                else:
                    self._sent(lines, rejected_before)
                    return
                # Backoff outside the except block: the traceback holds the failed try's
                # encoded batch, which every waiting delivery would keep (B2, sink down: RSS).
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
