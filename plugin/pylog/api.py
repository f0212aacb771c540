"""The five endpoints of the Docker log-driver plugin protocol, over HTTP on a unix socket.

Parses and validates each request, hands it to the :class:`Driver`, and answers the way dockerd
reads answers: JSON with an ``Err`` key (empty on success), request bodies possibly empty.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from .driver import Driver
from .errors import PylogError, RequestError, UnknownContainerError

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/vnd.docker.plugins.v1.2+json"
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


def make_app(driver: Driver) -> web.Application:
    app = web.Application(client_max_size=16 << 20)
    app[DRIVER_KEY] = driver
    app.router.add_post("/Plugin.Activate", activate)
    app.router.add_post("/LogDriver.Capabilities", capabilities)
    app.router.add_post("/LogDriver.StartLogging", start_logging)
    app.router.add_post("/LogDriver.StopLogging", stop_logging)
    app.router.add_post("/LogDriver.ReadLogs", read_logs)
    return app
