"""The fluentd sink's PackedForward messages for a ``parse=json`` batch whose every line is an
object: each message packed by one msgspec call over a flat list of the batch's values.

A message is ``[tag, entries as one bin, option]``. Its entries are laid out as one list: for
each line what is already msgpack as ``msgspec.Raw`` (the array header and time, the record's
map header with its constant pairs, ``source`` and the ``log`` key, ``log``'s string header,
the line), then the extra pairs' keys and values (``message``, ``level``, ``time``, ``json``:
the fields as decoded). The Raws of all but the line are shared: one for each second, source
and string length (EventTime's differ a line: one struct and Raw each). One ``encode_into``
writes them all after room left for the message's head; the list's own array header lands in
that room and is overwritten by the head. So per line only the line's Raw (and EventTime's) is
made, and the encoder only copies.

What does not fit this (a line sent as text, a level or time some lines lack, a time EventTime
cannot hold) is left to :func:`pylog.sinks.fluentd_encode.encode_parts`; both make the same
bytes (tests/test_fluentd_json.py).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from operator import floordiv, mod, sub
from typing import Any

import msgpack
import msgspec

from ..frames import Columns
from ..jsonlines import JsonParser, Parsed, ParseRules
from ..jsonpack import NAMES, Transcoded, entries
from ..reassembly import Line
from ..record import ContainerContext
from .fluentd_encode import (
    EVENT_TIME_HEAD,
    HEAD_TIME,
    cuts,
    extra_keys,
    record_middles,
    str_header,
)

_ENCODE_INTO = msgspec.msgpack.Encoder().encode_into
Messages = list[tuple[bytes | bytearray, int]]  # each ``[tag, entries`` and its entry count


@dataclass(slots=True)
class Packed(Columns):
    """A ``parse=json`` batch already packed (in the worker that parsed it) for the context
    ``ctx``: its lines, for the delivery's counts, and its messages; the parsed objects are
    gone (:meth:`parsed` makes them again, for a context that changed since)."""

    messages: Messages = field(default_factory=list)
    ctx: ContainerContext | None = None
    rules: ParseRules = ParseRules()

    def parsed(self) -> Sequence[Line]:
        """The lines parsed again (the general way: no shape, no counts)."""
        return JsonParser(self.rules).parse(Columns(self.sources, self.times, self.lines,
                                                    self.sizes))

    def sliced(self, start: int, stop: int) -> Columns:
        raise TypeError("a packed batch is sent whole: its messages cannot be cut")


_ESTIMATE = 32  # bytes a line over twice its length: the extra pairs' keys (a guess, checked)


def json_messages(lines: Parsed, ctx: ContainerContext, sub_second: bool, limit: int,
                  tag: bytes) -> Messages | None:
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
    out: Messages = []
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


def transcoded_messages(lines: Transcoded, ctx: ContainerContext, sub_second: bool, limit: int,
                        tag: bytes) -> Messages | None:
    """:func:`json_messages` of a batch the compiled parser took (:mod:`pylog.jsonpack`): its
    entries made in one call, cut into messages; None where the pairs must be renamed (a
    selected label or env var has one's name) or a time is out of EventTime's range."""
    if extra_keys(ctx) != NAMES:
        return None
    by_count = {k: record_middles(ctx, k) for k in (2, 3, 4)}
    middles = tuple(by_count[k][src] for src in ("stdout", "stderr") for k in (2, 3, 4))
    got = entries(lines, middles, sub_second)
    if got is None:
        return None
    blob, ends = got
    head = b"\x93" + tag + b"\xc6"
    out: Messages = []
    for start, end, first, last in cuts(ends, limit):
        out.append((head + struct.pack(">I", last - first) + blob[first:last], end - start))
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
    bytes before its line, or None."""
    texts = lines.lines
    if not texts or not lines.complete and None in lines.objects:  # (complete: no scan)
        return None
    pairs = _pairs(lines, extra_keys(ctx))
    if pairs is None:
        return None
    times = _times(lines.times, sub_second)
    if times is None:
        return None
    n = len(texts)
    middle = {src: msgspec.Raw(b) for src, b in record_middles(ctx, len(pairs) // 2).items()}
    sources = lines.sources
    strs = {k: msgspec.Raw(str_header(k)) for k in set(lengths)}
    width = 4 + len(pairs)
    items: list[Any] = [None] * (width * n)
    items[0::width] = times
    items[1::width] = ([middle[sources[0]]] * n if sources.count(sources[0]) == n
                       else list(map(middle.__getitem__, sources)))
    items[2::width] = list(map(strs.__getitem__, lengths))
    items[3::width] = list(map(msgspec.Raw, texts))
    for i, column in enumerate(pairs, 4):
        items[i::width] = column
    head = len(items[0]) + len(items[1]) + len(items[2])
    return items, width, head


def _pairs(lines: Parsed, keys: tuple[str, str, str, str]) -> list[Any] | None:
    """The extra pairs' columns, key and value in turn: ``message`` (the line itself where it
    has none), ``level`` and ``time`` where every line has one, ``json``; None if some lines
    have a level or time and others not (their records differ in size: the general path)."""
    n = len(lines.lines)
    k_message, k_level, k_time, k_json = keys
    if lines.complete:  # every line has all three (each None check is a scan of the batch)
        return [repeat(k_message, n), lines.messages, repeat(k_level, n), lines.levels,
                repeat(k_time, n), lines.stamps, repeat(k_json, n), lines.objects]
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


def _times(times: list[int], sub_second: bool) -> list[msgspec.Raw] | None:
    """Each entry's array header and time: EventTime (one struct a line), or whole seconds
    as the general path packs them (one for each second of the batch, shared by its lines);
    None for a time EventTime cannot hold."""
    lowest, highest = min(times) // _NS, max(times) // _NS
    if not sub_second:
        if lowest == highest:  # one second (most batches)
            return [msgspec.Raw(b"\x92" + msgpack.packb(lowest))] * len(times)
        seconds = list(map(floordiv, times, repeat(_NS)))
        said = {s: msgspec.Raw(b"\x92" + msgpack.packb(s)) for s in set(seconds)}
        return list(map(said.__getitem__, seconds))
    if lowest == highest:  # the nanoseconds by one subtraction
        secs: Iterable[int] = repeat(lowest)
        nanos: Iterable[int] = map(sub, times, repeat(lowest * _NS))
    else:
        secs, nanos = map(floordiv, times, repeat(_NS)), map(mod, times, repeat(_NS))
    try:
        return list(map(msgspec.Raw, map(HEAD_TIME.pack, repeat(EVENT_TIME_HEAD), secs, nanos)))
    except struct.error:  # before 1970 or after 2106: the general path clamps it
        return None
