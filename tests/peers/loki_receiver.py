"""A Loki push API receiver standing in for Loki (none can be installed here): ``POST
/loki/api/v1/push`` decoded as Loki's distributor does — snappy (block format) then
``logproto.PushRequest`` for ``application/x-protobuf``; gunzipped JSON otherwise — every
stream's labels parsed from their Prometheus form, every entry kept with its structured
metadata. Answers 204, or what a test queued (a status, headers, a body such as Loki's "total
ignored: N out of M")."""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

import cramjam
from aiohttp import web

from pylog.proto.loki_push_pb2 import PushRequest
from tests.peers.threaded import ThreadedPeer

_PAIR = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')


def parse_labels(text: str) -> dict[str, str]:
    """``{a="x", b="y"}`` as Loki's parser reads it; ValueError if it is not that."""
    text = text.strip()
    if not (text.startswith("{") and text.endswith("}")):
        raise ValueError(f"not a label set: {text!r}")
    inner, out, pos = text[1:-1], {}, 0
    while pos < len(inner):
        m = _PAIR.match(inner, pos)
        if m is None:
            raise ValueError(f"bad label set at {pos}: {text!r}")
        out[m.group(1)] = json.loads(f'"{m.group(2)}"')
        pos = m.end()
    return out


@dataclass
class Entry:
    labels: dict[str, str]
    time_ns: int
    line: str
    metadata: dict[str, str]


@dataclass
class Reply:
    status: int = 204
    headers: dict[str, str] = field(default_factory=dict)
    text: str = ""


def decode_push(body: bytes, media: str) -> list[Entry]:
    out = []
    if media.startswith("application/x-protobuf"):
        req = PushRequest.FromString(bytes(cramjam.snappy.decompress_raw(body)))
        for s in req.streams:
            labels = parse_labels(s.labels)
            for e in s.entries:
                out.append(Entry(labels, e.timestamp.seconds * 1_000_000_000 + e.timestamp.nanos,
                                 e.line, {p.name: p.value for p in e.structuredMetadata}))
        return out
    for s in json.loads(body)["streams"]:
        for value in s["values"]:
            out.append(Entry(dict(s["stream"]), int(value[0]), value[1],
                             dict(value[2]) if len(value) > 2 else {}))
    return out


class LokiReceiver:
    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.requests: list[dict[str, Any]] = []
        self.replies: list[Reply] = []  # answered in turn, then 204s
        self.arrived = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, port: int = 0, ssl_context: ssl.SSLContext | None = None) -> int:
        app = web.Application(client_max_size=256 << 20)
        app.router.add_post("/loki/api/v1/push", self._push)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port or self.port,
                           ssl_context=ssl_context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/loki/api/v1/push"

    async def _push(self, request: web.Request) -> web.Response:
        body = await request.read()  # gunzipped by aiohttp if Content-Encoding says gzip
        entries = decode_push(body, request.headers.get("content-type", ""))
        reply = self.replies.pop(0) if self.replies else Reply()
        kept = 0
        if 200 <= reply.status < 300:
            self.entries += entries
            kept = len(entries)
        elif reply.status == 400 and "total ignored:" in reply.text:
            m = re.search(r"total ignored: (\d+)", reply.text)
            n = int(m.group(1)) if m else 0
            self.entries += entries[n:]  # Loki took the others
            kept = len(entries) - n
        self.requests.append({"headers": dict(request.headers), "entries": len(entries),
                              "kept": kept, "status": reply.status, "at": time.monotonic(),
                              "bytes": int(request.headers.get("content-length", len(body)))})
        self.arrived.set()
        return web.Response(status=reply.status, headers=reply.headers, text=reply.text)

    async def wait_for(self, count: int, timeout: float = 60.0) -> None:
        async def enough() -> None:
            while len(self.entries) < count:
                self.arrived.clear()
                await self.arrived.wait()
        await asyncio.wait_for(enough(), timeout)


class ThreadedLokiReceiver(ThreadedPeer):
    """A LokiReceiver on its own loop in a thread, for synchronous (e2e) tests."""

    def __init__(self) -> None:
        super().__init__(LokiReceiver())

    def entries(self) -> list[Entry]:
        return self.thread.call(list, self.peer.entries)

    def wait_for(self, count: int, timeout: float = 120) -> list[Entry]:  # type: ignore[override]
        super().wait_for(count, timeout)
        return self.entries()
