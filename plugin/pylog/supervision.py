"""Delivery supervision: one :class:`~pylog.delivery.Delivery` per (container, sink) the
container's log-opts switch on, resumed from the store at start, given a bounded time at
shutdown, and kept a while after it ends so a metrics scrape sees its final counts."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path

from .delivery import Delivery
from .durable import STATE, StateError, read_json, write_json
from .errors import PylogError
from .options import LogOptions, parse_log_options
from .record import ContainerContext
from .shaping import line_rules
from .sinks import SinkPool, configured_sinks
from .store import ContainerLog, Store

log = logging.getLogger(__name__)

OPTIONS_FILE = "log-opts.json"  # the container's log-opts, to resume its sinks after a restart

DeliveryKey = tuple[str, str]  # (container ID, sink key)


class Deliveries:
    """The live deliveries (``active``) and those that ended lately (``retired``)."""

    def __init__(self, state_dir: Path, store: Store,
                 context_of: Callable[[str], ContainerContext],
                 on_ended: Callable[[str, Delivery], None]) -> None:
        self.store = store
        self.sinks = SinkPool(state_dir)
        self.active: dict[DeliveryKey, Delivery] = {}
        self.retired: dict[DeliveryKey, tuple[float, Delivery]] = {}
        self.linger = 0.0  # seconds a finished delivery is kept for the metrics
        self._context_of = context_of
        self._on_ended = on_ended  # (container ID, delivery): its last delivery ended

    def of(self, container_id: str) -> bool:
        """Any delivery of this container still running."""
        return any(cid == container_id for cid, _ in self.active)

    def save_options(self, clog: ContainerLog, config: object) -> None:
        """Keep the container's log-opts with its log, to resume its sinks after a restart."""
        try:
            write_json(clog.directory / OPTIONS_FILE, config)
        except OSError as e:
            log.warning("could not save the log-opts of %s: %s", clog.directory.name[:12], e)

    def resume(self) -> None:
        """Sinks pick up where they were: every stored container whose log-opts switch on a
        sink gets its deliveries back (one that had delivered everything ends at once)."""
        for cid in self.store.stored_ids():
            try:
                config = read_json(self.store.root / cid / OPTIONS_FILE)
                if config is None:
                    continue
                options = parse_log_options(config)
            except (OSError, StateError, ValueError, PylogError) as e:
                log.warning("%s: cannot resume its sinks: %s", cid[:12], e)
                continue
            if configured_sinks(options):
                clog = self.store.get(cid)
                assert clog is not None
                self.start(cid, clog, options)

    def start(self, cid: str, clog: ContainerLog, options: LogOptions) -> None:
        """One delivery per sink the container's options switch on (one that is still
        catching up from the container's previous run goes on instead)."""
        for config in configured_sinks(options):
            key = (cid, config.key)
            if key in self.active:
                continue
            sink = self.sinks.acquire(config)
            delivery = Delivery(clog, sink, functools.partial(self._context_of, cid),
                                rules=line_rules(options.values))
            retired = self.retired.pop(key, None)
            if retired is not None:
                delivery.carry_over(retired[1])  # its metrics go on, never backwards
            self.active[key] = delivery
            delivery.start().add_done_callback(functools.partial(self._done, key, delivery))

    def _done(self, key: DeliveryKey, delivery: Delivery, task: asyncio.Task[None]) -> None:
        if self.active.get(key) is delivery:
            del self.active[key]
            if self.linger > 0:
                self.retired[key] = (time.monotonic(), delivery)
                self.prune(time.monotonic() - self.linger)
            if not self.of(key[0]):
                self._on_ended(key[0], delivery)
        if not task.cancelled() and task.exception() is not None:
            log.error("delivery to %s for %s failed: %r", delivery.sink.key, key[0][:12],
                      task.exception())
        release = asyncio.ensure_future(self.sinks.release(delivery.sink))
        release.add_done_callback(lambda _: self.store.release(key[0]))

    def prune(self, cutoff: float) -> None:
        """Forget deliveries that ended before ``cutoff``, and any that came back."""
        for key in [k for k, (t, _) in self.retired.items() if t < cutoff or k in self.active]:
            del self.retired[key]

    async def close(self, grace: float) -> None:
        """Sinks deliver what is stored for ``grace`` seconds; the rest waits for the next start."""
        deliveries = list(self.active.values())
        for d in deliveries:
            d.closing = True
            d.clog.wake()
        tasks = [d.task for d in deliveries if d.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await asyncio.to_thread(STATE.flush)  # every cursor handed over is on disk
        await self.sinks.close()
