"""fluentd (and Fluent Bit) over the Forward protocol, in PackedForward mode.

Records keep the keys of Docker's fluentd driver — ``container_id``, ``container_name`` (with its
leading ``/``, as Docker sends it), ``source``, ``log``, and the selected labels and env vars as
top-level keys — so existing fluentd configurations keep working; pylog adds ``container``
(its image and labels: the id and name are Docker's keys), ``host``, ``process`` and ``pylog``
(the namespaces), as in the JSON form. Lines arrive whole, so
the ``partial_*`` keys never appear. Times are Forward's EventTime (msgpack ext type 0, seconds
and nanoseconds: fluent-logger's bytes, tests/test_event_time.py) unless
``fluentd-sub-second-precision=false``.

One batch of lines becomes one or more PackedForward messages (``[tag, entries, option]``), each
at most ``fluentd-buffer-limit`` bytes; with ``fluentd-request-ack`` each counts as delivered only
when fluentd acks its chunk id. Up to :data:`IN_FLIGHT` messages are on their way at once, so
sending and fluentd's work on the previous message overlap; the batch is done when all are acked.
"""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
import struct
from collections.abc import Sequence
from typing import Any, TypeGuard
from urllib.parse import urlsplit

import msgpack

from ..errors import OptionError
from ..jsonlines import Parsed
from ..jsonpack import Transcoded
from ..options import parse_bool, parse_duration, parse_size
from ..reassembly import Line
from ..record import ContainerContext
from .base import Sink, SinkError, encode_off_loop
from .fluentd_encode import cuts, encode_parts
from .fluentd_json import Packed, json_messages, transcoded_messages

DEFAULT_PORT = 24224
_NOTHING = object()
IN_FLIGHT = 4  # messages written and not yet acked, at most (each up to fluentd-buffer-limit)
def parse_fluentd_address(name: str, value: str) -> tuple[str, str, int | str]:
    """``tcp://host:port``, ``tls://host:port``, ``unix:///path``, or ``host[:port]``."""
    text = value.strip()
    if "://" not in text:
        text = "tcp://" + text
    u = urlsplit(text)
    if u.scheme == "unix":
        if not u.path:
            raise OptionError(f"invalid value {value!r} for log opt {name!r}: unix:// needs a path")
        return ("unix", "", u.path)
    if u.scheme not in ("tcp", "tls"):
        raise OptionError(f"invalid value {value!r} for log opt {name!r}: the scheme must be "
                          f"tcp://, tls:// or unix://")
    try:
        port = u.port or DEFAULT_PORT
    except ValueError:
        raise OptionError(f"invalid value {value!r} for log opt {name!r}: bad port") from None
    if not u.hostname:
        raise OptionError(f"invalid value {value!r} for log opt {name!r}: no host")
    return (u.scheme, u.hostname, port)


def parse_retries(name: str, value: str) -> int:
    if not value.isdigit():
        raise OptionError(f"invalid value {value!r} for log opt {name!r}: expected a number >= 0")
    return int(value)


class FluentdSink(Sink):
    KIND = "fluentd"
    ADDRESS_OPTION = "fluentd-address"
    COLUMNS = True
    PACKS_STRUCTS = True
    RETRY_WAIT_OPTION = "fluentd-retry-wait"
    OPTIONS = {
        "fluentd-address": (parse_fluentd_address, None),
        "fluentd-retry-wait": (parse_duration, 1.0),
        "fluentd-max-retries": (parse_retries, 4294967295),
        "fluentd-buffer-limit": (parse_size, 1 << 20),
        "fluentd-sub-second-precision": (parse_bool, True),
        # On by default (Docker's is off): without acks, lines written into a connection the
        # peer has just closed are gone, with no error to retry on.
        "fluentd-request-ack": (parse_bool, True),
        "fluentd-write-timeout": (parse_duration, 10.0),
        "fluentd-read-timeout": (parse_duration, 10.0),  # Docker 29: the wait for an ack
        "fluentd-async": (parse_bool, False),
        "fluentd-async-connect": (parse_bool, False),
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.address = self.config["fluentd-address"]
        self.limit = int(self.config["fluentd-buffer-limit"])
        self.ack = bool(self.config["fluentd-request-ack"])
        self.sub_second = bool(self.config["fluentd-sub-second-precision"])
        timeout = float(self.config["fluentd-write-timeout"])
        self.timeout = timeout if timeout > 0 else None
        read_timeout = float(self.config["fluentd-read-timeout"])
        self.read_timeout = read_timeout if read_timeout > 0 else None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()  # one batch on the connection at a time
        self._unpacker: msgpack.Unpacker | None = None

    async def _connect(self) -> None:
        scheme, host, port = self.address
        if scheme == "unix":
            self._reader, self._writer = await asyncio.open_unix_connection(str(port))
        else:
            # It loads the system's CA bundle (~30 ms of file reads): not on the loop.
            tls = await asyncio.to_thread(ssl.create_default_context) if scheme == "tls" else None
            self._reader, self._writer = await asyncio.open_connection(host, int(port), ssl=tls)
        self._unpacker = msgpack.Unpacker(raw=False)

    async def _drop_connection(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 1)
            except (TimeoutError, OSError):
                pass

    def messages(self, lines: Sequence[Line], ctx: ContainerContext,
                 ) -> list[tuple[bytes | bytearray, bytes, str | None]]:
        """PackedForward messages of at most fluentd-buffer-limit bytes of entries (or one
        entry, if it is bigger): each as its ``[tag, entries`` and its option, with its chunk
        id."""
        if _packed_for(lines, ctx):
            pieces = lines.messages
        else:  # a Packed batch whose context changed since (a retry): its records too
            pieces = self._pieces(lines.parsed() if isinstance(lines, Packed) else lines, ctx)
        out: list[tuple[bytes | bytearray, bytes, str | None]] = []
        for body, count in pieces:
            chunk = base64.b64encode(os.urandom(16)).decode() if self.ack else None
            option: dict[str, Any] = {"size": count}
            if chunk is not None:
                option["chunk"] = chunk
            out.append((body, msgpack.packb(option), chunk))
        return out

    def prepare(self, lines: Sequence[Line], ctx: ContainerContext) -> Sequence[Line]:
        """A ``parse=json`` batch packed into its messages (the delivery's worker calls this:
        the structs die there, and the loop only writes); others as they are."""
        if not isinstance(lines, (Parsed, Transcoded)):
            return lines
        return Packed(lines.sources, lines.times, lines.lines, lines.sizes,
                      self._pieces(lines, ctx), ctx, lines.rules)

    def _pieces(self, lines: Sequence[Line], ctx: ContainerContext,
                ) -> list[tuple[bytes | bytearray, int]]:
        """The messages' bodies and entry counts: a parse=json batch of objects packed in one
        call a message; any other (text, or some lines sent as text) the general way."""
        tag = msgpack.packb(ctx.tag)
        pieces = None
        if isinstance(lines, Transcoded):
            pieces = transcoded_messages(lines, ctx, self.sub_second, self.limit, tag)
        elif isinstance(lines, Parsed):
            pieces = json_messages(lines, ctx, self.sub_second, self.limit, tag)
        return pieces if pieces is not None else self._joined(lines, ctx, tag)

    def _joined(self, lines: Sequence[Line], ctx: ContainerContext, tag: bytes,
                ) -> list[tuple[bytes | bytearray, int]]:
        """:meth:`messages`' bodies from the entries' parts, and how many entries each has."""
        parts, ends = encode_parts(lines, ctx, self.sub_second)  # ends: offset after each entry
        width = len(parts) // len(ends) if ends else 4  # parts an entry: 5 with parse=json
        out: list[tuple[bytes | bytearray, int]] = []
        for start, end, first, last in cuts(ends, self.limit):
            # [tag, entries as one msgpack bin, (option)], joined once
            head = b"\x93" + tag + b"\xc6" + struct.pack(">I", last - first)
            out.append((b"".join([head, *parts[width * start:width * end]]), end - start))
        return out

    async def send(self, lines: Sequence[Line], ctx: ContainerContext) -> None:
        async with self._lock:
            try:
                if self._writer is not None and (self._writer.is_closing() or
                                                 self._reader is None or self._reader.at_eof()):
                    await self._drop_connection()  # the peer went away: do not write into it
                if self._writer is None:
                    await asyncio.wait_for(self._connect(), self.timeout)
                # Encoded only once it is this batch's turn on a connection, in a worker:
                # waiting deliveries hold lines, not messages too (B2's peak RSS less than
                # half), and nothing is encoded while fluentd cannot be reached. (A parse=json
                # batch was packed once, in the parsing worker: its messages are ready.)
                await self._write_all(self.messages(lines, ctx) if _packed_for(lines, ctx)
                                      else await encode_off_loop(self.messages, lines, ctx))
            except (TimeoutError, OSError, SinkError, ValueError) as e:
                await self._drop_connection()
                if isinstance(e, SinkError):
                    raise
                raise SinkError(f"fluentd at {self._where()}: {e or type(e).__name__}") from e

    async def _write_all(self, messages: list[tuple[bytes | bytearray, bytes, str | None]],
                         ) -> None:
        """Write the messages in order, each within fluentd-write-timeout, with up to
        IN_FLIGHT of them unacked at once, so that fluentd works on one while the next
        travels; return once every one is acked (each within fluentd-read-timeout of the wait
        for it). A failure fails the whole batch, which is sent again."""
        assert self._writer is not None
        pending: dict[str, None] = {}  # chunk ids written and not acked yet, oldest first
        for body, option, chunk in messages:
            if chunk is not None and len(pending) >= IN_FLIGHT:
                await self._acked(pending)
            self._writer.write(body)
            self._writer.write(option)
            # asyncio.timeout, not wait_for: on 3.11 wait_for makes a task per call
            async with asyncio.timeout(self.timeout):
                await self._writer.drain()
            if chunk is not None:
                pending[chunk] = None
        while pending:
            await self._acked(pending)

    async def _acked(self, pending: dict[str, None]) -> None:
        """Wait for fluentd's next ack (fluentd-read-timeout) and take its chunk from pending."""
        try:
            async with asyncio.timeout(self.read_timeout):
                reply = await self._reply()
        except TimeoutError:
            raise SinkError(f"fluentd at {self._where()}: no ack within fluentd-read-timeout "
                            f"({self.read_timeout:g} s)") from None
        chunk = reply.get("ack") if isinstance(reply, dict) else None
        if chunk not in pending:
            raise SinkError(f"fluentd answered {reply!r}, not an ack of a chunk in flight "
                            f"({', '.join(pending)})")
        del pending[chunk]

    async def _reply(self) -> Any:
        assert self._unpacker is not None and self._reader is not None
        while True:
            reply = next(self._unpacker, _NOTHING)
            if reply is not _NOTHING:
                return reply
            data = await self._reader.read(4096)
            if not data:
                raise SinkError("fluentd closed the connection before acking")
            self._unpacker.feed(data)

    def _where(self) -> str:
        scheme, host, port = self.address
        return f"unix://{port}" if scheme == "unix" else f"{scheme}://{host}:{port}"

    @property
    def target(self) -> str:
        return self._where()

    async def close(self) -> None:
        await self._drop_connection()


def _packed_for(lines: Sequence[Line], ctx: ContainerContext) -> TypeGuard[Packed]:
    """Whether the batch was packed, in its worker, for this very context."""
    return isinstance(lines, Packed) and (lines.ctx is ctx or lines.ctx == ctx)


__all__ = ["FluentdSink", "parse_duration", "parse_fluentd_address"]
