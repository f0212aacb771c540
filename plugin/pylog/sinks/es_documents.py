"""The documents of ``_bulk`` requests: deterministic ``_id``s, each line's ``create`` action
and record as the parts of a request's bytes (:class:`Docs`), and requests of bounded size."""

from __future__ import annotations

import base64
import struct
import zlib
from bisect import bisect_right
from collections.abc import Sequence
from functools import lru_cache
from itertools import accumulate, repeat
from operator import add
from typing import Any

from ..frames import columns_of
from ..reassembly import Line
from ..record import ContainerContext, RecordColumns, interleaved, record_columns


def document_ids(lines: Sequence[Line], container_id: str) -> list[bytes]:
    """A deterministic ``_id`` per line (20 ASCII bytes): the line's time (8 bytes, big-endian,
    so that ids sort by time, the kind Lucene looks up fastest), a CRC-32 of the container ID,
    the stream and the bytes, and the container ID's first 3 bytes, base64url-encoded (the same
    bytes at the same nanosecond twice in one batch get ``.1``, ``.2``...).

    Two lines share an id only if they have the same nanosecond, the same CRC and the same
    container prefix: within a container, one collision in 2^32 lines written in the same
    nanosecond; across containers, one in 2^56. A column at a time: the CRCs are one C call
    mapped over the batch, then one ``struct.pack`` packs and one base64 call encodes the
    batch, cut every 20 characters: 0.25 µs a line, where a BLAKE2b digest a line (the ids of
    earlier versions) took 0.6 µs, the sink's biggest cost. A batch in flight while pylog is
    upgraded from such a version can be indexed twice, once under each form
    (docs/elasticsearch.md)."""
    sources, times, texts = columns_of(lines)
    cid = container_id.encode()
    seed = {s: zlib.crc32(cid + s.encode() + b"\0") for s in set(sources)}
    crcs = list(map(zlib.crc32, texts, map(seed.__getitem__, sources) if len(seed) != 1
                    else repeat(seed.popitem()[1])))  # one stream: no lookup a line
    n = len(texts)
    packed = _id_format(n).pack(*interleaved(times, crcs, [_cid_tail(cid)] * n))
    ids = list(_cut_format(n).unpack(base64.urlsafe_b64encode(packed)))
    if len(set(times)) == n or len(set(ids)) == n:  # the time is in the id (ints hash fast)
        return ids
    seen: dict[bytes, int] = {}
    for i, doc_id in enumerate(ids):
        k = seen.get(doc_id)
        if k is None:
            seen[doc_id] = 0
        else:
            seen[doc_id] = k + 1
            ids[i] = b"%s.%d" % (doc_id, k + 1)
    return ids


def _cid_tail(cid: bytes) -> bytes:
    """The container ID's first 3 bytes (it is hex; anything else: its first 3 characters)."""
    try:
        return bytes.fromhex(cid[:6].decode())
    except ValueError:
        return cid[:3].ljust(3, b"\0")


@lru_cache(maxsize=64)
def _id_format(n: int) -> struct.Struct:
    # time (signed: a time before 1970 is a valid int64), CRC, container prefix: 15 bytes
    return struct.Struct(">" + "qI3s" * n)


@lru_cache(maxsize=64)
def _cut_format(n: int) -> struct.Struct:
    return struct.Struct("20s" * n)


class Doc(tuple[str, str]):
    """One document of a ``_bulk`` request, on its own: ``(id, payload)``, the payload being the
    action line and the record line, each ending with ``\n``. Only the dead-letter file makes
    one; requests are made from :class:`Docs`' columns."""

    __slots__ = ()

    @property
    def id(self) -> str:
        return self[0]

    @property
    def source(self) -> str:
        """The record alone (its JSON text)."""
        return self[1][self[1].index("\n") + 1:-1]


_ACTION = b'{"create":{"_id":"'
_AFTER_ID = b'"}}\n'


class Docs(Sequence[Doc]):
    """Documents of ``_bulk`` requests as the columns of their bytes: each document is
    ``{"create":{"_id":"``, its id, then its record's columns (:class:`RecordColumns`, the
    first starting with ``"}}\n`` and the last ending with ``\n``). A request's body is one
    %-format of its documents' columns, and the size of each document is known without making
    it (``ends``: the running total), so no per-document string is ever made: see
    :func:`record_columns` for what that buys. ``docs[i]`` is document i as a :class:`Doc`; a
    slice is a Docs. The documents of a Docs come from one batch (one record format)."""

    __slots__ = ("_ends", "_total", "base", "ids", "records")

    def __init__(self, ids: list[bytes], records: RecordColumns, ends: list[int] | None = None,
                 base: int = 0, total: int | None = None) -> None:
        self.ids = ids        # each document's _id
        self.records = records
        self.base = base
        # The running total (bytes up to the end of each document, from ``base``) is made
        # only when a request is cut out of the batch: one taken whole needs just its size.
        self._ends = ends
        self._total = total

    @property
    def ends(self) -> list[int]:
        if self._ends is None:  # the action and id, then the record
            sizes = map(add, map(add, map(len, self.ids), self.records.sizes()),
                        repeat(len(_ACTION)))
            self._ends = list(accumulate(sizes, initial=self.base))[1:]
        return self._ends

    def size(self) -> int:
        """All the documents' bytes."""
        if self._total is None:
            self._total = self.ends[-1] - self.base if self.ids else 0
        return self._total

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            start, stop, step = i.indices(len(self.ids))
            if step != 1:
                raise ValueError("Docs slices are contiguous")
            if stop <= start:  # nothing (what a request taken whole leaves to send again)
                return Docs([], self.records.sliced(0, 0), [], total=0)
            return Docs(self.ids[start:stop], self.records.sliced(start, stop),
                        self.ends[start:stop], self.ends[start - 1] if start else self.base)
        doc_id = self.ids[i]  # IndexError out of range, as a sequence does
        i %= len(self.ids)
        body = self[i:i + 1].body().decode("utf-8", "replace")
        return Doc((doc_id.decode(), body))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Docs):
            return NotImplemented
        return self.ids == other.ids and self.body() == other.body()

    __hash__ = None  # type: ignore[assignment]

    def sizes(self) -> list[int]:
        """Each document's size in bytes."""
        return [b - a for a, b in zip([self.base, *self.ends], self.ends)]

    def body(self) -> bytes:
        """The ``_bulk`` request body of these documents: one %-format of all their columns."""
        r = self.records
        return ((_ACTION + b"%s" + r.form()) * len(self.ids)) % interleaved(
            self.ids, r.heads, r.nanos, r.messages, r.tails)

    def pick(self, indices: Sequence[int]) -> Docs:
        """These documents, in this order."""
        sizes = self.sizes()
        return Docs(list(map(self.ids.__getitem__, indices)), self.records.picked(indices),
                    list(accumulate(map(sizes.__getitem__, indices))))

    @classmethod
    def concat(cls, many: Sequence[Docs]) -> Docs:
        if len(many) == 1:
            return many[0]
        ids: list[bytes] = []
        sizes: list[int] = []
        for d in many:
            ids += d.ids
            sizes += d.sizes()
        return cls(ids, RecordColumns.concat([d.records for d in many]),
                   list(accumulate(sizes)))


def bulk_documents(lines: Sequence[Line], ctx: ContainerContext) -> Docs:
    """Each line as a ``create`` action plus its record, ready for ``_bulk``."""
    ids = document_ids(lines, ctx.container_id)
    cols = record_columns(lines, ctx, lead=_AFTER_ID, end=b"\n")
    return Docs(ids, cols, total=len(ids) * len(_ACTION) + sum(map(len, ids)) + cols.size())


def chunks(docs: Docs, max_bytes: int) -> list[Docs]:
    """Bulk requests of at most ``max_bytes`` (a bigger document goes alone); each request's
    end found by bisecting the running total of the sizes, not by a step per document."""
    if docs.size() <= max_bytes:
        return [docs] if len(docs) else []
    ends = docs.ends
    out: list[Docs] = []
    start, done = 0, docs.base  # first document of the request, bytes before it
    while start < len(docs):
        end = max(start + 1, bisect_right(ends, done + max_bytes, lo=start))
        out.append(docs[start:end])
        start, done = end, ends[end - 1]
    return out
