"""Receivers for ``bench/run.py``, each run in its own process (``python bench/peers.py KIND``),
so that a receiver never competes with the harness's event loop and its CPU can be measured.

Kinds:

Each does the work of the real peer for every record, whichever driver sent it, and never looks
for a sender's bytes:

- ``forward``: a fluentd Forward receiver — :class:`tests.peers.fluentd_receiver.FluentdReceiver`
  (every Forward mode, acks ``chunk`` options as fluentd's ``in_forward`` does, which pylog's
  fluentd sink asks for by default). Like in_forward it unpacks every entry into objects (the
  record's map, EventTime), then counts instead of keeping the record: the test receiver's list of
  a million records would cost gigabytes.
- ``syslog``: RFC 6587 octet-counted syslog over TCP (what pylog's syslog sink sends for
  ``tcp://`` with ``rfc5424``); newline-framed messages are accepted as well. Every message is
  parsed as rsyslog's RFC 5424 parser does: header fields, each structured-data element with its
  parameters unescaped, and the message.
- ``es``: the part of the Elasticsearch API pylog's sink uses — ``PUT _index_template``,
  ``PUT _data_stream``, ``POST <index>/_bulk`` — parsing every action and document as JSON and
  answering every ``create`` with 201.

- ``otlp``: an OpenTelemetry collector's OTLP/HTTP logs receiver — ``POST /v1/logs``, gunzipped
  by aiohttp as by the collector's HTTP server, every request parsed as an
  ``ExportLogsServiceRequest`` with the opentelemetry-proto classes (protobuf or OTLP/JSON),
  every record's body read; answered with an ``ExportLogsServiceResponse``. The tag is the
  resource's ``pylog.tag``.

- ``loki``: Loki's push API — ``POST /loki/api/v1/push``, snappy then ``logproto.PushRequest``
  (or gunzipped JSON), every stream's labels parsed, every entry and its structured metadata
  read (:func:`tests.peers.loki_receiver.decode_push`); answered 204. The tag is the entry's
  structured metadata ``tag``.

Every receiver keeps, per tag (the fluentd tag, the syslog APP-NAME, the record's ``tag``), how
many lines arrived, which distinct lines (by the number the benchmark's lines end with: ``seq``
output, or 4 KiB lines ending in a 7-digit number), duplicates, and the wall-clock times
(``time.time_ns()``, the clock dockerd's ``StartedAt`` uses) of the first and the last arrival.
It also adds up the seconds it spent handling messages (``busy_s``), which gives its own capacity.

Control, one command per line on stdin, one JSON answer per line on stdout: ``stats`` and
``reset``. The first line it prints is ``{"port": N}`` once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.peers.fluentd_receiver import FluentdReceiver, forward_events

NUMBER_DIGITS = 7  # every benchmark line ends with its number (at most 7 digits)


class Tally:
    """What arrived for one tag."""

    __slots__ = ("distinct", "dups", "events", "first_ns", "hi", "last_ns", "lo", "marks",
                 "other")

    def __init__(self) -> None:
        self.events = 0
        self.distinct = 0
        self.dups = 0
        self.other = 0  # lines without a number (a warm-up container's)
        self.lo = 1 << 62
        self.hi = -1
        self.first_ns = 0
        self.last_ns = 0
        self.marks = bytearray(1024)

    def add(self, numbers: list[int], other: int = 0) -> None:
        now = time.time_ns()
        if not self.events:
            self.first_ns = now
        self.last_ns = now
        self.events += len(numbers) + other
        self.other += other
        if not numbers:
            return
        marks = self.marks
        top = max(numbers)
        if top >= len(marks):
            marks.extend(bytes(max(top + 1, 2 * len(marks)) - len(marks)))
        dups = 0
        for n in numbers:
            if marks[n]:
                dups += 1
            else:
                marks[n] = 1
        self.dups += dups
        self.distinct += len(numbers) - dups
        self.lo = min(self.lo, min(numbers))
        self.hi = max(self.hi, top)

    def as_dict(self) -> dict[str, int]:
        return {"events": self.events, "distinct": self.distinct, "dups": self.dups,
                "other": self.other, "lo": self.lo if self.hi >= 0 else 0, "hi": self.hi,
                "first_ns": self.first_ns, "last_ns": self.last_ns}


def number_of(text: bytes | str) -> int | None:
    try:
        return int(text[-NUMBER_DIGITS:])
    except ValueError:
        pass
    # A JSON line's number is its last field's: `..."n":1234567}`.
    found = (_TRAILING_STR if isinstance(text, str) else _TRAILING).search(text)
    return int(found.group(1)) if found else None


_TRAILING = re.compile(rb'(\d{1,7})"?}$')  # 7: NUMBER_DIGITS
_TRAILING_STR = re.compile(_TRAILING.pattern.decode())


class Counter:
    """Tallies per tag, and the time spent handling messages."""

    def __init__(self) -> None:
        self.tags: dict[str, Tally] = {}
        self.busy = 0.0
        self.messages = 0
        self.bytes = 0  # received on the wire (request bodies as sent, for _bulk)
        self.unknown_requests: list[str] = []

    def tally(self, tag: str) -> Tally:
        t = self.tags.get(tag)
        if t is None:
            t = self.tags[tag] = Tally()
        return t

    def add_texts(self, tag: str, texts: list[Any]) -> None:
        numbers = []
        other = 0
        for text in texts:
            n = number_of(text) if text else None
            if n is None:
                other += 1
            else:
                numbers.append(n)
        self.tally(tag).add(numbers, other)

    def stats(self) -> dict[str, Any]:
        return {"tags": {k: v.as_dict() for k, v in self.tags.items()},
                "events": sum(v.events for v in self.tags.values()),
                "busy_s": self.busy, "messages": self.messages, "bytes": self.bytes,
                "pid": os.getpid(),
                "unknown_requests": self.unknown_requests[-5:]}

    def reset(self) -> None:
        self.tags.clear()
        self.busy = 0.0
        self.messages = 0
        self.bytes = 0


# ----------------------------------------------------------------------------- forward


class CountingForward(FluentdReceiver):
    """FluentdReceiver (its connection handling and acks) that counts instead of keeping."""

    counter: Counter

    def _received(self, size: int) -> None:
        self.counter.bytes += size

    def _handle(self, msg: list[Any]) -> str | None:
        t0 = time.perf_counter()
        self.messages += 1
        self.counter.messages += 1
        tag, entries, option = forward_events(msg)  # every entry unpacked, as in_forward does
        self.counter.add_texts(tag, [r.get("log") if isinstance(r, dict) else None
                                     for _t, r in entries])
        self.counter.busy += time.perf_counter() - t0
        return option.get("chunk") if isinstance(option, dict) else None


async def start_forward(counter: Counter, port: int) -> int:
    receiver = CountingForward(port=port)
    receiver.counter = counter
    return await receiver.start()


# ----------------------------------------------------------------------------- syslog


_HEADER = re.compile(rb"<(\d{1,3})>1 (\S+) (\S+) (\S+) (\S+) (\S+) ")
_SD_ELEMENT = re.compile(rb'\[([^ =\]"]+)((?: [^ =\]"]+="(?:[^"\\]|\\.)*")*)\]')
_SD_PARAM = re.compile(rb'([^ =\]"]+)="((?:[^"\\]|\\.)*)"')
_UNESCAPE = re.compile(rb'\\(["\\\]])')


SD = dict[bytes, dict[bytes, bytes]]


def parse_syslog(msg: bytes) -> tuple[str, SD, bytes]:
    """An RFC 5424 message parsed whole, as rsyslog does: (APP-NAME, structured data with its
    parameters unescaped, MSG), the header's fields taken apart on the way. Anything else is
    taken as RFC 3164 (``<PRI>TIMESTAMP HOST TAG: MSG``)."""
    m = _HEADER.match(msg)
    if m is None:
        head, _, text = msg.partition(b": ")
        return head.rsplit(b" ", 1)[-1].split(b"[", 1)[0].decode("utf-8", "replace"), {}, text
    _pri, _ts, _host, app, _procid, _msgid = m.groups()
    pos = m.end()
    sd: SD = {}
    if msg.startswith(b"-", pos):
        pos += 1
    else:
        while (e := _SD_ELEMENT.match(msg, pos)) is not None:
            sd[e.group(1)] = {k: _UNESCAPE.sub(rb"\1", v)
                              for k, v in _SD_PARAM.findall(e.group(2))}
            pos = e.end()
    text = msg[pos + 1:] if msg.startswith(b" ", pos) else b""
    return app.decode("utf-8", "replace"), sd, text


class SyslogProtocol(asyncio.Protocol):
    """Octet counting (``LEN SP MSG``) or, if a frame does not start with a digit, one message
    per line. APP-NAME is the tag; the text is what follows the structured data."""

    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        t0 = time.perf_counter()
        self.counter.bytes += len(data)
        buf = self.buf + data if self.buf else data
        pos, size = 0, len(buf)
        by_tag: dict[str, list[bytes]] = {}
        while pos < size:
            if 48 <= buf[pos] <= 57:
                sp = buf.find(b" ", pos, pos + 12)
                if sp < 0:
                    break
                end = sp + 1 + int(buf[pos:sp])
                if end > size:
                    break
                msg = buf[sp + 1:end]
            else:
                nl = buf.find(b"\n", pos)
                if nl < 0:
                    break
                msg, end = buf[pos:nl], nl
                end += 1
            pos = end
            tag, _sd, text = parse_syslog(msg)
            by_tag.setdefault(tag, []).append(text)
            self.counter.messages += 1
        self.buf = buf[pos:]
        for tag, texts in by_tag.items():
            self.counter.add_texts(tag, texts)
        self.counter.busy += time.perf_counter() - t0


async def start_syslog(counter: Counter, port: int) -> int:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SyslogProtocol(counter), "127.0.0.1", port,
                                      reuse_address=True)
    return int(server.sockets[0].getsockname()[1])


# ----------------------------------------------------------------------------- elasticsearch


_ITEM = b'{"create":{"status":201}}'


async def serve(app: Any, port: int) -> int:
    """Serve an aiohttp app on 127.0.0.1:port (0: a free one); the port it got."""
    from aiohttp import web

    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, reuse_address=True)
    await site.start()
    return int(runner.addresses[0][1])


def bulk_texts(body: bytes) -> dict[str, list[str]]:
    """The ``message`` of every document of a _bulk body, by the document's ``tag``: every
    action and document parsed as JSON, as Elasticsearch does before indexing."""
    by_tag: dict[str, list[str]] = {}
    lines = body.split(b"\n")
    for action, doc in zip(lines[0::2], lines[1::2]):
        json.loads(action)
        document = json.loads(doc)
        by_tag.setdefault(str(document.get("tag", "?")), []).append(document.get("message", ""))
    return by_tag


async def start_es(counter: Counter, port: int) -> int:
    from aiohttp import web

    ok = {"acknowledged": True}
    headers = {"X-Elastic-Product": "Elasticsearch"}

    async def root(request: web.Request) -> web.Response:
        return web.json_response({"name": "bench", "version": {"number": "8.13.0"},
                                  "tagline": "You Know, for Search"}, headers=headers)

    async def acknowledge(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response(ok, headers=headers)

    async def bulk(request: web.Request) -> web.Response:
        body = await request.read()
        t0 = time.perf_counter()
        counter.messages += 1
        counter.bytes += request.content_length or len(body)
        n = 0
        for tag, texts in bulk_texts(body).items():
            counter.add_texts(tag, texts)
            n += len(texts)
        answer = b'{"errors":false,"items":[' + b",".join([_ITEM] * n) + b"]}"
        counter.busy += time.perf_counter() - t0
        return web.Response(body=answer, content_type="application/json", headers=headers)

    async def other(request: web.Request) -> web.Response:
        counter.unknown_requests.append(f"{request.method} {request.path}")
        await request.read()
        return web.json_response({"error": {"type": "bench", "reason": "not emulated"}},
                                 status=404, headers=headers)

    app = web.Application(client_max_size=256 << 20)
    app.router.add_get("/", root)
    app.router.add_put("/_index_template/{name}", acknowledge)
    app.router.add_put("/_data_stream/{name}", acknowledge)
    app.router.add_post("/_bulk", bulk)
    app.router.add_post("/{index}/_bulk", bulk)
    app.router.add_route("*", "/{tail:.*}", other)
    return await serve(app, port)


async def start_otlp(counter: Counter, port: int) -> int:
    from aiohttp import web
    from google.protobuf import json_format
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
        ExportLogsServiceRequest,
        ExportLogsServiceResponse,
    )

    empty = ExportLogsServiceResponse()

    async def export(request: web.Request) -> web.Response:
        body = await request.read()
        t0 = time.perf_counter()
        counter.messages += 1
        counter.bytes += request.content_length or len(body)
        msg = ExportLogsServiceRequest()
        as_json = request.content_type == "application/json"
        if as_json:
            json_format.Parse(body.decode(), msg)
        else:
            msg.ParseFromString(body)
        for rl in msg.resource_logs:
            tag = next((kv.value.string_value for kv in rl.resource.attributes
                        if kv.key == "pylog.tag"), "?")
            counter.add_texts(tag, [r.body.string_value for sl in rl.scope_logs
                                    for r in sl.log_records])
        counter.busy += time.perf_counter() - t0
        if as_json:
            return web.Response(text=json_format.MessageToJson(empty),
                                content_type="application/json")
        return web.Response(body=empty.SerializeToString(),
                            content_type="application/x-protobuf")

    app = web.Application(client_max_size=256 << 20)
    app.router.add_post("/v1/logs", export)
    return await serve(app, port)


async def start_loki(counter: Counter, port: int) -> int:
    from aiohttp import web
    from tests.peers.loki_receiver import decode_push

    async def push(request: web.Request) -> web.Response:
        body = await request.read()
        t0 = time.perf_counter()
        counter.messages += 1
        counter.bytes += request.content_length or len(body)
        by_tag: dict[str, list[str]] = {}
        for e in decode_push(body, request.headers.get("content-type", "")):
            by_tag.setdefault(e.metadata.get("tag", "?"), []).append(e.line)
        for tag, texts in by_tag.items():
            counter.add_texts(tag, texts)
        counter.busy += time.perf_counter() - t0
        return web.Response(status=204)

    app = web.Application(client_max_size=256 << 20)
    app.router.add_post("/loki/api/v1/push", push)
    return await serve(app, port)


# ----------------------------------------------------------------------------- main


async def main(args: argparse.Namespace) -> None:
    counter = Counter()
    start = {"forward": start_forward, "syslog": start_syslog, "es": start_es,
             "otlp": start_otlp, "loki": start_loki}[args.kind]
    port = await start(counter, args.port)
    print(json.dumps({"port": port, "pid": os.getpid()}), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            return  # the harness went away
        cmd = line.strip().decode()
        if cmd == "reset":
            counter.reset()
            answer: dict[str, Any] = {"ok": True}
        elif cmd == "stats":
            answer = counter.stats()
        else:
            answer = {"error": f"unknown command {cmd!r}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kind", choices=("forward", "syslog", "es", "otlp", "loki"))
    ap.add_argument("--port", type=int, default=0)
    asyncio.run(main(ap.parse_args()))
