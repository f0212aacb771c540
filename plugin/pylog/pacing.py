"""Live containers first: a stopped container's backlog (a sink catching up after an outage
or a restart of pylog) is delivered in the time the live containers' streams leave.

While any open FIFO stream has moved bytes in the last ``LIVE_WINDOW`` seconds, a catch-up
delivery pauses after each batch so that it takes at most ``CATCH_UP_SHARE`` of the time: its
reads, inflating and encoding, and the receiver's work on what it sends, then no longer slow
the containers that are writing (a container in blocking mode waits for pylog to read its
FIFO). With no live stream it runs at full speed.
"""

from __future__ import annotations

import asyncio
import time

LIVE_WINDOW = 0.25  # seconds since a stream last moved bytes: it is live
CATCH_UP_SHARE = 0.25  # of the time, while a stream is live
MAX_PAUSE = 1.0  # seconds: one slow batch does not stop a catch-up for long


class Ingest:
    """The FIFO streams open, and when one last moved bytes (set per splice: a clock read)."""

    def __init__(self) -> None:
        self.streams = 0
        self.last_moved = float("-inf")
        self.paused_s = 0.0  # catch-up pauses so far, for the metrics

    def opened(self) -> None:
        self.streams += 1

    def closed(self) -> None:
        self.streams -= 1

    def moved(self) -> None:
        self.last_moved = time.monotonic()

    def live(self) -> bool:
        """A stream is open and moved bytes lately (once the last one ended, a container's
        own backlog goes at full speed at once)."""
        return self.streams > 0 and time.monotonic() - self.last_moved < LIVE_WINDOW

    async def yield_to_live(self, took: float) -> None:
        """After a catch-up batch that took ``took`` seconds: pause while streams are live."""
        if took <= 0 or not self.live():
            return
        pause = min(took * (1 - CATCH_UP_SHARE) / CATCH_UP_SHARE, MAX_PAUSE)
        self.paused_s += pause
        await asyncio.sleep(pause)


INGEST = Ingest()
