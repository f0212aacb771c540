"""The event loop's worker threads, all started before the loop needs them.

Starting a thread waits until the new thread runs, and while another worker keeps the GIL busy
(decoding a batch) that wait held the event loop for up to 0.7 s: a ``to_thread`` that had to
start a thread then stalled every FIFO. ThreadPoolExecutor starts its threads on demand, so
:func:`warm_executor` makes them all at once, up front; they live as long as the loop.
"""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import ThreadPoolExecutor


def warm_executor(loop: asyncio.AbstractEventLoop, workers: int | None = None
                  ) -> ThreadPoolExecutor:
    """Make ``loop``'s default executor one whose threads are all running already."""
    n = workers or min(32, (os.cpu_count() or 1) + 4)  # ThreadPoolExecutor's own default
    executor = ThreadPoolExecutor(n, thread_name_prefix="pylog-worker")
    barrier = threading.Barrier(n)  # each task holds its thread until all n are running
    for future in [executor.submit(barrier.wait) for _ in range(n)]:
        future.result()
    loop.set_default_executor(executor)
    return executor
