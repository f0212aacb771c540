"""A fluentd Forward-protocol receiver standing in for fluentd (none can be installed here).

Understands every Forward mode — Message ``[tag, time, record]``, Forward ``[tag, [[time,
record], ...], option]``, PackedForward ``[tag, bin, option]`` and CompressedPackedForward — acks
``chunk`` options like fluentd's ``in_forward``, and keeps each event as ``(tag, time, record)``
where time is integer nanoseconds (EventTime) or seconds (an integer). Used by the tests and by
the benchmarks (``python -m tests.peers.fluentd_receiver --port N --out FILE``).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import io
import json
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import msgpack


def _ext_hook(code: int, data: bytes) -> Any:
    if code == 0 and len(data) == 8:
        secs, nanos = struct.unpack(">II", data)
        return ("EventTime", secs * 1_000_000_000 + nanos)
    return msgpack.ExtType(code, data)


def _time(value: Any) -> tuple[int, bool]:
    """(nanoseconds, was it an EventTime)."""
    if isinstance(value, tuple) and value and value[0] == "EventTime":
        return value[1], True
    return int(value) * 1_000_000_000, False


def forward_events(msg: list[Any]) -> tuple[str, list[Any], dict[str, Any]]:
    """A Forward message of any mode decoded as fluentd's in_forward does, every entry unpacked
    into objects: (tag, its ``[time, record]`` entries, its option map)."""
    tag = msg[0]
    if isinstance(msg[1], (bytes, str)):  # PackedForward / CompressedPackedForward
        blob = msg[1].encode("utf-8", "surrogateescape") if isinstance(msg[1], str) else msg[1]
        option = msg[2] if len(msg) > 2 and isinstance(msg[2], dict) else {}
        if option.get("compressed") == "gzip":
            blob = gzip.decompress(blob)
        return tag, list(msgpack.Unpacker(io.BytesIO(blob), raw=False, ext_hook=_ext_hook,
                                          unicode_errors="surrogateescape")), option
    if isinstance(msg[1], list):  # Forward
        return tag, msg[1], msg[2] if len(msg) > 2 and isinstance(msg[2], dict) else {}
    # Message
    return tag, [(msg[1], msg[2])], msg[3] if len(msg) > 3 and isinstance(msg[3], dict) else {}


@dataclass
class Received:
    tag: str
    time_ns: int
    event_time: bool
    record: dict[str, Any]


@dataclass
class FluentdReceiver:
    """Listens on 127.0.0.1:port (port 0 picks one). ``events`` grows as messages arrive."""

    port: int = 0
    events: list[Received] = field(default_factory=list)
    messages: int = 0
    acks_sent: int = 0
    bytes_received: int = 0  # on the wire, every message and connection alike
    ack: bool = True
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _server: asyncio.base_events.Server | None = None
    _clients: set[asyncio.StreamWriter] = field(default_factory=set)

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port,
                                                  reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        """Close the listener and every client connection (a fluentd going away)."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for w in list(self._clients):
            w.close()

    async def wait_for(self, count: int, timeout: float = 60.0) -> None:
        async def enough() -> None:
            while len(self.events) < count:
                self.arrived.clear()
                await self.arrived.wait()
        await asyncio.wait_for(enough(), timeout)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        unpacker = msgpack.Unpacker(raw=False, ext_hook=_ext_hook, use_list=True,
                                    max_buffer_size=256 << 20, unicode_errors="surrogateescape")
        try:
            while True:
                data = await reader.read(1 << 20)
                if not data:
                    return
                self._received(len(data))
                unpacker.feed(data)
                for msg in unpacker:
                    chunk = self._handle(msg)
                    if chunk is not None and self.ack:
                        writer.write(msgpack.packb({"ack": chunk}))
                        self.acks_sent += 1
                        await writer.drain()
                self.arrived.set()
        except (ConnectionError, OSError):
            return
        finally:
            self._clients.discard(writer)
            writer.close()

    def _received(self, size: int) -> None:
        self.bytes_received += size

    def _handle(self, msg: list[Any]) -> str | None:
        self.messages += 1
        tag, entries, option = forward_events(msg)
        for t, record in entries:
            self._add(tag, t, record)
        return option.get("chunk")

    def _add(self, tag: str, t: Any, record: dict[str, Any]) -> None:
        ns, is_event_time = _time(t)
        self.events.append(Received(tag, ns, is_event_time, record))


class ThreadedReceiver:
    """A FluentdReceiver on its own loop in a thread, for synchronous tests."""

    def __init__(self, ack: bool = True) -> None:
        from tests.peers.threaded import LoopThread
        self.thread = LoopThread()
        self.peer = FluentdReceiver(ack=ack)
        self.port = self.thread.run(self.peer.start())

    @property
    def address(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def events(self, tag: str | None = None) -> list[Received]:
        return [e for e in self.thread.call(list, self.peer.events) if tag is None or e.tag == tag]

    def wait_for(self, count: int, tag: str, timeout: float = 120) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.events(tag)) < count and time.monotonic() < deadline:
            self.thread.run(_wait_arrival(self.peer), timeout=timeout)
        return self.events(tag)

    def stop_listening(self) -> None:
        self.thread.run(self.peer.stop())

    def start_listening(self) -> None:
        self.thread.run(self.peer.start())

    def close(self) -> None:
        self.thread.run(self.peer.stop())
        self.thread.stop()


async def _wait_arrival(peer: FluentdReceiver) -> None:
    peer.arrived.clear()
    try:
        await asyncio.wait_for(peer.arrived.wait(), 1.0)
    except TimeoutError:
        pass  # re-check the count; the caller's deadline bounds the loop




def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _main(args: argparse.Namespace) -> None:
    receiver = FluentdReceiver(port=args.port)
    await receiver.start()
    print(f"listening on 127.0.0.1:{receiver.port}", flush=True)
    out = open(args.out, "a") if args.out else None
    written = 0
    started = time.monotonic()
    while True:
        receiver.arrived.clear()
        await receiver.arrived.wait()
        if out is not None:
            for ev in receiver.events[written:]:
                out.write(json.dumps({"tag": ev.tag, "time": ev.time_ns,
                                      "log": ev.record.get("log")}, default=str) + "\n")
            out.flush()
        written = len(receiver.events)
        if args.progress:
            rate = written / max(time.monotonic() - started, 1e-9)
            print(f"{written} events ({rate:,.0f}/s)", file=sys.stderr, flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=24224)
    ap.add_argument("--out")
    ap.add_argument("--progress", action="store_true")
    asyncio.run(_main(ap.parse_args()))
