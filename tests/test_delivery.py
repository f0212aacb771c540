"""Deliveries that fail in ways nobody expected (a bug in a sink, in the reader), cursors found
damaged at start, and the read path kept off the event loop."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import pytest

import pylog.delivery
import pylog.durable
import pylog.frameindex
import pylog.frames
import pylog.logreader
import pylog.reader
import pylog.shaping
from pylog.delivery import Delivery
from pylog.entry import LogEntry, PartialLogEntryMetadata
from pylog.frames import Decoded, encode_frame
from pylog.logreader import ReadConfig, read_entries
from pylog.reader import Position
from pylog.reassembly import Line
from pylog.record import ContainerContext
from pylog.sinks.base import SMALL_LINES, Sink, SinkConfig
from pylog.store import ContainerLog, StoreOptions
from tests.test_metrics import CID, T0, context, driver_with, entry_frame, scrape, value

TIMEOUT = 20  # seconds; only so that a broken delivery fails instead of hanging the run


def lines(start: int, stop: int) -> list[bytes]:
    return [b"line %06d\n" % i for i in range(start, stop)]


def frames(start: int, stop: int) -> bytes:
    return b"".join(entry_frame(i, T0) for i in range(start, stop))


class BuggySink(Sink):
    """Takes every batch (recording it), then raises ZeroDivisionError on the calls in
    ``bug_on``: a batch the sink may have sent before it failed."""

    KIND = "buggy"
    ADDRESS_OPTION = "buggy-address"
    OPTIONS: ClassVar[dict[str, Any]] = {"buggy-address": (str, None)}

    def __init__(self, state_dir: Path, bug_on: Collection[int] = ()) -> None:
        super().__init__(SinkConfig("buggy", (("buggy-address", "x"),)), state_dir)
        self.bug_on = bug_on
        self.calls = 0
        self.got: list[bytes] = []
        self.changed = asyncio.Event()

    @property
    def retry_wait(self) -> float:
        return 0.01

    async def send(self, lines: Sequence[Line], ctx: ContainerContext) -> None:
        self.calls += 1
        self.got += [line.line for line in lines]
        self.changed.set()
        if self.calls in self.bug_on:
            raise ZeroDivisionError("division by zero")  # as a bug in a sink would

    async def wait_for(self, n: int) -> None:
        async def wait() -> None:
            while len(self.got) < n:
                self.changed.clear()
                await self.changed.wait()
        await asyncio.wait_for(wait(), TIMEOUT)


def bug_records(caplog: pytest.LogCaptureFixture, kind: type[BaseException]) -> list[Any]:
    return [r for r in caplog.records if r.exc_info and r.exc_info[0] is kind]


async def test_a_bug_in_a_sink_restarts_the_delivery_from_its_cursor(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The sink raises ZeroDivisionError twice after taking a batch: the delivery does not
    die; it starts again from its saved cursor, so every line arrives, in order, and only the
    batch in flight is sent again; the failure is logged once with its traceback and counted."""
    caplog.set_level(logging.DEBUG, logger="pylog.delivery")
    with ThreadPoolExecutor(1) as ex:
        clog = ContainerLog(tmp_path / CID, StoreOptions(), ex)
        clog.writers = 1
        sink = BuggySink(tmp_path, bug_on={2, 3})
        delivery = Delivery(clog, sink, context)
        driver = driver_with(tmp_path, clog, delivery)
        clog.append(frames(0, 10))
        delivery.start()
        await sink.wait_for(10)  # the first batch went through
        clog.append(frames(10, 20))  # the next batch: taken, then the sink fails, twice
        await sink.wait_for(40)
        clog.writers = 0
        clog.wake()
        assert delivery.task is not None
        await asyncio.wait_for(delivery.task, TIMEOUT)
        assert sink.got == lines(0, 10) + lines(10, 20) * 3
        assert delivery.restarts == 2 and delivery.lines == 20
        s = scrape(driver)
        labels = {"container_id": CID[:12], "sink": sink.key}
        assert value(s, "pylog_delivery_restarts_total", **labels) == 2
        assert value(s, "pylog_delivered_lines_total", **labels) == 20
        (logged,) = bug_records(caplog, ZeroDivisionError)
        assert logged.levelno == logging.ERROR and sink.key in logged.getMessage()
        again = [r for r in caplog.records if "failed again" in r.getMessage()]
        assert len(again) == 1 and again[0].levelno == logging.DEBUG
        assert delivery.cursor.load() == Position(1, len(frames(0, 20)))
        clog.close()
        await driver.close()


async def test_a_new_failure_streak_is_logged_again(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """Once a batch got through after a failure, the next failure is news: logged again."""
    with ThreadPoolExecutor(1) as ex:
        clog = ContainerLog(tmp_path / CID, StoreOptions(), ex)
        clog.writers = 1
        sink = BuggySink(tmp_path, bug_on={1, 3})
        delivery = Delivery(clog, sink, context)
        clog.append(frames(0, 5))
        delivery.start()
        await sink.wait_for(10)  # failed once, then taken
        clog.append(frames(5, 10))
        await sink.wait_for(20)  # failed once more, then taken
        clog.writers = 0
        clog.wake()
        assert delivery.task is not None
        await asyncio.wait_for(delivery.task, TIMEOUT)
        assert sink.got == lines(0, 5) * 2 + lines(5, 10) * 2
        assert delivery.restarts == 2
        assert len(bug_records(caplog, ZeroDivisionError)) == 2
        clog.close()


async def test_a_reader_that_fails_once_loses_nothing(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    real = pylog.frames.decode_batch
    calls = 0

    def fails_once(*args: Any, **kwargs: Any) -> Decoded:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug in the reader")
        return real(*args, **kwargs)

    monkeypatch.setattr(pylog.reader, "decode_batch", fails_once)
    with ThreadPoolExecutor(1) as ex:
        clog = ContainerLog(tmp_path / CID, StoreOptions(), ex)
        clog.append(frames(0, 50))
        sink = BuggySink(tmp_path)
        delivery = Delivery(clog, sink, context)
        await asyncio.wait_for(delivery.start(), TIMEOUT)  # no writer: ends when all is sent
        assert sink.got == lines(0, 50)
        assert delivery.restarts == 1
        assert len(bug_records(caplog, RuntimeError)) == 1
        clog.close()


async def test_cancelling_a_delivery_still_stops_it(tmp_path: Path) -> None:
    class Stuck(BuggySink):
        async def send(self, lines: Sequence[Line], ctx: ContainerContext) -> None:
            self.changed.set()
            await asyncio.Event().wait()

    with ThreadPoolExecutor(1) as ex:
        clog = ContainerLog(tmp_path / CID, StoreOptions(), ex)
        clog.append(frames(0, 5))
        sink = Stuck(tmp_path)
        delivery = Delivery(clog, sink, context)
        task = delivery.start()
        await asyncio.wait_for(sink.changed.wait(), TIMEOUT)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert delivery.done and delivery.restarts == 0 and delivery.in_flight == 0
        clog.close()


async def test_the_next_batch_is_read_while_the_sink_sends_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While the sink holds a batch, the delivery has already read the next one (the read and
    the send overlap), and every line still arrives once, in order."""
    monkeypatch.setattr(pylog.delivery, "READ_BYTES", len(frames(0, 10)))  # 10 lines a batch
    reads: list[int] = []
    second_read = asyncio.Event()
    real_read = pylog.reader.LogReader.read

    async def counted(self: pylog.reader.LogReader, *args: Any, **kwargs: Any) -> Any:
        batch = await real_read(self, *args, **kwargs)
        reads.append(len(batch.entries))
        if len(reads) == 2:
            second_read.set()
        return batch

    monkeypatch.setattr(pylog.reader.LogReader, "read", counted)

    class Held(BuggySink):
        async def send(self, lines: Sequence[Line], ctx: ContainerContext) -> None:
            if not self.got:  # the first batch: held until the next one was read
                await asyncio.wait_for(second_read.wait(), TIMEOUT)
            await super().send(lines, ctx)

    with ThreadPoolExecutor(1) as ex:
        clog = ContainerLog(tmp_path / CID, StoreOptions(), ex)
        clog.append(frames(0, 30))
        sink = Held(tmp_path)
        delivery = Delivery(clog, sink, context)
        task = delivery.start()
        await asyncio.wait_for(task, TIMEOUT)
        assert reads[:2] == [10, 10]
        assert sink.got == lines(0, 30) and delivery.lines == 30
        clog.close()


@pytest.mark.parametrize("kind,saved", [
    ("pos", b""), ("pos", b"PLS1" + bytes(40) + bytes(512)),  # empty; no slot whole
    ("json", b""), ("json", b'{"seq": 1, "off'), ("json", b"[1, 2]"), ("json", b'{"seq": "x"}'),
], ids=["empty", "torn", "old-empty", "old-torn", "old-wrong-shape", "old-not-a-number"])
async def test_a_damaged_cursor_means_reading_again_from_the_oldest_line(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str, saved: bytes) -> None:
    """Never skip: a cursor that cannot be used is reported once, by name, and the sink gets
    everything stored (rotated files included), then a good cursor is saved."""
    frame_len = len(entry_frame(0, T0))
    with ThreadPoolExecutor(1) as ex:
        clog = ContainerLog(tmp_path / CID, StoreOptions(max_size=10 * frame_len, max_file=5,
                                                         compress=True), ex)
        clog.append(frames(0, 35))  # three rotated files and the current one
        ex.submit(lambda: None).result()  # compressed
        sink = BuggySink(tmp_path)
        delivery = Delivery(clog, sink, context)
        damaged = delivery.cursor.path if kind == "pos" else delivery.cursor.old_path
        damaged.write_bytes(saved)
        await asyncio.wait_for(delivery.start(), TIMEOUT)
        assert sink.got == lines(0, 35)
        warned = [r for r in caplog.records if r.levelno == logging.WARNING
                  and str(damaged) in r.getMessage()]
        assert len(warned) == 1, [r.getMessage() for r in caplog.records]
        assert delivery.cursor.load() == Position(4, 5 * frame_len)
        clog.close()


class OffLoop:
    """Records the thread of every read of stored bytes and every decode."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.on_loop: list[str] = []
        self.calls = 0
        loop_thread = threading.get_ident()

        def watch(module: Any, name: str) -> None:
            real = getattr(module, name)

            def watched(*args: Any, **kwargs: Any) -> Any:
                self.calls += 1
                if threading.get_ident() == loop_thread:
                    self.on_loop.append(name)
                return real(*args, **kwargs)

            monkeypatch.setattr(module, name, watched)

        watch(pylog.reader._File, "read")
        watch(pylog.reader, "decode_batch")
        watch(pylog.logreader, "file_pieces")
        watch(pylog.logreader, "decode_batch")
        watch(pylog.durable, "write_json")  # the state writer's thread saves the cursors
        watch(pylog.durable, "write_slots")


async def test_deliveries_and_docker_logs_read_and_decode_off_the_event_loop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    frame_len = len(entry_frame(0, T0))
    # The few bytes a follower finds just written are read on the loop (reader.INLINE_BYTES);
    # without that allowance every read of these small files must go to a worker.
    monkeypatch.setattr(pylog.reader, "INLINE_BYTES", 0)
    watch = OffLoop(monkeypatch)
    with ThreadPoolExecutor(1) as ex:
        clog = ContainerLog(tmp_path / CID, StoreOptions(max_size=10 * frame_len, max_file=10),
                            ex)
        clog.writers = 1
        clog.append(frames(0, 25))
        ex.submit(lambda: None).result()

        async def collect(cfg: ReadConfig) -> list[int]:
            got: list[int] = []
            async for batch in read_entries(clog, cfg):
                got += [int(e.line[5:11]) for e in batch]
                if cfg.follow and len(got) == 30:
                    clog.writers = 0
                    clog.wake()
            return got

        follower = asyncio.create_task(collect(ReadConfig(follow=True)))
        assert await collect(ReadConfig()) == list(range(25))
        assert await collect(ReadConfig(tail=7)) == list(range(18, 25))
        sink = BuggySink(tmp_path)
        delivery = Delivery(clog, sink, context)
        delivery.start()
        clog.append(frames(25, 30))
        assert await asyncio.wait_for(follower, TIMEOUT) == list(range(30))
        assert delivery.task is not None
        await asyncio.wait_for(delivery.task, TIMEOUT)
        assert sink.got == lines(0, 30)
        assert watch.calls > 0 and watch.on_loop == []
        clog.close()


async def test_a_log_opened_again_is_delivered_whole_while_and_after_it_is_walked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stopped container's log opened again after a crash (no saved walk): its sink starts on
    the rotated file at once, waits for the walk of the current file (in a worker) and delivers
    it all, instead of ending at the part not walked yet."""
    d = tmp_path / CID
    d.mkdir()
    (d / "container.log.1").write_bytes(frames(0, 100))
    (d / "container.log").write_bytes(frames(100, 5000))
    (d / "seq.json").write_text('{"next": 2}')
    walking = threading.Event()
    go_on = threading.Event()
    real_walk = pylog.frameindex.walk_file

    def slow_walk(*args: Any) -> Any:
        walking.set()
        assert go_on.wait(TIMEOUT)  # held until the rotated file was delivered
        return real_walk(*args)

    monkeypatch.setattr(pylog.frameindex, "walk_file", slow_walk)
    with ThreadPoolExecutor(1) as ex:
        clog = ContainerLog(d, None, ex)
        assert clog.walking
        sink = BuggySink(tmp_path)
        delivery = Delivery(clog, sink, context)
        task = delivery.start()
        await sink.wait_for(100)  # the rotated file, while the walk is held
        assert not task.done() and clog.walking
        go_on.set()
        await asyncio.wait_for(task, TIMEOUT)
        assert sink.got == lines(0, 5000)
        clog.close()


async def test_on_the_loop_a_reader_reads_no_more_than_the_inline_allowance(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A backlog bigger than reader.INLINE_BYTES (a sink catching up, a burst) is read in a
    worker; what is read on the loop is a few frames just written, never more than that."""
    sizes: list[int] = []  # read on the loop
    in_workers: list[int] = []
    loop_thread = threading.get_ident()
    real = pylog.reader._File.read

    def read(self: Any, off: int, n: int) -> bytes:
        data = real(self, off, n)
        (sizes if threading.get_ident() == loop_thread else in_workers).append(len(data))
        return data

    monkeypatch.setattr(pylog.reader._File, "read", read)
    with ThreadPoolExecutor(1) as ex:
        clog = ContainerLog(tmp_path / CID, StoreOptions(), ex)
        clog.writers = 1
        backlog = await asyncio.to_thread(frames, 0, 40_000)  # the test's setup, off the loop
        clog.append(backlog)  # ~1.2 MiB waiting: read in workers
        sink = BuggySink(tmp_path)
        delivery = Delivery(clog, sink, context)
        delivery.start()
        await sink.wait_for(40_000)
        assert len(in_workers) >= 2  # each read of the backlog, while more than fits inline
        clog.append(frames(40_000, 40_010))  # a few lines while it follows: the loop's
        await sink.wait_for(40_010)
        assert sizes and max(sizes) <= pylog.reader.INLINE_BYTES
        clog.writers = 0
        clog.wake()
        assert delivery.task is not None
        await asyncio.wait_for(delivery.task, TIMEOUT)
        assert sink.got == lines(0, 40_010)
        clog.close()


async def test_dockerds_16_kib_pieces_are_joined_in_a_worker(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lines over 16 KiB among short ones (a batch of pieces, not columns): the pieces are
    joined off the loop, a step a piece, and every line arrives whole (a batch of at most
    SMALL_LINES entries may be joined where it is)."""
    on_loop: list[int] = []
    loop_thread = threading.get_ident()
    real = pylog.shaping._lines_of

    def lines_of(batch: Any, reassembler: Any) -> Any:
        if threading.get_ident() == loop_thread:
            on_loop.append(len(batch.entries))
        return real(batch, reassembler)

    monkeypatch.setattr(pylog.shaping, "_lines_of", lines_of)
    long = b"x" * 40_000
    entries = []
    short = [b"short %d\n" % j for j in range(500)]
    for i in range(30):  # a long line in three pieces, then 500 short ones
        meta = [PartialLogEntryMetadata(id=f"p{i}", ordinal=k + 1, last=k == 2) for k in range(3)]
        entries += [LogEntry(source="stdout", time_nano=T0 + i, partial=True,
                             line=long[k * 16384:(k + 1) * 16384], partial_log_metadata=meta[k])
                    for k in range(3)]
        entries += [LogEntry(source="stdout", time_nano=T0 + i, line=x) for x in short]
    with ThreadPoolExecutor(1) as ex:
        clog = ContainerLog(tmp_path / CID, StoreOptions(), ex)
        clog.append(b"".join(map(encode_frame, entries)))
        sink = BuggySink(tmp_path)
        delivery = Delivery(clog, sink, context)
        await asyncio.wait_for(delivery.start(), TIMEOUT)
        assert sink.got == [long, *short] * 30
        assert all(n <= SMALL_LINES for n in on_loop), on_loop
        clog.close()

