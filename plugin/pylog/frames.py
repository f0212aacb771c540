"""The FIFO wire format: 4-byte big-endian length + protobuf ``LogEntry``, decoded incrementally.

The same format is the store's file format, so this decoder reads both.
Sans-IO: :class:`FrameDecoder` is fed bytes and returns whole frames, so it is tested on the
captured vectors and fuzzed without a pipe. A frame whose length is implausible or whose body is
not a LogEntry is skipped and counted, and the decoder resyncs on the next plausible frame start
(dockerd always writes ``source`` first, so a body starts ``0a 06 "stdout"`` or ``0a 06 "stderr"``).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from operator import add, itemgetter

from .entry import DecodeError, LogBatch, LogColumns, LogEntry
from .protowire import varint

DEFAULT_MAX_FRAME = 1 << 20  # dockerd splits lines at 16 KiB, so real frames are ~16.5 KiB at most
_BODY_PREFIXES = (b"\n\x06stdout", b"\n\x06stderr")
_SYNC = b"\n\x06std"
_SOURCES = ("stdout", "stderr")
_SOURCE_SET = frozenset(_SOURCES)
_MIN_FRAME = 8  # the source field alone
_LEN = struct.Struct(">I")


@dataclass(slots=True)
class DecodeStats:
    frames: int = 0
    corrupt: int = 0  # skipped regions (one per resync)
    skipped_bytes: int = 0


@dataclass(slots=True)
class Chunk:
    """What one ``feed`` decoded: the entries, and where their frames lie in ``data``.

    ``runs`` are ``[start, end)`` byte ranges of ``data`` that hold only whole, valid frames, in
    order (adjacent frames coalesced), so the store keeps a chunk of the FIFO with one write and
    no per-line copies; ``entries`` are the same frames decoded.
    """

    data: bytes = b""
    runs: list[tuple[int, int]] = field(default_factory=list)
    entries: list[LogEntry] = field(default_factory=list)
    base: int = 0  # where data[0] is in the whole stream fed to the decoder

    def spans(self) -> list[tuple[int, int]]:
        """Each valid frame's ``[start, end)`` in ``data`` (length prefix included)."""
        out = []
        unpack = _LEN.unpack_from
        for start, end in self.runs:
            pos = start
            while pos < end:
                stop = pos + 4 + unpack(self.data, pos)[0]
                out.append((pos, stop))
                pos = stop
        return out

    def frames(self) -> list[bytes]:
        """Each valid frame's bytes (length prefix included), e.g. for tests and tools."""
        return [self.data[start:end] for start, end in self.spans()]


class FrameDecoder:
    """Turns a byte stream into LogEntry messages; never raises on bad input."""

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self.stats = DecodeStats()
        self._rest = b""
        self._base = 0  # stream offset of _rest[0] (or of the next byte fed)
        self._in_garbage = False  # inside a corrupt region already counted

    @property
    def pending_bytes(self) -> int:
        """Bytes held back as the start of an unfinished frame."""
        return len(self._rest)

    def feed(self, data: bytes) -> Chunk:
        buf = self._rest + data if self._rest else data
        entries: list[LogEntry] = []
        runs: list[tuple[int, int]] = []
        run_start = run_end = 0
        pos = 0
        end = len(buf)
        unpack = _LEN.unpack_from
        from_string = LogEntry.FromString
        max_frame = self.max_frame
        while end - pos >= 4:
            (n,) = unpack(buf, pos)
            if n < _MIN_FRAME or n > max_frame:
                pos = self._resync(buf, pos)
                continue
            avail = end - pos - 4
            if avail < _MIN_FRAME:
                break
            if not buf.startswith(_BODY_PREFIXES, pos + 4):
                pos = self._resync(buf, pos)
                continue
            if avail < n:
                break
            stop = pos + 4 + n
            try:
                entry = from_string(buf[pos + 4:stop])
            except DecodeError:
                pos = self._resync(buf, pos)
                continue
            if entry.source not in _SOURCES:  # a later duplicate field overrode the first
                pos = self._resync(buf, pos)
                continue
            entries.append(entry)
            self._in_garbage = False
            if pos != run_end:
                if run_end > run_start:
                    runs.append((run_start, run_end))
                run_start = pos
            run_end = pos = stop
        if run_end > run_start:
            runs.append((run_start, run_end))
        self._rest = buf[pos:]
        base = self._base
        self._base = base + pos
        self.stats.frames += len(entries)
        return Chunk(buf, runs, entries, base)

    def _resync(self, buf: bytes, bad: int) -> int:
        """Skip a corrupt frame at ``bad``: return where the next plausible frame starts."""
        if not self._in_garbage:
            self.stats.corrupt += 1
            self._in_garbage = True
        nxt = next_sync(buf, bad, self.max_frame)
        self.stats.skipped_bytes += nxt - bad
        return nxt

    def finish(self) -> list[Chunk]:
        """End of stream: an unfinished frame is corrupt (counted and skipped); return the good
        frames that were held back behind it, e.g. after a length field that promised too much."""
        out: list[Chunk] = []
        while self._rest:
            buf, self._rest = self._rest, b""
            # Each pass skips at least one byte, so this ends.
            skip = self._resync(buf, 0)
            self._base += skip
            chunk = self.feed(buf[skip:])
            if chunk.entries:
                out.append(chunk)
        self._in_garbage = False
        return out


def next_sync(buf: bytes, bad: int, max_frame: int) -> int:
    """Where the next plausible frame after a corrupt one at ``bad`` starts (a length in range
    followed by a ``source`` field), or, if none is in ``buf`` yet, the earliest position that
    may still begin one (so a caller holds those bytes back for more data)."""
    search = bad + 5  # a body cannot start before bad+1+4
    while True:
        q = buf.find(_SYNC, search)
        if q < 0:
            return max(bad + 1, len(buf) - 4 - len(_SYNC) + 1)
        if q + 8 <= len(buf) and not buf.startswith(_BODY_PREFIXES, q):
            search = q + 1
            continue
        (n,) = _LEN.unpack_from(buf, q - 4)
        if _MIN_FRAME <= n <= max_frame:
            return q - 4
        search = q + 1


def frame_at(buf: bytes, pos: int, max_frame: int) -> int:
    """The end of the frame at ``pos`` judged by its header and ``source`` prefix only (no
    protobuf parse): > 0 a whole frame ends there; 0 not enough bytes yet; -1 not a frame."""
    avail = len(buf) - pos
    if avail < 4:
        return 0
    (n,) = _LEN.unpack_from(buf, pos)
    if n < _MIN_FRAME or n > max_frame:
        return -1
    if avail < 4 + _MIN_FRAME:
        return 0
    if not buf.startswith(_BODY_PREFIXES, pos + 4):
        return -1
    return pos + 4 + n if avail >= 4 + n else 0


def entry_at(fd: int, offset: int) -> LogEntry | None:
    """The entry of the whole frame that starts at ``offset`` in a stored file (two preads),
    or None if there is none there."""
    head = os.pread(fd, 4, offset)
    if len(head) < 4:
        return None
    (n,) = _LEN.unpack(head)
    body = os.pread(fd, n, offset + 4)
    if len(body) < n:
        return None
    try:
        entry: LogEntry = LogEntry.FromString(body)
    except DecodeError:
        return None
    return entry


def encode_frame(entry: LogEntry) -> bytes:
    body: bytes = entry.SerializeToString()
    return _LEN.pack(len(body)) + body


def join_frames(bodies: Iterable[bytes]) -> bytes:
    """Serialized LogEntry bodies as one byte string of frames (each with its length)."""
    out: list[bytes] = []
    pack = _LEN.pack
    for body in bodies:
        out += (pack(len(body)), body)
    return b"".join(out)


def _field1_header(n: int) -> bytes:
    """Tag of field 1 (length-delimited) and the varint ``n``: how LogBatch holds an entry."""
    return b"\x0a" + varint(n)


# Every frame dockerd writes (<= 16.5 KiB): its length as a LogBatch entry's tag and varint.
_HEADERS = ([bytes((0x0A, n)) for n in range(1 << 7)]
            + [bytes((0x0A, n & 0x7F | 0x80, n >> 7)) for n in range(1 << 7, 1 << 14)]
            + [bytes((0x0A, n & 0x7F | 0x80, (n >> 7) & 0x7F | 0x80, n >> 14))
               for n in range(1 << 14, 1 << 15)])


def decode_frames(data: bytes, max_frame: int = DEFAULT_MAX_FRAME,
                  ) -> tuple[list[LogEntry], list[int]] | None:
    """The whole frames at the start of ``data``, parsed with one call into the protobuf runtime,
    and the offset after each; None if there is none, or if any is not plainly valid (a length
    out of range, a body that does not start with ``source``, a body that does not parse, a
    second ``source``), so that the caller decodes those bytes with :class:`FrameDecoder`,
    which skips and counts.

    Each frame's 4-byte length is swapped for the tag and varint length of a LogBatch entry,
    which makes the batch one protobuf message: per line, only the length walk is Python.
    """
    parts: list[bytes | memoryview] = []
    ends: list[int] = []
    view = memoryview(data)
    unpack = _LEN.unpack_from
    startswith = data.startswith
    headers = _HEADERS
    top = len(headers)
    pos = 0
    end = len(data)
    while end - pos >= 4:
        (n,) = unpack(data, pos)
        if n < _MIN_FRAME or n > max_frame:
            return None
        if end - pos - 4 < _MIN_FRAME:
            break
        if not startswith(_BODY_PREFIXES, pos + 4):
            return None
        stop = pos + 4 + n
        if stop > end:
            break
        parts.append(headers[n] if n < top else _field1_header(n))
        parts.append(view[pos + 4:stop])
        ends.append(stop)
        pos = stop
    if not ends:
        return None  # no whole frame: the frame decoder tells a short read from damage
    try:
        entries = list(LogBatch.FromString(b"".join(parts)).entries)
    except DecodeError:
        return None
    if len(entries) != len(ends):
        return None
    sources = {e.source for e in entries}
    if not sources <= _SOURCE_SET:  # a later duplicate field overrode the first
        return None
    return entries, ends


_LAST4 = itemgetter(slice(-4, None))  # a piece's last four bytes: the next frame's length
_BODY = itemgetter(slice(None, -4))  # a piece without them


@dataclass(slots=True)
class Split:
    """What :func:`_split_frames` found: the pieces of ``data`` split at each body start, the
    length of each whole frame, what the last whole body holds after ``0a 06 "std"``, and
    whether every line went to stderr (or every line to stdout)."""

    segs: list[bytes]
    declared: tuple[int, ...]  # one per whole frame
    tail: bytes
    only: str | None  # "stdout" or "stderr" if all of data's frames are of that stream


def _split_frames(data: bytes, max_frame: int) -> Split | None:
    """``data`` split at the start of every body (``0a 06 "std"``), proven to be whole frames
    from its start; None if the proof fails or there is none.

    Piece 0 is the first length field; piece i ends with frame i's body minus its first five
    bytes, then frame i+1's length field. A body that does not start the usual way, damage, or
    a line that contains those five bytes all make some piece disagree with its length field.
    """
    segs = data.split(_SYNC)
    k = len(segs) - 1  # frames that started in data
    if k < 1 or len(segs[0]) != 4:
        return None
    # Each of them goes on "out" or "err" (the last may not have got that far yet).
    outs = data.count(_BODY_PREFIXES[0])
    errs = 0 if outs == k else data.count(_BODY_PREFIXES[1])  # all stdout: no second scan
    full = outs + errs
    if full != k and not (full == k - 1 and len(segs[-1]) < 3):
        return None
    inner = segs[1:-1]
    lengths = list(map(len, inner))
    # Frame i's length is its piece's + 1 (the piece lacks the 5-byte _SYNC and has the next
    # 4-byte length field): a body of at least _MIN_FRAME and at most max_frame bytes.
    if inner and (min(lengths) < _MIN_FRAME - 1 or max(lengths) >= max_frame):
        return None
    declared = struct.unpack(f">{k}I", b"".join([segs[0], *map(_LAST4, inner)]))
    if declared[:-1] != tuple(map(add, lengths, repeat(1))):
        return None
    last = segs[-1]
    rest = declared[-1] - len(_SYNC)  # bytes of the last body after _SYNC
    if len(last) >= rest:
        if not _MIN_FRAME <= declared[-1] <= max_frame:
            return None
        tail = last[:rest]
    else:  # the last frame is not whole yet
        if k == 1:
            return None
        declared = declared[:-1]
        tail = inner[-1][:-4]
    only = "stdout" if not errs else "stderr" if not outs else None
    return Split(segs, declared, tail, only)


def frames_size(lengths: Sequence[int]) -> int:
    """The bytes that frames of these body lengths take, length fields included."""
    return 4 * len(lengths) + sum(lengths)


def frame_runs(data: bytes, size: int, max_frame: int = DEFAULT_MAX_FRAME) -> list[bytes]:
    """``data`` (whole frames) cut at frame boundaries into runs of about ``size`` bytes, or
    whole if it is not plainly good frames: a worker decodes a run per call, since one decode
    call holds the GIL and the event loop waits for it."""
    lengths = frame_lengths(data, max_frame) if len(data) > size else None
    if lengths is None:
        return [data]
    runs, start, end = [], 0, 0
    for n in lengths:
        end += 4 + n
        if end - start >= size:
            runs.append(data[start:end])
            start = end
    if start < len(data):
        runs.append(data[start:])
    return runs


def frame_lengths(data: bytes, max_frame: int = DEFAULT_MAX_FRAME) -> tuple[int, ...] | None:
    """The length (after its 4-byte length field) of each whole frame at the start of ``data``,
    found in C (see :func:`_split_frames`); None if the bytes are not plainly good frames from
    their start (the caller walks them frame by frame then, counting and skipping damage)."""
    split = _split_frames(data, max_frame)
    return None if split is None else split.declared


@dataclass(slots=True)
class Columns(Sequence[LogEntry]):
    """Whole lines, field by field (what :func:`decode_columns` gives): the i-th line is
    ``sources[i]``, ``times[i]``, ``lines[i]``. Sinks that can encode columns (fluentd) take it
    as it is; to the others it is a sequence of LogEntry."""

    sources: list[str]
    times: list[int]
    lines: list[bytes]
    sizes: tuple[int, ...] = ()  # each frame's length after its 4-byte length field, if known

    def __len__(self) -> int:
        return len(self.lines)

    def __getitem__(self, i: int) -> LogEntry:  # type: ignore[override]  # no slices
        return LogEntry(source=self.sources[i], time_nano=self.times[i], line=self.lines[i])

    def __iter__(self) -> Iterator[LogEntry]:
        for i in range(len(self.lines)):
            yield self[i]

    def sliced(self, start: int, stop: int) -> Columns:
        """Lines ``start`` to ``stop``, still as columns."""
        return Columns(self.sources[start:stop], self.times[start:stop],
                       self.lines[start:stop], self.sizes[start:stop])


def slice_of(lines: Sequence[LogEntry], start: int, stop: int) -> Sequence[LogEntry]:
    """Lines ``start`` to ``stop`` of a batch, of the same kind (columns stay columns, a
    ``parse=json`` batch stays parsed)."""
    if isinstance(lines, Columns):
        return lines.sliced(start, stop)
    return list(lines[start:stop])


def columns_of(lines: Sequence[LogEntry]) -> tuple[list[str], list[int], list[bytes]]:
    """Sources, times and line bytes of a batch: as they are for :class:`Columns`, gathered
    from the entries otherwise. What the sinks' column-at-a-time encoders start from."""
    if isinstance(lines, Columns):
        return lines.sources, lines.times, lines.lines
    return ([line.source for line in lines], [line.time_nano for line in lines],
            [line.line for line in lines])


def decode_columns(data: bytes, max_frame: int = DEFAULT_MAX_FRAME) -> tuple[Columns, int] | None:
    """The whole frames at the start of ``data`` as columns, and where the last one ends —
    without a Python step per frame; None unless the bytes are plainly good frames of whole
    lines (each with a source, a time and a non-empty line, none partial), in which case the
    caller decodes them frame by frame (:func:`decode_frames`, :class:`FrameDecoder`).

    Every body starts with the ``source`` field, ``0a 06 "std"``: splitting at those bytes (in
    C) gives the frames, which are proven right by comparing each 4-byte length with the size
    of what the split found (a line that happens to contain the same bytes makes a piece that
    is too short, and the proof fails). The bodies, joined, are parsed as one LogColumns
    message; its repeated fields come out as lists, and their lengths prove that each entry
    had exactly one of each field.
    """
    split = _split_frames(data, max_frame)
    if split is None:
        return None
    n = len(split.declared)
    bodies = list(map(_BODY, split.segs[1:n]))  # each body after its first five bytes
    bodies.append(split.tail)
    try:
        cols = LogColumns.FromString(_SYNC + _SYNC.join(bodies))
    except DecodeError:
        return None
    if (len(cols.source) != n or len(cols.time_nano) != n or len(cols.line) != n
            or len(cols.partial) or len(cols.partial_log_metadata)):
        return None  # an empty line, a partial one, a repeated field: frame by frame
    if split.only is not None:
        sources = [split.only] * n  # one stream: no list of a million equal strings to build
    else:
        sources = list(cols.source)
        if not set(sources) <= _SOURCE_SET:
            return None
    return (Columns(sources, list(cols.time_nano), list(cols.line), split.declared),
            4 * n + sum(split.declared))


@dataclass(slots=True)
class Decoded:
    """What :func:`decode_batch` found at the start of a byte string."""

    entries: Sequence[LogEntry]  # a list of LogEntry, or Columns (whole lines)
    ends: list[int]  # the offset after each entry (Columns: after the last one only)
    consumed: int  # where the next read starts: past the last frame, and past damage
    damage: int = 0  # bytes skipped as no frame


def decode_batch(data: bytes, max_frame: int = DEFAULT_MAX_FRAME, columns: bool = False,
                 final: bool = False) -> Decoded:
    """The whole frames at the start of ``data``: the one place that picks a decoder. As
    :class:`Columns` if ``columns`` and the bytes are plainly whole lines, else by one
    protobuf parse (:func:`decode_frames`), else frame by frame, skipping and counting damage.
    ``final``: nothing follows ``data`` (the end of a finished file), so an unfinished frame is
    damage, and the good frames behind it are found too."""
    if columns and data:
        cols = decode_columns(data, max_frame)
        if cols is not None and (not final or cols[1] == len(data)):
            return Decoded(cols[0], [cols[1]], cols[1])
    fast = decode_frames(data, max_frame) if data else None
    if fast is not None and (not final or fast[1][-1] == len(data)):
        return Decoded(fast[0], fast[1], fast[1][-1])
    dec = FrameDecoder(max_frame)
    chunks = [dec.feed(data)]
    if final:
        chunks += dec.finish()
    entries = [e for c in chunks for e in c.entries]
    ends = [c.base + end for c in chunks for _, end in c.spans()]
    consumed = len(data) if final else len(data) - dec.pending_bytes
    return Decoded(entries, ends, consumed, dec.stats.skipped_bytes)
