"""An OTLP/HTTP logs receiver standing in for an OpenTelemetry collector (none can be installed
here): it does what the collector's otlp receiver does with every request — gunzips it, parses
it (aiohttp does, as the collector's HTTP server does) as an ``ExportLogsServiceRequest`` with the official ``opentelemetry-proto`` classes
(protobuf, or OTLP/JSON through protobuf's JSON mapping), and answers with an
``ExportLogsServiceResponse`` in the request's own encoding. Tests can queue other answers
(a status, headers, a partial success) for the next requests.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tests.peers.threaded import ThreadedPeer


def plain(value: AnyValue) -> Any:
    """An AnyValue as a Python value."""
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [plain(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: plain(kv.value) for kv in value.kvlist_value.values}
    return None if kind is None else getattr(value, kind)


@dataclass
class Record:
    """One LogRecord as received, with its resource's attributes."""

    resource: dict[str, Any]
    scope: str
    time_unix_nano: int
    observed_time_unix_nano: int
    body: Any
    attributes: dict[str, Any]
    severity_number: int


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    rejected: int = 0  # a partial success naming this many rejected records
    message: str = ""


class OtlpReceiver:
    def __init__(self) -> None:
        self.records: list[Record] = []
        self.requests: list[dict[str, Any]] = []  # per request: headers, media, bytes, count
        self.replies: list[Answer] = []  # answered in turn, then 200s
        self.arrived = asyncio.Event()
        self.busy_s = 0.0  # time spent decoding
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, port: int = 0, ssl_context: ssl.SSLContext | None = None) -> int:
        app = web.Application(client_max_size=256 << 20)
        app.router.add_post("/{base:.*}v1/logs", self._export)
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
        return f"http://127.0.0.1:{self.port}"

    async def _export(self, request: web.Request) -> web.Response:
        data = await request.read()  # aiohttp has gunzipped it (Content-Encoding: gzip)
        t0 = time.process_time()
        media = request.headers.get("content-type", "")
        msg = ExportLogsServiceRequest()
        if media.startswith("application/json"):
            json_format.Parse(data.decode(), msg)
        else:
            msg.ParseFromString(data)
        answer = self.replies.pop(0) if self.replies else Answer()
        count = 0
        if 200 <= answer.status < 300:
            count = self._keep(msg)
        self.busy_s += time.process_time() - t0
        received = sum(len(sl.log_records) for rl in msg.resource_logs for sl in rl.scope_logs)
        self.requests.append({"headers": dict(request.headers), "media": media,
                              "received": received,
                              "bytes": int(request.headers.get("content-length", len(data))),
                              "records": count, "status": answer.status,
                              "path": request.path, "at": time.monotonic()})
        self.arrived.set()
        return self._reply(answer, media)

    def _keep(self, msg: ExportLogsServiceRequest) -> int:
        n = 0
        for rl in msg.resource_logs:
            resource = {kv.key: plain(kv.value) for kv in rl.resource.attributes}
            for sl in rl.scope_logs:
                for r in sl.log_records:
                    self.records.append(Record(
                        resource, sl.scope.name, r.time_unix_nano, r.observed_time_unix_nano,
                        plain(r.body), {kv.key: plain(kv.value) for kv in r.attributes},
                        r.severity_number))
                    n += 1
        return n

    @staticmethod
    def _reply(answer: Answer, media: str) -> web.Response:
        if not 200 <= answer.status < 300:
            return web.Response(status=answer.status, headers=answer.headers,
                                text=answer.message or "refused")
        resp = ExportLogsServiceResponse()
        if answer.rejected:
            resp.partial_success.rejected_log_records = answer.rejected
            resp.partial_success.error_message = answer.message
        if media.startswith("application/json"):
            return web.Response(text=json_format.MessageToJson(resp),
                                content_type="application/json", headers=answer.headers)
        return web.Response(body=resp.SerializeToString(), headers=answer.headers,
                            content_type="application/x-protobuf")

    async def wait_for(self, count: int, timeout: float = 60.0) -> None:
        async def enough() -> None:
            while len(self.records) < count:
                self.arrived.clear()
                await self.arrived.wait()
        await asyncio.wait_for(enough(), timeout)


class ThreadedOtlpReceiver(ThreadedPeer):
    """An OtlpReceiver on its own loop in a thread, for synchronous (e2e) tests."""

    def __init__(self) -> None:
        super().__init__(OtlpReceiver())

    def records(self) -> list[Record]:
        return self.thread.call(list, self.peer.records)

    def wait_for(self, count: int, timeout: float = 120) -> list[Record]:  # type: ignore[override]
        super().wait_for(count, timeout)
        return self.records()
