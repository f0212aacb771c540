"""Deleting the stored logs of containers dockerd no longer knows (``docker rm``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from .docker_api import DockerAPI
from .store import Store

log = logging.getLogger(__name__)


class Cleanup:
    """Asks dockerd every ``interval`` seconds which containers exist; a stored log of one that
    does not, and that nothing attaches, writes or reads, is deleted."""

    def __init__(self, docker: DockerAPI, store: Store, interval: float,
                 attached: Callable[[str], bool]) -> None:
        self.docker = docker
        self.store = store
        self.interval = interval
        self._attached = attached
        self._task: asyncio.Task[None] | None = None

    async def collect(self) -> list[str]:
        existing = await self.docker.container_ids()
        removed = []
        for cid in self.store.stored_ids():
            if cid not in existing and not self._attached(cid) and not self.store.in_use(cid):
                self.store.remove(cid)
                removed.append(cid)
        if removed:
            log.info("removed the logs of %d deleted containers", len(removed))
        return removed

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="pylog-gc")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            try:
                await self.collect()
            except Exception as e:  # noqa: BLE001 - dockerd away: keep everything, try later
                log.warning("could not ask dockerd which containers exist, keeping all logs: %s", e)
            await asyncio.sleep(self.interval)
