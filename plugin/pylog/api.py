"""The five endpoints of the Docker log-driver plugin protocol, over HTTP on a unix socket.

Parses and validates each request, hands it to the :class:`Driver`, and answers the way dockerd
reads answers: JSON with an ``Err`` key (empty on success), request bodies possibly empty.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Sequence
from typing import Any

import psutil
from aiohttp import web

from .driver import Driver
from .entry import LogEntry
from .errors import PylogError, RequestError, UnknownContainerError
from .logreader import ReadConfig
from .metrics import sink_report
from .reassembly import Line, Reassembler
from .record import ContainerContext, TimestampFormatter, record_json

log = logging.getLogger(__name__)

DRIVER_KEY: web.AppKey[Driver] = web.AppKey("driver", Driver)


def _reply(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type="application/json")


def _err(message: str, status: int = 200) -> web.Response:
    return _reply({"Err": message}, status)


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise RequestError(f"request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise RequestError("request body must be a JSON object")
    return body


async def activate(request: web.Request) -> web.Response:
    return _reply({"Implements": ["LogDriver"]})


async def capabilities(request: web.Request) -> web.Response:
    return _reply({"Cap": {"ReadLogs": True}})


async def start_logging(request: web.Request) -> web.Response:
    try:
        body = await _body(request)
        request.app[DRIVER_KEY].start_logging(body.get("File"), body.get("Info"))
    except PylogError as e:
        log.warning("StartLogging refused: %s", e)
        return _err(str(e))
    return _err("")


async def stop_logging(request: web.Request) -> web.Response:
    try:
        body = await _body(request)
        request.app[DRIVER_KEY].stop_logging(body.get("File"))
    except PylogError as e:
        log.warning("StopLogging: %s", e)
        return _err(str(e))
    return _err("")


async def read_logs(request: web.Request) -> web.StreamResponse:
    try:
        body = await _body(request)
        # The published docs call it "ReadConfig"; dockerd sends "Config".
        chunks = request.app[DRIVER_KEY].read_logs(body.get("Info"), body.get("Config"))
    except UnknownContainerError as e:
        return _err(str(e), 404)
    except PylogError as e:
        return _err(str(e), 400)
    resp = web.StreamResponse(headers={"Content-Type": "application/x-json-stream"})
    await resp.prepare(request)
    try:
        async for chunk in chunks:
            await resp.write(chunk)
        await resp.write_eof()
    except (ConnectionError, RuntimeError):
        log.debug("ReadLogs reader went away")
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
    return resp


# ---------------------------------------------------------------------------------------------
# pylog's own routes, beside dockerd's, for `pylog ps / inspect / tail` (same socket, same root).


async def list_containers(request: web.Request) -> web.Response:
    driver = request.app[DRIVER_KEY]
    out = [dict(c.context.fields(), attachments=len(c.attachments))
           for c in sorted(driver.containers.values(), key=lambda c: c.name)]
    return _reply({"Containers": out})


async def _container_id(request: web.Request) -> str:
    return await request.app[DRIVER_KEY].resolve(request.match_info["ref"])


async def inspect_container(request: web.Request) -> web.Response:
    driver = request.app[DRIVER_KEY]
    try:
        cid = await _container_id(request)
    except UnknownContainerError as e:
        return _err(str(e), 404)
    fields = (await asyncio.to_thread(driver.context_of, cid)).fields()
    container = driver.containers.get(cid)
    fields["attachments"] = len(container.attachments) if container else 0
    return _reply(fields)


async def container_records(request: web.Request) -> web.StreamResponse:
    """The container's stored lines as records (JSON lines), with its current context."""
    driver = request.app[DRIVER_KEY]
    try:
        cid = await _container_id(request)
        tail = int(request.query.get("tail", "-1"))
        cfg = ReadConfig(tail=tail, follow=request.query.get("follow") in ("1", "true"))
        batches = driver.read_entries(cid, cfg)
    except UnknownContainerError as e:
        return _err(str(e), 404)
    except (ValueError, PylogError) as e:
        return _err(str(e), 400)
    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await resp.prepare(request)
    reassembler = Reassembler()
    ts = TimestampFormatter()
    await asyncio.to_thread(driver.context_of, cid)  # a stopped one's is read (then kept)
    try:
        async for entries in batches:
            ctx = driver.context_of(cid)
            # Reassembling and encoding a batch costs what the batch holds: in a worker.
            await resp.write(await asyncio.to_thread(_records, reassembler, entries, ctx, ts))
        rest = reassembler.flush()
        if rest:
            await resp.write(_records_of(rest, driver.context_of(cid), ts))
        await resp.write_eof()
    except (ConnectionError, RuntimeError):
        pass
    finally:
        await batches.aclose()  # type: ignore[attr-defined]
    return resp


def _records(reassembler: Reassembler, entries: Sequence[LogEntry], ctx: ContainerContext,
             ts: TimestampFormatter) -> bytes:
    return _records_of([ln for ln in map(reassembler.push, entries) if ln is not None], ctx, ts)


def _records_of(lines: Sequence[Line], ctx: ContainerContext, ts: TimestampFormatter) -> bytes:
    return "".join(record_json(line, ctx, ts) + "\n" for line in lines).encode()


async def list_sinks(request: web.Request) -> web.Response:
    """Each sink in use: state (up, retrying, spooling), bytes behind, last error."""
    return _reply({"Sinks": sink_report(request.app[DRIVER_KEY])})


async def runtime_stats(request: web.Request) -> web.Response:
    """What pylog holds right now (for tests and operators): tasks, fds, memory, registries."""
    driver = request.app[DRIVER_KEY]
    proc = psutil.Process()
    return _reply({
        "tasks": len(asyncio.all_tasks()),
        "fds": len(os.listdir("/proc/self/fd")),
        "rss_bytes": proc.memory_info().rss,
        "attachments": len(driver.attachments),
        "containers": len(driver.containers),
        "deliveries": len(driver.deliveries),
        "open_logs": driver.store.open_count,
        "namespace_holders": driver.enrichment.registry.count,
    })


def make_app(driver: Driver) -> web.Application:
    app = web.Application(client_max_size=16 << 20)
    app[DRIVER_KEY] = driver
    app.router.add_post("/Plugin.Activate", activate)
    app.router.add_post("/LogDriver.Capabilities", capabilities)
    app.router.add_post("/LogDriver.StartLogging", start_logging)
    app.router.add_post("/LogDriver.StopLogging", stop_logging)
    app.router.add_post("/LogDriver.ReadLogs", read_logs)
    app.router.add_get("/pylog/v1/containers", list_containers)
    app.router.add_get("/pylog/v1/stats", runtime_stats)
    app.router.add_get("/pylog/v1/sinks", list_sinks)
    app.router.add_get("/pylog/v1/containers/{ref}", inspect_container)
    app.router.add_get("/pylog/v1/containers/{ref}/records", container_records)
    return app
