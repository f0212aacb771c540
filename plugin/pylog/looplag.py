"""How long the event loop was held: a timer that should fire every ``interval`` seconds, and
how late it fired. The loop only moves bytes and answers requests; a step that holds it longer
than ``threshold`` delays every FIFO and request, so it is counted (``/metrics``) and logged (at
most once every ``quiet`` seconds, with how many there were meanwhile)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(slots=True)
class LoopLag:
    held: int = 0  # times the loop was held over the threshold
    held_seconds: float = 0.0  # and for how long in all
    longest: float = 0.0


async def watch_loop(lag: LoopLag, threshold: float = 0.1, interval: float = 0.05,
                     quiet: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    last_log, unlogged = -quiet, 0
    while True:
        start = loop.time()
        await asyncio.sleep(interval)
        late = loop.time() - start - interval
        if late <= threshold:
            continue
        lag.held += 1
        lag.held_seconds += late
        lag.longest = max(lag.longest, late)
        unlogged += 1
        if loop.time() - last_log >= quiet:
            log.warning("the event loop was held for %.3f s (%d such holds since the last "
                        "report; longest so far %.3f s)", late, unlogged, lag.longest,
                        extra={"event": "loop_held", "seconds": round(late, 3)})
            last_log, unlogged = loop.time(), 0
