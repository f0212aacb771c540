"""Run an asyncio peer (a receiver) on its own loop in a background thread, for sync tests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Awaitable[T], timeout: float | None = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        async def wrapper() -> T:
            return fn(*args)
        return self.run(wrapper())

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


class ThreadedPeer:
    """An HTTP receiver (tests/peers/otlp_receiver.py, loki_receiver.py) on its own loop in a
    thread, for synchronous (e2e) tests. The peer has ``start(port)``, ``stop()``, ``url``,
    ``requests``, ``replies`` and ``wait_for(count, timeout)``."""

    def __init__(self, peer: Any) -> None:
        self.thread = LoopThread()
        self.peer = peer
        self.port = self.thread.run(peer.start())

    @property
    def url(self) -> str:
        return str(self.peer.url)

    def requests(self) -> list[dict[str, Any]]:
        return self.thread.call(list, self.peer.requests)

    def reply(self, *replies: Any) -> None:
        """Answers for the next requests, in turn."""
        self.thread.call(self.peer.replies.extend, list(replies))

    def wait_for(self, count: int, timeout: float = 120) -> None:
        self.thread.run(self.peer.wait_for(count, timeout), timeout=timeout + 5)

    def stop_listening(self) -> None:
        self.thread.run(self.peer.stop())

    def start_listening(self) -> None:
        self.thread.run(self.peer.start())

    def close(self) -> None:
        self.thread.run(self.peer.stop())
        self.thread.stop()
