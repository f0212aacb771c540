"""The event loop's holds over the threshold are counted and logged (rate-limited)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
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


_STOPPABLE = """
import asyncio, signal, sys
from pylog.looplag import LoopLag, watch_loop

async def main() -> None:
    lag, loop = LoopLag(), asyncio.get_running_loop()
    if sys.argv[1] == "handled":  # as pylog serve does
        loop.add_signal_handler(signal.SIGCONT, lag.on_sigcont)
    done = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, done.set)
    task = asyncio.create_task(watch_loop(lag, threshold=0.1, interval=0.01))
    await asyncio.sleep(0.05)  # the watcher is running
    print("ready", flush=True)
    await done.wait()
    await asyncio.sleep(0.05)  # ticks of 0.01 s go on: a late one is judged at the next
    task.cancel()
    print(lag.held, flush=True)

asyncio.run(main())
"""


@pytest.mark.parametrize("sigcont", ["handled", "not handled"])
def test_a_stopped_process_is_not_a_held_loop(sigcont: str) -> None:
    """SIGSTOP then SIGCONT (a debugger, a freezer, a benchmark setting a pylog aside) is no
    hold of the loop: pylog serve handles SIGCONT; without that the stop counts as one."""
    proc = subprocess.Popen([sys.executable, "-c", _STOPPABLE, sigcont], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": "plugin"})
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGSTOP)
        time.sleep(0.3)  # how long it stays stopped: what the watcher would see as late
        proc.send_signal(signal.SIGCONT)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert int(out) == (0 if sigcont == "handled" else 1)
