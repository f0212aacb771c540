"""``parse=json`` for the fluentd sink in one compiled call a batch (:mod:`pylog._jsonpack`,
built from ``_jsonpack.c`` where the install had a C compiler): each line that is a JSON object
straight to the msgpack of its record's extra pairs, the bytes the Python path (the parse of
:mod:`pylog.jsonlines`, then :func:`pylog.sinks.fluentd_encode.encode_parts`) makes of it,
without a Python object a value. A batch with a line it cannot say that way (not an object, too
deep or large, a duplicate key, a number past 64 bits, a float or an object taken as text) is
left to the Python path, whole; so are the few next ones."""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType

import msgpack

from .frames import Columns, columns_of
from .jsonlines import JsonParser, ParseRules, ParseStats
from .jsonshapes import SKIP_AFTER_MISS
from .reassembly import Line

_jsonpack: ModuleType | None
try:
    from . import _jsonpack
except ImportError:  # installed without a C compiler: the Python path does it all
    _jsonpack = None

COMPILED = _jsonpack is not None
MAX_KEYS = 16  # names in each of parse-message-keys, -level-keys, -time-keys it takes
NAMES = ("message", "level", "time", "json")  # the pairs' keys, unless the record has them


@dataclass(slots=True)
class Transcoded(Columns):
    """A ``parse=json`` batch whose every line is an object, as its records' extra pairs in
    msgpack, their keys :data:`NAMES`: line i's are ``extras[ends[i-1]:ends[i]]`` (``ends``
    native uint32s), ``counts[i]`` pairs."""

    extras: bytes = b""
    ends: bytes = b""
    counts: bytes = b""
    rules: ParseRules = ParseRules()

    def plain(self) -> Columns:
        return Columns(self.sources, self.times, self.lines, self.sizes)

    def each(self) -> list[bytes]:
        """Each line's extra pairs (for the Python path's encoding)."""
        ends = array("I", self.ends).tolist()
        return list(map(self.extras.__getitem__, map(slice, [0, *ends], ends)))

    def sliced(self, start: int, stop: int) -> Transcoded:
        every = array("I", self.ends)
        ends = every[start:stop]
        first = every[start - 1] if start else 0
        last = ends[-1] if ends else first
        return Transcoded(self.sources[start:stop], self.times[start:stop],
                          self.lines[start:stop], self.sizes[start:stop],
                          self.extras[first:last], array("I", [e - first for e in ends]).tobytes(),
                          self.counts[start:stop], self.rules)


_PACKED_NAMES = tuple(msgpack.packb(k) for k in NAMES)


def transcode(texts: list[bytes], rules: ParseRules) -> tuple[bytes, bytes, bytes] | None:
    """The lines' extra pairs as msgpack, their ends and counts (:class:`Transcoded`'s); None
    where the Python path must parse the batch."""
    if _jsonpack is None or max(map(len, (rules.message_keys, rules.level_keys,
                                          rules.time_keys))) > MAX_KEYS:
        return None
    got: tuple[bytes, bytes, bytes] | None = _jsonpack.pairs(
        texts, rules.message_keys, rules.level_keys, rules.time_keys, _PACKED_NAMES,
        rules.max_bytes)
    return got


def entries(lines: Transcoded, middles: tuple[bytes, ...], sub_second: bool,
            ) -> tuple[bytes, list[int]] | None:
    """The batch's PackedForward entries, one after another, and where each ends; line i's
    record starts with ``middles[3 * (source is stderr) + counts[i] - 2]``. None for a time
    EventTime cannot hold (the Python path clamps it)."""
    assert _jsonpack is not None  # a Transcoded batch was made by it
    got = _jsonpack.entries(lines.lines, lines.times, lines.sources, lines.extras, lines.ends,
                            lines.counts, middles, sub_second)
    if got is None:
        return None
    blob, ends = got
    return blob, array("Q", ends).tolist()


class PackingParser(JsonParser):
    """The fluentd sink's parser: whole-line batches transcoded (:func:`transcode`), any other
    (or one it refuses, and the few after it) parsed by :class:`JsonParser` into structs."""

    def __init__(self, rules: ParseRules, stats: ParseStats | None = None) -> None:
        super().__init__(rules, stats, shapes=True)
        self.skip = 0

    def parse(self, lines: Sequence[Line]) -> Sequence[Line]:
        if not COMPILED or not lines:
            return super().parse(lines)
        if self.skip:
            self.skip -= 1
            return super().parse(lines)
        sources, times, texts = columns_of(lines)
        got = transcode(texts, self.rules)
        if got is None:
            self.skip = SKIP_AFTER_MISS
            return super().parse(lines)
        self.stats.parsed += len(texts)
        sizes = lines.sizes if isinstance(lines, Columns) else ()
        return Transcoded(sources, times, texts, sizes, *got, self.rules)
