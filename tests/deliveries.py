"""What the unit tests of a delivery with line rules share: a running container's log with a
sink that keeps what it gets, and the two ways a delivery ends (the container stops, or pylog
does)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from pylog.delivery import Delivery
from pylog.store import ContainerLog, StoreOptions
from tests.test_delivery import TIMEOUT, BuggySink
from tests.test_metrics import CID


@contextmanager
def running_log(tmp_path: Path) -> Iterator[tuple[ContainerLog, BuggySink]]:
    """A container's log that is being written, and a sink; the log is closed after."""
    with ThreadPoolExecutor(1) as ex:
        clog = ContainerLog(tmp_path / CID, StoreOptions(), ex)
        clog.writers = 1
        try:
            yield clog, BuggySink(tmp_path)
        finally:
            clog.close()


async def container_stops(delivery: Delivery, clog: ContainerLog) -> None:
    """The container stops: the delivery sends the rest and ends."""
    clog.writers = 0
    await _ended(delivery, clog)


async def pylog_stops(delivery: Delivery, clog: ContainerLog) -> None:
    """pylog shuts down: the delivery ends where it is, the container still running."""
    delivery.closing = True
    await _ended(delivery, clog)


async def _ended(delivery: Delivery, clog: ContainerLog) -> None:
    clog.wake()
    assert delivery.task is not None
    await asyncio.wait_for(delivery.task, TIMEOUT)
