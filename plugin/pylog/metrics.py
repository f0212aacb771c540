"""Operations: Prometheus metrics, health, readiness and the live namespace map.

Everything here *reads* what pylog counts anyway, at the moment it is asked: the store's
``stats`` (one integer add per frame in :meth:`pylog.store.ContainerLog._index`), the FIFO
streams', each delivery's and each sink's counters. Nothing on the hot path touches a Prometheus
object; :class:`PylogCollector` builds the metric families at scrape time.

The listener (``pylog serve --metrics-address HOST:PORT``, off by default) serves:

- ``/metrics``  Prometheus text (or OpenMetrics, as the scraper asks), prometheus_client's
- ``/healthz``  200 ``ok`` while the plugin serves dockerd
- ``/readyz``   200 when every sink is up or retrying within limits, else 503; reasons in the body
- ``/``         the live namespace map (one HTML page, no external resources)
- ``/map.json`` what the map draws, refreshed by it every 2 s

Label cardinality is bounded: a container's series exist while it is attached or a delivery of
its lines is still running, then for :data:`LINGER` seconds more (so a scrape sees the final
values of a short-lived container), then they are gone.
"""

from __future__ import annotations

import importlib.resources
import json
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry

from . import __version__
from .delivery import READ_BYTES
from .pacing import INGEST

if TYPE_CHECKING:
    from .delivery import Delivery
    from .driver import Driver
    from .sinks.base import Sink
    from .store import ContainerLog

log = logging.getLogger(__name__)

LINGER = 60.0  # seconds a finished container's series stay, so its final values get scraped
READY_MAX_FAILING = 60.0  # default: a sink failing longer than this makes pylog not ready
READY_SPOOL_RATIO = 0.9  # a delivery this far into the store's retention makes pylog not ready
NS_TYPES = ("net", "pid", "ipc", "uts", "mnt", "cgroup", "user", "time")

CONTAINER_LABELS = ["container_id", "container_name"]
DELIVERY_LABELS = [*CONTAINER_LABELS, "sink", "sink_kind"]
SINK_LABELS = ["sink", "sink_kind"]


# ---------------------------------------------------------------------------------------------
# What there is to report, gathered from the driver (at scrape time, on the event loop).


@dataclass
class ContainerView:
    container_id: str
    name: str
    clog: ContainerLog
    attachments: int


def container_views(driver: Driver, now: float | None = None) -> list[ContainerView]:
    """Attached containers, containers whose deliveries still run, and those that finished
    less than LINGER seconds ago (each once: the live one wins)."""
    now = time.monotonic() if now is None else now
    out: dict[str, ContainerView] = {}
    for cid, c in driver.containers.items():
        out[cid] = ContainerView(cid, c.name, c.clog, len(c.attachments))
    for (cid, _), d in driver.deliveries.items():
        if cid not in out:
            out[cid] = ContainerView(cid, d.container_name, d.clog, 0)
    driver.prune_retired(now)
    for cid, (_, name, clog) in driver.retired_logs.items():
        if cid not in out:
            out[cid] = ContainerView(cid, name, clog, 0)
    return sorted(out.values(), key=lambda v: (v.name, v.container_id))


def delivery_views(driver: Driver, now: float | None = None) -> list[Delivery]:
    now = time.monotonic() if now is None else now
    live = dict(driver.deliveries)
    driver.prune_retired(now)
    for key, (_, d) in driver.retired_deliveries.items():
        live.setdefault(key, d)
    return sorted(live.values(), key=lambda d: (d.container_name, d.container_id, d.sink.key))


def _sink_state(sink: Sink, deliveries: list[Delivery]) -> str:
    """up, retrying, or spooling: up, but more than one batch (1 MiB of store) behind."""
    if sink.status.state != "up":
        return sink.status.state
    if any(d.spool_bytes > READ_BYTES for d in deliveries):
        return "spooling"
    return "up"


def sink_report(driver: Driver) -> list[dict[str, Any]]:
    """Each sink in use: its state, how far behind it is, its last error (no credentials: the
    sinks keep none in their options or errors)."""
    by_key: dict[str, list[Delivery]] = {}
    for d in driver.deliveries.values():
        by_key.setdefault(d.sink.key, []).append(d)
    now = time.time()
    out = []
    for key, sink in sorted(driver.supervisor.sinks.sinks.items()):
        ds = by_key.get(key, [])
        lags = [lag for lag in (d.lag_seconds() for d in ds) if lag is not None]
        st = sink.status
        out.append({
            "sink": key,
            "kind": sink.KIND,
            "target": sink.target,
            "state": _sink_state(sink, ds),
            "spool_bytes": sum(d.spool_bytes for d in ds),
            "lag_seconds": round(max(lags, default=0.0), 3),
            "containers": len(ds),
            "in_flight_lines": sum(d.in_flight for d in ds),
            "delivered_lines": st.delivered_lines,
            "retries": st.retries,
            "failures": st.failures,
            "failing_seconds": round(now - st.failing_since, 3) if st.failing_since else 0.0,
            "last_error": st.last_error,
            "last_success": st.last_success,
            "retention_bytes": min((d.clog.retention_bytes for d in ds), default=0),
            "max_spool_ratio": round(max((d.spool_bytes / d.clog.retention_bytes
                                          for d in ds if d.clog.retention_bytes), default=0.0),
                                     4),
        })
    return out


def readiness(driver: Driver, max_failing: float = READY_MAX_FAILING,
              spool_ratio: float = READY_SPOOL_RATIO) -> list[str]:
    """Why pylog is not ready (empty: ready). Every sink must be up, or retrying for at most
    ``max_failing`` seconds, and no delivery may be more than ``spool_ratio`` of the way into
    its container's retention (beyond it the oldest lines are deleted before they are sent)."""
    if driver.closing:
        return ["pylog is shutting down"]
    reasons = []
    for s in sink_report(driver):
        if s["failures"] and s["failing_seconds"] > max_failing:
            reasons.append(f"sink {s['sink']} ({s['target']}) has been failing for "
                           f"{s['failing_seconds']:.0f} s (limit {max_failing:g} s): "
                           f"{s['last_error']}")
        if s["max_spool_ratio"] > spool_ratio:
            reasons.append(f"sink {s['sink']} ({s['target']}) is {s['max_spool_ratio']:.0%} of "
                           f"the way into a container's store retention (limit "
                           f"{spool_ratio:.0%}): its oldest undelivered lines are about to be "
                           f"deleted")
    return reasons


# ---------------------------------------------------------------------------------------------
# Prometheus


def _counter(name: str, doc: str, labels: list[str]) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=labels)


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


class PylogCollector(Collector):
    """Reads pylog's own counters when Prometheus scrapes."""

    def __init__(self, driver: Driver, max_failing: float = READY_MAX_FAILING) -> None:
        self.driver = driver
        self.max_failing = max_failing

    def collect(self) -> Iterable[Metric]:
        return list(self._collect())

    def _collect(self) -> Iterator[Metric]:
        driver = self.driver
        now = time.monotonic()

        info = _gauge("pylog_info", "pylog's version (always 1)", ["version"])
        info.add_metric([__version__], 1)
        yield info
        g = _gauge("pylog_attached_containers", "Containers attached now (logging to pylog)", [])
        g.add_metric([], len(driver.containers))
        yield g
        g = _gauge("pylog_attachments", "FIFOs being read now (a container can have more than "
                   "one, e.g. during `docker logs` of a stopped one)", [])
        g.add_metric([], len(driver.attachments))
        yield g
        g = _gauge("pylog_deliveries", "Deliveries running now (one per container and sink)", [])
        g.add_metric([], len(driver.deliveries))
        yield g
        c = _counter("pylog_namespace_lookups_failed", "Containers whose namespaces could not be "
                     "found while they were attached", [])
        c.add_metric([], driver.enrichment.lookups_failed)
        yield c
        c = _counter("pylog_event_loop_held", "Times the event loop was held over 0.1 s (no "
                     "FIFO read, no request answered meanwhile)", [])
        c.add_metric([], driver.loop_lag.held)
        yield c
        c = _counter("pylog_event_loop_held_seconds", "Seconds the event loop was held, in "
                     "holds over 0.1 s", [])
        c.add_metric([], driver.loop_lag.held_seconds)
        yield c
        c = _counter("pylog_catch_up_paused_seconds", "Seconds deliveries of stopped containers "
                     "paused while live containers' streams moved bytes (live streams first)", [])
        c.add_metric([], INGEST.paused_s)
        yield c
        ready = _gauge("pylog_ready", "1 when /readyz answers 200 (every sink up or retrying "
                       "within limits), else 0", [])
        ready.add_metric([], 0 if readiness(driver, self.max_failing) else 1)
        yield ready

        # Per container.
        lines_in = _counter("pylog_lines_in", "Log entries stored (one per line; a line over "
                            "16 KiB is one per 16 KiB piece, as dockerd sends it)",
                            CONTAINER_LABELS)
        bytes_in = _counter("pylog_bytes_in", "Bytes read from the container's FIFO and stored "
                            "(dockerd's framing included)", CONTAINER_LABELS)
        reads = _counter("pylog_fifo_reads", "Reads (splices) that moved bytes out of the "
                         "container's FIFO", CONTAINER_LABELS)
        corrupt = _counter("pylog_corrupt_regions", "Regions of the FIFO's bytes that were no "
                           "frames, skipped", CONTAINER_LABELS)
        rotations = _counter("pylog_store_rotations", "Store files rotated (max-size)",
                             CONTAINER_LABELS)
        attachments = _gauge("pylog_container_attachments", "The container's FIFOs being read "
                             "now (0: it stopped logging and a delivery is still catching up)",
                             CONTAINER_LABELS)
        dropped_bytes = _counter(
            "pylog_dropped_bytes", "Bytes lost, by reason: corrupt_frame (not a frame, or a half "
            "frame its writer left), disk_full (the store could not write them), spool_full (the "
            "store's retention deleted them before the sink read them)", [*DELIVERY_LABELS,
                                                                          "reason"])
        dropped_lines = _counter(
            "pylog_dropped_lines", "Lines lost, by reason: rejected_by_sink (the sink's server "
            "refused the line for good: Elasticsearch, OTLP, Loki; it is kept in the "
            "dead-letter file)",
            [*DELIVERY_LABELS, "reason"])
        for v in container_views(driver, now):
            labels = [v.container_id[:12], v.name]
            st = v.clog.stats
            lines_in.add_metric(labels, st.frames)
            bytes_in.add_metric(labels, st.bytes)
            reads.add_metric(labels, st.reads)
            corrupt.add_metric(labels, st.corrupt_regions)
            rotations.add_metric(labels, st.rotations)
            attachments.add_metric(labels, v.attachments)
            dropped_bytes.add_metric([*labels, "", "", "corrupt_frame"], st.corrupt_bytes)
            dropped_bytes.add_metric([*labels, "", "", "disk_full"], st.dropped_bytes)

        # Per container and sink.
        delivered = _counter("pylog_delivered_lines", "Lines the sink took (acknowledged)",
                             DELIVERY_LABELS)
        spool = _gauge("pylog_spool_bytes", "Stored bytes the sink has not taken yet: how far "
                       "the delivery's cursor is behind the end of the container's store",
                       DELIVERY_LABELS)
        queue = _gauge("pylog_queue_lines", "Lines in flight: read from the store and handed to "
                       "the sink, not yet acknowledged (one batch at most; 0 between batches)",
                       DELIVERY_LABELS)
        retries = _counter("pylog_delivery_retries", "Failed sends of a batch, each retried "
                           "after a backoff", DELIVERY_LABELS)
        restarts = _counter("pylog_delivery_restarts", "Unexpected failures of the delivery (a "
                            "bug in a sink or in pylog), each logged and followed by a start "
                            "again from the saved cursor after a backoff", DELIVERY_LABELS)
        lag = _gauge("pylog_delivery_lag_seconds", "Time of the newest stored line minus time "
                     "of the last line the sink took; 0 when caught up", DELIVERY_LABELS)
        last_ok = _gauge("pylog_last_success_timestamp_seconds", "When the sink last took a "
                         "batch of this container's lines (Unix time; absent before the first)",
                         DELIVERY_LABELS)
        limited = _counter("pylog_rate_limited_lines", "Lines (events, with multiline rules) "
                           "the container's rate-limit kept from the sink; the store keeps them",
                           DELIVERY_LABELS)
        parsed = _counter("pylog_parse_lines", "With parse=json, lines by result: parsed (a JSON "
                          "object, sent as fields) or sent as text because not_object, too_large "
                          "or too_deep", [*DELIVERY_LABELS, "result"])
        for d in delivery_views(driver, now):
            labels = [d.container_id[:12], d.container_name, d.sink.key, d.sink.KIND]
            if d.rules.rate is not None:
                limited.add_metric(labels, d.counts.limit.held)
            if d.rules.parse is not None:
                for result, n in asdict(d.counts.parse).items():
                    parsed.add_metric([*labels, result], n)
            delivered.add_metric(labels, d.lines)
            spool.add_metric(labels, d.spool_bytes)
            queue.add_metric(labels, d.in_flight)
            retries.add_metric(labels, d.retries)
            restarts.add_metric(labels, d.restarts)
            seconds = d.lag_seconds()
            if seconds is not None:
                lag.add_metric(labels, seconds)
            if d.last_success:
                last_ok.add_metric(labels, d.last_success)
            dropped_bytes.add_metric([*labels, "spool_full"], d.dropped_bytes)
            dropped_lines.add_metric([*labels, "rejected_by_sink"], d.rejected)

        yield from (lines_in, bytes_in, reads, corrupt, rotations, attachments, dropped_bytes,
                    dropped_lines, delivered, spool, queue, retries, restarts, lag, last_ok,
                    limited, parsed)

        # Per sink.
        sink_info = _gauge("pylog_sink_info", "A sink in use and where it sends (always 1)",
                           [*SINK_LABELS, "target"])
        up = _gauge("pylog_sink_up", "1 when the sink's last send worked, 0 while it is "
                    "retrying", SINK_LABELS)
        state = _gauge("pylog_sink_state", "The sink's state (1 for the current one): up, "
                       "retrying, or spooling (up, but more than one batch behind)",
                       [*SINK_LABELS, "state"])
        failing = _gauge("pylog_sink_failing_seconds", "How long the sink has been failing "
                         "(0 when up)", SINK_LABELS)
        sink_delivered = _counter("pylog_sink_delivered_lines", "Lines the sink took, all "
                                  "containers (since the sink was set up)", SINK_LABELS)
        sink_retries = _counter("pylog_sink_retries", "Failed sends to the sink, all containers",
                                SINK_LABELS)
        for s in sink_report(driver):
            labels = [s["sink"], s["kind"]]
            sink_info.add_metric([*labels, s["target"]], 1)
            up.add_metric(labels, 0 if s["failures"] else 1)
            for name in ("up", "retrying", "spooling"):
                state.add_metric([*labels, name], 1 if s["state"] == name else 0)
            failing.add_metric(labels, s["failing_seconds"])
            sink_delivered.add_metric(labels, s["delivered_lines"])
            sink_retries.add_metric(labels, s["retries"])
        yield from (sink_info, up, state, failing, sink_delivered, sink_retries)


# ---------------------------------------------------------------------------------------------
# The namespace map's data


def map_data(driver: Driver) -> dict[str, Any]:
    """The attached containers with their namespaces and counters (the page computes rates
    from two of these), and the sinks."""
    containers = []
    for c in sorted(driver.containers.values(), key=lambda c: c.name):
        ctx = c.context
        ns = None
        if ctx.namespaces is not None:
            ns = {t: {"key": v.key or f"{t}:{v.inode}", "inode": v.inode, "is_host": v.is_host}
                  for t, v in ctx.namespaces.items()}
        containers.append({
            "id": c.container_id,
            "short_id": c.container_id[:12],
            "name": c.name,
            "image": ctx.image_name,
            "pid": ctx.pid,
            "ns": ns,
            "lines_in": c.clog.stats.frames,
            "bytes_in": c.clog.stats.bytes,
            "sinks": [{"sink": d.sink.key, "kind": d.sink.KIND,
                       "state": d.sink.status.state, "spool_bytes": d.spool_bytes}
                      for (cid, _), d in sorted(driver.deliveries.items())
                      if cid == c.container_id],
        })
    return {"now": time.time(), "host": driver.host_name, "version": __version__,
            "containers": containers, "sinks": sink_report(driver)}


# ---------------------------------------------------------------------------------------------
# The listener


@dataclass
class OpsState:
    """What /healthz reports: set by ``pylog serve`` once the plugin socket is listening."""

    serving: bool = False


DRIVER: web.AppKey[Driver] = web.AppKey("driver")
REGISTRY: web.AppKey[CollectorRegistry] = web.AppKey("registry", CollectorRegistry)
STATE: web.AppKey[OpsState] = web.AppKey("state", OpsState)
LIMITS: web.AppKey[tuple[float, float]] = web.AppKey("limits", tuple)


def _page() -> bytes:
    return importlib.resources.files("pylog").joinpath("web/map.html").read_bytes()


async def metrics(request: web.Request) -> web.Response:
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    body = encoder(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": content_type})


async def healthz(request: web.Request) -> web.Response:
    if request.app[STATE].serving and not request.app[DRIVER].closing:
        return web.Response(text="ok\n")
    return web.Response(status=503, text="not serving\n")


async def readyz(request: web.Request) -> web.Response:
    max_failing, ratio = request.app[LIMITS]
    reasons = readiness(request.app[DRIVER], max_failing, ratio)
    if not request.app[STATE].serving:
        reasons.insert(0, "the plugin socket is not listening")
    if reasons:
        return web.Response(status=503, text="not ready\n" + "".join(f"- {r}\n" for r in reasons))
    sinks = len(request.app[DRIVER].supervisor.sinks.sinks)
    return web.Response(text=f"ready\n{sinks} sinks in use, all up or retrying within limits\n")


async def page(request: web.Request) -> web.Response:
    return web.Response(body=_page(), content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-store"})


async def map_json(request: web.Request) -> web.Response:
    return web.Response(text=json.dumps(map_data(request.app[DRIVER])),
                        content_type="application/json", headers={"Cache-Control": "no-store"})


def make_metrics_app(driver: Driver, state: OpsState, max_failing: float = READY_MAX_FAILING,
                     spool_ratio: float = READY_SPOOL_RATIO) -> web.Application:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PylogCollector(driver, max_failing))
    app = web.Application()
    app[DRIVER] = driver
    app[REGISTRY] = registry
    app[STATE] = state
    app[LIMITS] = (max_failing, spool_ratio)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/", page)
    app.router.add_get("/map.json", map_json)
    return app


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9467`` for IPv6, ``:9467`` for every address) -> (host, port)."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"metrics address {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9467")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


async def start_metrics(driver: Driver, address: str, state: OpsState,
                        max_failing: float = READY_MAX_FAILING,
                        spool_ratio: float = READY_SPOOL_RATIO) -> web.AppRunner:
    host, port = parse_address(address)
    driver.metrics_linger = LINGER
    runner = web.AppRunner(make_metrics_app(driver, state, max_failing, spool_ratio),
                           access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    log.info("metrics, health and the namespace map on http://%s:%d/",
             f"[{host}]" if ":" in host else host, port,
             extra={"event": "metrics_listening"})
    return runner


__all__ = ["LINGER", "OpsState", "PylogCollector", "container_views", "delivery_views",
           "make_metrics_app", "map_data", "parse_address", "readiness", "sink_report",
           "start_metrics"]
