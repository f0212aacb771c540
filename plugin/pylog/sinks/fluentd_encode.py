"""The fluentd sink's bytes: a batch of lines as msgpack ``[time, record]`` entries of
PackedForward, built a column at a time (the sink's hot loop; docs/fluentd.md)."""

from __future__ import annotations

import struct
from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate, repeat
from operator import add, floordiv, mod
from typing import Any

import msgpack
import msgspec
from fluent.sender import EventTime  # the slow path's packer, the fast path's reference

from ..frames import Columns, columns_of
from ..jsonlines import JsonParser, Parsed
from ..jsonpack import NAMES, Transcoded
from ..reassembly import Line
from ..record import ContainerContext


def str_header(n: int) -> bytes:
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


def record_middles(ctx: ContainerContext, extra: int = 0) -> dict[str, bytes]:
    """For each source, a record's bytes from its map header (counting ``extra`` more pairs)
    to the ``log`` key: the container's constant pairs, ``source`` and the key."""
    n, pairs = context_pairs(ctx)
    map_head = _map_header(n + 2 + extra)
    return {src: map_head + pairs + enc + _LOG_KEY for src, enc in _SOURCE.items()}


def extra_keys(ctx: ContainerContext) -> tuple[str, str, str, str]:
    """The names of parse=json's pairs: ``message``, ``level``, ``time``, ``json``, or
    ``pylog_<name>`` (``pylog_pylog_<name>``...) where a selected label or env var already has
    that name."""
    context_pairs(ctx)
    taken: frozenset[str] = getattr(ctx, "_fluentd_keys")  # noqa: B009 - set just above
    names = []
    for k in ("message", "level", "time", "json"):
        while k in taken:
            k = f"pylog_{k}"
        names.append(k)
    return tuple(names)  # type: ignore[return-value]


def _clamp(ns: int) -> int:
    return min(max(ns, 0), (1 << 32) * 1_000_000_000 - 1)


EVENT_TIME_HEAD = b"\x92\xd7\x00"  # [time, record] array header, EventTime: ext 0 of 8 bytes
HEAD_TIME = struct.Struct(">3sII")  # that, then EventTime's seconds and nanoseconds
_STR_HEADERS = [str_header(n) for n in range(1 << 12)]
_STR_SIZES = [len(h) + n for n, h in enumerate(_STR_HEADERS)]  # header + string, by length


def encode_parts(lines: Sequence[Line], ctx: ContainerContext, sub_second: bool,
                 ) -> tuple[list[bytes], list[int]]:
    """The msgpack ``[time, record]`` entries of PackedForward, as parts to join: entry i is
    ``parts[w * i:w * i + w]``, ``w`` parts wide (4; 5 with ``parse=json``: see
    :func:`_parsed_parts`), and ends ``ends[i]`` bytes after the first one starts.

    The record's constant part (the context pairs, then ``source``) is encoded once per batch;
    per line only the time, the ``log`` string header and the line itself are added. Every step
    is a C call mapped over a whole column (``map`` of builtin methods), not a Python step per
    line, and the line bytes are copied once, into the message: this is the fluentd sink's hot
    loop. Only the string header and the line differ in size from entry to entry (the time is
    11 bytes, both sources' constant parts are as long), so the ends are one sum over the line
    lengths, not over the four parts' sizes (about 40% of the encoding's time)."""
    if isinstance(lines, Transcoded):
        if extra_keys(ctx) == NAMES:
            return _with_extras(lines.plain(), lines.each(), list(lines.counts), ctx, sub_second)
        # a selected label or env var has one of the pairs' names: parsed again, renamed
        parsed = JsonParser(lines.rules).parse(lines.plain())
        assert isinstance(parsed, Parsed)  # every line an object (transcode said so)
        lines = parsed
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
    middle = record_middles(ctx, extra)
    if len(set(sources)) == 1:
        mids: list[bytes] = [middle[sources[0]]] * count
    else:
        mids = list(map(middle.__getitem__, sources))
    lengths = list(map(len, texts))
    try:
        strs = list(map(_STR_HEADERS.__getitem__, lengths))
        sizes = map(_STR_SIZES.__getitem__, lengths)
    except IndexError:  # a line of 4 KiB or more
        strs = list(map(str_header, lengths))
        sizes = map(add, map(len, strs), lengths)
    if sub_second:
        try:
            secs = list(map(floordiv, times, repeat(1_000_000_000)))
            nanos = map(mod, times, repeat(1_000_000_000))
            heads = list(map(HEAD_TIME.pack, repeat(EVENT_TIME_HEAD), secs, nanos))
        except struct.error:  # a time before 1970 or after 2106: EventTime has 32-bit seconds
            heads = [b"\x92" + msgpack.packb(EventTime.from_unix_nano(_clamp(t))) for t in times]
        ends = list(accumulate(map(add, sizes, repeat(HEAD_TIME.size + len(mids[0])))))
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
    if not len(lines):
        return [], []
    extras, counts = _extras(lines, extra_keys(ctx))
    return _with_extras(lines.plain(), extras, counts, ctx, sub_second)


def _with_extras(lines: Columns, extras: list[bytes], counts: list[int], ctx: ContainerContext,
                 sub_second: bool) -> tuple[list[bytes], list[int]]:
    """:func:`encode_parts` of lines whose records have ``counts[i]`` more pairs,
    ``extras[i]``."""
    if not len(lines):
        return [], []
    if len(counts) == counts.count(counts[0]):  # every line with the same pairs: one header
        parts, ends = _entries(lines, ctx, sub_second, counts[0], 5)
    else:
        parts, ends = _entries(lines, ctx, sub_second, 0, 5)
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
    line), its one-byte header then cut off: what is left is the pairs as a map holds them.
    A learned shape's structs are packed as they are; an integer msgpack cannot hold (over 64
    bits) sends the batch's fields as the general path has them (orjson: a float)."""
    try:
        return _packed_extras(lines.objects, lines, keys)
    except OverflowError:
        if not lines.shaped:
            raise
        return _packed_extras(lines.fields, lines, keys)


def _packed_extras(objects: list[Any], lines: Parsed, keys: tuple[str, str, str, str],
                   ) -> tuple[list[bytes], list[int]]:
    pack = msgspec.msgpack.Encoder().encode
    k_message, k_level, k_time, k_json = keys
    if None not in objects and None not in lines.messages and None not in lines.levels \
            and None not in lines.stamps:  # every line an object with all three: C calls
        arrays = map(pack, zip(repeat(k_message), lines.messages, repeat(k_level), lines.levels,
                               repeat(k_time), lines.stamps, repeat(k_json), objects))
        extras: list[bytes] = list(map(bytes.__getitem__, arrays, repeat(_PAIRS)))
        return extras, [4] * len(extras)
    extras, counts = [], []
    for text, fields, msg, level, when in zip(lines.lines, objects, lines.messages,
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


def cuts(ends: list[int], limit: int) -> list[tuple[int, int, int, int]]:
    """The entries of each message (first, past last) and their bytes (from, to), given where
    each entry ends: at most ``limit`` bytes of entries a message, or one entry if bigger."""
    out = []
    start, done = 0, 0  # first entry of the message, bytes before it
    while start < len(ends):
        end = max(start + 1, bisect_right(ends, done + limit, lo=start))
        out.append((start, end, done, ends[end - 1]))
        start, done = end, ends[end - 1]
    return out
