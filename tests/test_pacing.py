"""Live containers first: a stopped container's backlog is delivered in the time the live
streams leave (pylog.pacing), and at full speed when no stream is live."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import pylog.pacing
from pylog.delivery import Delivery
from pylog.pacing import INGEST, Ingest
from pylog.store import ContainerLog, StoreOptions
from pylog.stream import FifoStream
from tests.test_delivery import TIMEOUT, BuggySink, frames, lines
from tests.test_metrics import CID, context, driver_with, scrape, value
from tests.test_stream import Writer, frame, until


async def test_a_pause_only_while_a_stream_is_live() -> None:
    ingest = Ingest()
    ingest.opened()
    await ingest.yield_to_live(0.01)
    assert ingest.paused_s == 0  # no stream ever moved bytes
    ingest.moved()
    await ingest.yield_to_live(0.01)
    assert ingest.paused_s == pytest.approx(0.03)  # a quarter of the time for the catch-up
    ingest.last_moved -= pylog.pacing.LIVE_WINDOW  # the streams went quiet
    await ingest.yield_to_live(0.01)
    assert ingest.paused_s == pytest.approx(0.03)
    ingest.moved()
    ingest.closed()  # the stream that moved them ended: none is live
    await ingest.yield_to_live(0.01)
    assert ingest.paused_s == pytest.approx(0.03)


async def test_one_slow_batch_pauses_at_most_max_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pylog.pacing, "MAX_PAUSE", 0.02)
    ingest = Ingest()
    ingest.opened()
    ingest.moved()
    await ingest.yield_to_live(5.0)
    assert ingest.paused_s == pytest.approx(0.02)


async def test_a_fifo_stream_moving_bytes_is_live(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(INGEST, "last_moved", float("-inf"))
    monkeypatch.setattr(INGEST, "streams", 0)  # (what other tests' streams left counted)
    with ThreadPoolExecutor(1) as ex:
        clog = ContainerLog(tmp_path / CID, StoreOptions(), ex)
        fifo = Writer(str(tmp_path / "fifo"))
        stream = FifoStream(fifo.path, clog, lambda: None)
        assert not INGEST.live()
        stream.start()
        fifo.write(frame(0))
        await until(clog, lambda: clog.frame_end > 0)
        assert INGEST.live()
        fifo.close()
        await asyncio.wait_for(stream.done.wait(), TIMEOUT)
        assert not INGEST.live()  # ended: its container's own backlog need not wait
        clog.close()


@pytest.mark.parametrize("writing", [False, True])
async def test_only_a_stopped_containers_delivery_yields_to_live_streams(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writing: bool) -> None:
    """A stopped container's backlog pauses after each batch while streams are live (and
    /metrics says for how long), and every line still arrives; a container that is writing
    is itself live: its delivery never pauses."""
    monkeypatch.setattr(INGEST, "paused_s", 0.0)
    monkeypatch.setattr(INGEST, "live", lambda: True)  # another container's stream, always
    with ThreadPoolExecutor(1) as ex:
        clog = ContainerLog(tmp_path / CID, StoreOptions(), ex)
        clog.writers = 1 if writing else 0
        clog.append(await asyncio.to_thread(frames, 0, 30_000))  # ~3 batches
        sink = BuggySink(tmp_path)
        delivery = Delivery(clog, sink, context)
        driver = driver_with(tmp_path, clog, delivery)
        delivery.start()
        await sink.wait_for(30_000)
        clog.writers = 0
        clog.wake()
        assert delivery.task is not None
        await asyncio.wait_for(delivery.task, TIMEOUT)
        assert sink.got == lines(0, 30_000)
        if writing:
            assert INGEST.paused_s == 0
        else:
            assert sink.calls >= 2 and INGEST.paused_s > 0
        assert value(scrape(driver), "pylog_catch_up_paused_seconds_total") == INGEST.paused_s
        clog.close()
