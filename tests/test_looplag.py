"""The event loop's holds over the threshold are counted and logged (rate-limited)."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from pylog.looplag import LoopLag, watch_loop
from tests.slow_callbacks import report_only


@pytest.fixture
def holds_on_purpose(request: pytest.FixtureRequest) -> None:
    report_only(request)  # this test holds the loop itself: that is what it measures


async def test_a_held_loop_is_counted_and_logged_once_per_quiet_period(
        holds_on_purpose: None, caplog: pytest.LogCaptureFixture) -> None:
    lag = LoopLag()
    caplog.set_level(logging.WARNING, "pylog.looplag")
    task = asyncio.create_task(watch_loop(lag, threshold=0.05, interval=0.01, quiet=60))
    await asyncio.sleep(0.03)  # the watcher is in its sleep
    for _ in range(2):
        time.sleep(0.15)  # a callback holding the loop
        await asyncio.sleep(0.03)  # the watcher wakes late, then sleeps again
    task.cancel()
    assert lag.held >= 2 and lag.held_seconds >= 0.2 and lag.longest >= 0.1
    held = [r for r in caplog.records if getattr(r, "event", "") == "loop_held"]
    assert len(held) == 1  # the second within the quiet period: counted, not logged


async def test_a_loop_that_is_not_held_counts_nothing() -> None:
    lag = LoopLag()
    task = asyncio.create_task(watch_loop(lag, threshold=0.5, interval=0.01))
    for _ in range(10):
        await asyncio.sleep(0.01)
    task.cancel()
    assert lag.held == 0
