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
from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate, repeat
from operator import add, floordiv, mod
from typing import Any
from urllib.parse import urlsplit

import msgpack
import msgspec
from fluent.sender import EventTime  # the slow path's packer, the fast path's reference

from ..errors import OptionError
from ..frames import columns_of
from ..jsonlines import Parsed
from ..options import parse_bool, parse_duration, parse_size
from ..reassembly import Line
from ..record import ContainerContext
from .base import Sink, SinkError

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


def _str_header(n: int) -> bytes:
    if n < 32:
        return bytes((0xA0 | n,))
    if n < 256:
        return b"\xd9" + bytes((n,))
    if n < 65536:
        return b"\xda" + struct.pack(">H", n)
    return b"\xdb" + struct.pack(">I", n)


def _map_header(n: int) -> bytes:
    return bytes((0x80 | n,)) if n < 16 else b"\xde" + struct.pack(">H", n)


_SOURCE = {s: msgpack.packb("source") + msgpack.packb(s) for s in ("stdout", "stderr")}
_LOG_KEY = msgpack.packb("log")


def context_pairs(ctx: ContainerContext) -> tuple[int, bytes]:
    """The record's constant key/value pairs for a container, msgpack-encoded once."""
    cached: tuple[int, bytes] | None = getattr(ctx, "_fluentd_pairs", None)
    if cached is not None:
        return cached
    pairs: dict[str, Any] = {"container_id": ctx.container_id,
                             "container_name": "/" + ctx.name}
    pairs.update(ctx.labels)  # Docker's fluentd driver puts selected labels and env at the top
    pairs.update(ctx.env)
    fields = ctx.record_fields()
    fields.pop("tag", None)  # it is the fluentd tag
    del fields["container"]["id"], fields["container"]["name"]  # Docker's keys above say them
    pairs.update(fields)
    body = b"".join(msgpack.packb(k) + msgpack.packb(v) for k, v in pairs.items())
    cached = (len(pairs), body)
    object.__setattr__(ctx, "_fluentd_pairs", cached)
    object.__setattr__(ctx, "_fluentd_keys", frozenset(pairs) | {"source", "log"})
    return cached


def _extra_keys(ctx: ContainerContext) -> tuple[str, str, str, str]:
    """The names of parse=json's pairs: ``message``, ``level``, ``time``, ``json``, or
    ``pylog_<name>`` where a selected label or env var already has that name."""
    context_pairs(ctx)
    taken: frozenset[str] = getattr(ctx, "_fluentd_keys")  # noqa: B009 - set just above
    return tuple(k if k not in taken else f"pylog_{k}"  # type: ignore[return-value]
                 for k in ("message", "level", "time", "json"))


def _clamp(ns: int) -> int:
    return min(max(ns, 0), (1 << 32) * 1_000_000_000 - 1)


_HEAD_TIME = struct.Struct(">3sII")  # [time, record] array header + EventTime (ext 0, 8 bytes)
_STR_HEADERS = [_str_header(n) for n in range(1 << 12)]
_STR_SIZES = [len(h) + n for n, h in enumerate(_STR_HEADERS)]  # header + string, by length


def encode_parts(lines: Sequence[Line], ctx: ContainerContext, sub_second: bool,
                 ) -> tuple[list[bytes], list[int]]:
    """The msgpack ``[time, record]`` entries of PackedForward, as parts to join: entry i is
    ``parts[4 * i:4 * i + 4]`` (five parts with ``parse=json``) and ends ``ends[i]`` bytes after the first one starts.

    The record's constant part (the context pairs, then ``source``) is encoded once per batch;
    per line only the time, the ``log`` string header and the line itself are added. Every step
    is a C call mapped over a whole column (``map`` of builtin methods), not a Python step per
    line, and the line bytes are copied once, into the message: this is the fluentd sink's hot
    loop. Only the string header and the line differ in size from entry to entry (the time is
    11 bytes, both sources' constant parts are as long), so the ends are one sum over the line
    lengths, not over the four parts' sizes (about 40% of the encoding's time)."""
    if isinstance(lines, Parsed):
        return _parsed_parts(lines, ctx, sub_second)
    return _entries(lines, ctx, sub_second)


def _entries(lines: Sequence[Line], ctx: ContainerContext, sub_second: bool, extra: int = 0,
             width: int = 4) -> tuple[list[bytes], list[int]]:
    """:func:`encode_parts`, with room: each record's map header counts ``extra`` more pairs,
    and each entry takes ``width`` parts (the last ``width - 4`` left empty, for them)."""
    sources, times, texts = columns_of(lines)  # texts: raw bytes, a msgpack str (as Docker's)
    count = len(texts)
    if not count:
        return [], []
    n, pairs = context_pairs(ctx)
    map_head = _map_header(n + 2 + extra)
    middle = {src: map_head + pairs + enc + _LOG_KEY for src, enc in _SOURCE.items()}
    if len(set(sources)) == 1:
        mids: list[bytes] = [middle[sources[0]]] * count
    else:
        mids = list(map(middle.__getitem__, sources))
    lengths = list(map(len, texts))
    try:
        strs = list(map(_STR_HEADERS.__getitem__, lengths))
        sizes = map(_STR_SIZES.__getitem__, lengths)
    except IndexError:  # a line of 4 KiB or more
        strs = list(map(_str_header, lengths))
        sizes = map(add, map(len, strs), lengths)
    if sub_second:
        try:
            secs = list(map(floordiv, times, repeat(1_000_000_000)))
            nanos = map(mod, times, repeat(1_000_000_000))
            heads = list(map(_HEAD_TIME.pack, repeat(b"\x92\xd7\x00"), secs, nanos))
        except struct.error:  # a time before 1970 or after 2106: EventTime has 32-bit seconds
            heads = [b"\x92" + msgpack.packb(EventTime.from_unix_nano(_clamp(t))) for t in times]
        ends = list(accumulate(map(add, sizes, repeat(_HEAD_TIME.size + len(mids[0])))))
    else:
        heads = [b"\x92" + msgpack.packb(t // 10**9) for t in times]
        ends = list(accumulate(map(add, map(add, map(len, heads), sizes), map(len, mids))))
    parts: list[bytes] = [b""] * (width * count)
    parts[0::width] = heads
    parts[1::width] = mids
    parts[2::width] = strs
    parts[3::width] = texts
    return parts, ends


def _parsed_parts(lines: Parsed, ctx: ContainerContext, sub_second: bool,
                  ) -> tuple[list[bytes], list[int]]:
    """:func:`encode_parts` of a ``parse=json`` batch: a parsed line's record also has
    ``message``, ``level``, ``time`` and ``json`` (docs/json-logs.md) after ``log``, as each
    entry's fifth part, and its map header counts them."""
    extras, counts = _extras(lines, _extra_keys(ctx))
    if len(counts) == counts.count(counts[0]):  # every line with the same pairs: one header
        parts, ends = _entries(lines.plain(), ctx, sub_second, counts[0], 5)
    else:
        parts, ends = _entries(lines.plain(), ctx, sub_second, 0, 5)
        n, _pairs = context_pairs(ctx)
        cut = len(_map_header(n + 2))
        by_count = {(m, k): _map_header(n + 2 + k) + m[cut:]
                    for m, k in set(zip(parts[1::5], counts))}
        parts[1::5] = list(map(by_count.__getitem__, zip(parts[1::5], counts)))
        growth = {k: len(_map_header(n + 2 + k)) - cut for k in set(counts)}  # past 15 pairs
        ends = list(map(add, ends, accumulate(map(growth.__getitem__, counts))))
    parts[4::5] = extras
    return parts, list(map(add, ends, accumulate(map(len, extras))))


_PAIRS = slice(1, None)  # past the header of the array (of at most 15 items) the pairs make


def _extras(lines: Parsed, keys: tuple[str, str, str, str]) -> tuple[list[bytes], list[int]]:
    """Each line's extra key/value pairs, msgpack-encoded, and how many (0: sent as text).

    A line's pairs are packed as one flat array of keys and values (msgspec, one C call a
    line), its one-byte header then cut off: what is left is the pairs as a map holds them."""
    pack = msgspec.msgpack.Encoder().encode
    k_message, k_level, k_time, k_json = keys
    if None not in lines.fields and None not in lines.messages and None not in lines.levels \
            and None not in lines.stamps:  # every line an object with all three: C calls
        arrays = map(pack, zip(repeat(k_message), lines.messages, repeat(k_level), lines.levels,
                               repeat(k_time), lines.stamps, repeat(k_json), lines.fields))
        extras: list[bytes] = list(map(bytes.__getitem__, arrays, repeat(_PAIRS)))
        return extras, [4] * len(extras)
    extras, counts = [], []
    for text, fields, msg, level, when in zip(lines.lines, lines.fields, lines.messages,
                                              lines.levels, lines.stamps):
        if fields is None:
            extras.append(b"")
            counts.append(0)
            continue
        pairs = ((k_message, msg if msg is not None else text.decode("utf-8", "replace")),
                 (k_level, level), (k_time, when), (k_json, fields))
        kept = [x for k, v in pairs if v is not None for x in (k, v)]
        extras.append(pack(kept)[1:])
        counts.append(len(kept) // 2)
    return extras, counts


class FluentdSink(Sink):
    KIND = "fluentd"
    ADDRESS_OPTION = "fluentd-address"
    COLUMNS = True
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
                 ) -> list[tuple[bytes, str | None]]:
        """PackedForward messages of at most fluentd-buffer-limit bytes (or one entry, if it
        is bigger), with their chunk ids."""
        parts, ends = encode_parts(lines, ctx, self.sub_second)  # ends: offset after each entry
        tag = msgpack.packb(ctx.tag)
        out: list[tuple[bytes, str | None]] = []
        width = len(parts) // len(ends) if ends else 4  # parts an entry: 5 with parse=json
        start, done = 0, 0  # first entry of the message, bytes before it
        while start < len(ends):
            end = max(start + 1, bisect_right(ends, done + self.limit, lo=start))
            chunk = base64.b64encode(os.urandom(16)).decode() if self.ack else None
            option: dict[str, Any] = {"size": end - start}
            if chunk is not None:
                option["chunk"] = chunk
            size = ends[end - 1] - done
            # [tag, entries as one msgpack bin, option], joined once
            head = b"\x93" + tag + b"\xc6" + struct.pack(">I", size)
            packed = b"".join([head, *parts[width * start:width * end], msgpack.packb(option)])
            out.append((packed, chunk))
            start, done = end, ends[end - 1]
        return out

    async def send(self, lines: Sequence[Line], ctx: ContainerContext) -> None:
        async with self._lock:
            try:
                if self._writer is not None and (self._writer.is_closing() or
                                                 self._reader is None or self._reader.at_eof()):
                    await self._drop_connection()  # the peer went away: do not write into it
                if self._writer is None:
                    await asyncio.wait_for(self._connect(), self.timeout)
                # Encoded only once it is this batch's turn on a connection: waiting
                # deliveries hold lines, not messages too (B2's peak RSS less than half), and
                # nothing is encoded while fluentd cannot be reached.
                await self._write_all(self.messages(lines, ctx))
            except (TimeoutError, OSError, SinkError, ValueError) as e:
                await self._drop_connection()
                if isinstance(e, SinkError):
                    raise
                raise SinkError(f"fluentd at {self._where()}: {e or type(e).__name__}") from e

    async def _write_all(self, messages: list[tuple[bytes, str | None]]) -> None:
        """Write the messages in order, each within fluentd-write-timeout, with up to
        IN_FLIGHT of them unacked at once, so that fluentd works on one while the next
        travels; return once every one is acked (each within fluentd-read-timeout of the wait
        for it). A failure fails the whole batch, which is sent again."""
        assert self._writer is not None
        pending: dict[str, None] = {}  # chunk ids written and not acked yet, oldest first
        for packed, chunk in messages:
            if chunk is not None and len(pending) >= IN_FLIGHT:
                await self._acked(pending)
            self._writer.write(packed)
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


__all__ = ["FluentdSink", "parse_duration", "parse_fluentd_address"]
