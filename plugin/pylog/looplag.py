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
    continued_at: float = float("-inf")  # loop time of the last SIGCONT (the process was stopped)

    def on_sigcont(self) -> None:
        self.continued_at = asyncio.get_running_loop().time()


async def watch_loop(lag: LoopLag, threshold: float = 0.1, interval: float = 0.05,
                     quiet: float = 10.0) -> None:
    """Counts and logs the holds. A late tick is judged at the next one: a process stopped
    (SIGSTOP) and continued was not held, and the SIGCONT's handler may run only after the
    late tick, in the loop's next step."""
    loop = asyncio.get_running_loop()
    last_log, unlogged = -quiet, 0
    pending: tuple[float, float] | None = None  # (start, lateness) of a late tick
    while True:
        start = loop.time()
        await asyncio.sleep(interval)
        if pending is not None and lag.continued_at < pending[0]:
            late = pending[1]
            lag.held += 1
            lag.held_seconds += late
            lag.longest = max(lag.longest, late)
            unlogged += 1
            if loop.time() - last_log >= quiet:
                log.warning("the event loop was held for %.3f s (%d such holds since the "
                            "last report; longest so far %.3f s)", late, unlogged, lag.longest,
                            extra={"event": "loop_held", "seconds": round(late, 3)})
                last_log, unlogged = loop.time(), 0
        late = loop.time() - start - interval
        pending = (start, late) if late > threshold else None
