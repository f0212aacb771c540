"""The fluentd sink's PackedForward messages for a ``parse=json`` batch whose every line is an
object: each message packed by one msgspec call over a flat list of the batch's values.

A message is ``[tag, entries as one bin, option]``. Its entries are laid out as one list: for
each line the bytes that do not change inside the batch or are already msgpack (the time, the
record's map header and constant pairs, ``log``'s string header, the line) as ``msgspec.Raw``,
then the extra pairs' keys and values (``message``, ``level``, ``time``, ``json``: the fields as
decoded). One ``encode_into`` writes them all after room left for the message's head; the
list's own array header lands in that room and is overwritten by the head. So no bytes object
is made a line for the extra pairs and none is joined: per line the encoder only copies.

What does not fit this (a line sent as text, a level or time some lines lack, a time EventTime
or a uint32 cannot hold, lines whose msgpack string headers differ in size: on both sides of
32, 256 or 65,536 bytes) is left to :func:`pylog.sinks.fluentd_encode.encode_parts`; both make
the same bytes (tests/test_fluentd_json.py).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from itertools import repeat
from operator import add, floordiv, mod, sub
from typing import Any

import msgspec

from ..jsonlines import Parsed
from ..record import ContainerContext
from .fluentd_encode import EVENT_TIME_HEAD, extra_keys, record_middles

_ENCODE_INTO = msgspec.msgpack.Encoder().encode_into
_ESTIMATE = 32  # bytes a line over twice its length: the extra pairs' keys (a guess, checked)


def json_messages(lines: Parsed, ctx: ContainerContext, sub_second: bool, limit: int,
                  tag: bytes) -> list[tuple[bytes | bytearray, int]] | None:
    """The batch as PackedForward messages without their option (``[tag, entries`` of the
    three items), each with its number of entries: at most ``limit`` bytes of entries, or one
    entry; None if the batch is not one this path packs."""
    lengths = list(map(len, lines.lines))
    laid = _items(lines, ctx, sub_second, lengths)
    if laid is None:
        return None
    items, width, head_size = laid
    # How many pieces is guessed (an entry's head, its line and about as much again for the
    # fields), and the lines shared out evenly; a piece over the limit is halved.
    n = len(lengths)
    guess = 2 * sum(lengths) + n * (_ESTIMATE + head_size)
    count = min(n, -(-guess // limit))
    todo = [(n * i // count, n * (i + 1) // count) for i in reversed(range(count))]  # a stack
    out: list[tuple[bytes | bytearray, int]] = []
    head = b"\x93" + tag + b"\xc6"
    while todo:
        start, stop = todo.pop()
        try:
            message = _message(items[width * start:width * stop], head)
        except OverflowError:  # an integer msgpack cannot hold: said as the general path does
            return None
        if len(message) - len(head) - 4 > limit and stop - start > 1:
            middle = (start + stop) // 2
            todo += [(middle, stop), (start, middle)]
            continue
        out.append((message, stop - start))
    return out


def _message(items: list[Any], head: bytes) -> bytearray:
    """``head``, the entries' size and the entries (``items`` packed, without their array
    header)."""
    room = len(head) + 4
    n = len(items)
    array_header = 1 if n < 16 else 3 if n < 65536 else 5
    buf = bytearray(room - array_header)
    _ENCODE_INTO(items, buf, len(buf))
    buf[:room] = head + struct.pack(">I", len(buf) - room)
    return buf


def _items(lines: Parsed, ctx: ContainerContext, sub_second: bool, lengths: list[int],
           ) -> tuple[list[Any], int, int] | None:
    """The batch's entries as one flat list (``width`` items a line), the size of an entry's
    head, or None."""
    texts = lines.lines
    if not texts or None in lines.objects:
        return None
    pairs = _pairs(lines, extra_keys(ctx))
    if pairs is None:
        return None
    heads = _heads(lines, ctx, sub_second, len(pairs) // 2, lengths)
    if heads is None:
        return None
    width = 2 + len(pairs)
    items: list[Any] = [None] * (width * len(texts))
    items[0::width] = list(map(msgspec.Raw, heads))
    items[1::width] = list(map(msgspec.Raw, texts))
    for i, column in enumerate(pairs, 2):
        items[i::width] = column
    return items, width, len(heads[0])


def _pairs(lines: Parsed, keys: tuple[str, str, str, str]) -> list[Any] | None:
    """The extra pairs' columns, key and value in turn: ``message`` (the line itself where it
    has none), ``level`` and ``time`` where every line has one, ``json``; None if some lines
    have a level or time and others not (their records differ in size: the general path)."""
    n = len(lines.lines)
    k_message, k_level, k_time, k_json = keys
    messages = lines.messages
    if None in messages:
        messages = [m if m is not None else t.decode("utf-8", "replace")
                    for m, t in zip(messages, lines.lines)]
    columns: list[Any] = [repeat(k_message, n), messages]
    for key, values in ((k_level, lines.levels), (k_time, lines.stamps)):
        if None in values:
            if values.count(None) != n:
                return None
            continue
        columns += [repeat(key, n), values]
    return [*columns, repeat(k_json, n), lines.objects]


_NS = 1_000_000_000
_SECONDS = b"\x92\xce"  # [time, record] array header, seconds as a uint32


def _heads(lines: Parsed, ctx: ContainerContext, sub_second: bool, extra: int,
           lengths: list[int]) -> list[bytes] | None:
    """Each entry's bytes before its line: array header, time, the record's map header, its
    constant pairs, ``source``, the ``log`` key and the line's string header (one struct a
    line); None for a time that does not fit or lines whose string headers differ in size."""
    middle = record_middles(ctx, extra)
    sources, times = lines.sources, lines.times
    mids: Any = (repeat(middle[sources[0]]) if sources.count(sources[0]) == len(sources)
                 else map(middle.__getitem__, sources))
    strs = _str_headers(lengths)
    if strs is None:
        return None
    header, str_args = strs
    mid = f"{len(middle['stdout'])}s"
    lowest, highest = min(times) // _NS, max(times) // _NS
    if lowest == highest:  # one second (most batches): the nanoseconds by one subtraction
        secs: Iterable[int] = repeat(lowest)
        nanos: Iterable[int] = map(sub, times, repeat(lowest * _NS))
    else:
        secs, nanos = map(floordiv, times, repeat(_NS)), map(mod, times, repeat(_NS))
    try:
        if sub_second:
            return list(map(struct.Struct(f">3sII{mid}{header}").pack, repeat(EVENT_TIME_HEAD),
                            secs, nanos, mids, *str_args))
        if lowest < 1 << 16:  # msgpack says it in fewer bytes: the general path
            return None
        return list(map(struct.Struct(f">2sI{mid}{header}").pack, repeat(_SECONDS), secs, mids,
                        *str_args))
    except struct.error:  # before 1970 or after 2106
        return None


def _str_headers(lengths: list[int]) -> tuple[str, tuple[Iterable[int], ...]] | None:
    """The struct format of the lines' msgpack string headers and its values, if all are
    the same size."""
    shortest, longest = min(lengths), max(lengths)
    if longest < 32:  # fixstr: the length in the header's byte
        return "B", (map(add, lengths, repeat(0xA0)),)
    if shortest >= 32 and longest < 256:
        return "BB", (repeat(0xD9), lengths)
    if shortest >= 256 and longest < 65536:
        return "BH", (repeat(0xDA), lengths)
    return None
