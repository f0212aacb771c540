"""The fast paths of delivery: a batch of stored frames parsed with one protobuf call, and
fluentd entries encoded per batch — both must give exactly what the frame-by-frame decoder and
a plain msgpack encoding give."""

from __future__ import annotations

import msgpack
from hypothesis import given
from hypothesis import strategies as st

from pylog.entry import LogEntry
from pylog.frames import (
    Columns,
    FrameDecoder,
    decode_batch,
    decode_columns,
    decode_frames,
    encode_frame,
    frame_at,
    frame_lengths,
)
from pylog.record import ContainerContext
from pylog.sinks.fluentd_encode import context_pairs, encode_parts
from tests.helpers_frames import decode_all

T0 = 1_795_319_769_123_456_789


def encode_entries(lines: list[LogEntry], ctx: ContainerContext, sub_second: bool) -> list[bytes]:
    """Each line as one msgpack ``[time, record]`` entry (the sink sends
    :func:`encode_parts` joined per message)."""
    parts, _ = encode_parts(lines, ctx, sub_second)
    return [b"".join(parts[i:i + 4]) for i in range(0, len(parts), 4)]

entries_st = st.lists(st.builds(
    LogEntry, source=st.sampled_from(["stdout", "stderr"]),
    time_nano=st.integers(-2**63, 2**63 - 1), line=st.binary(max_size=300), partial=st.booleans()),
    max_size=40)


def slow(data: bytes) -> tuple[list[LogEntry], list[int]]:
    chunk = FrameDecoder().feed(data)
    return chunk.entries, [end for _, end in chunk.spans()]


@given(entries_st, st.integers(0, 50))
def test_a_batch_decodes_as_frame_by_frame(entries: list[LogEntry], cut: int) -> None:
    data = b"".join(encode_frame(e) for e in entries)
    data = data[:len(data) - cut] if cut < len(data) else data  # a torn last frame is left out
    fast = decode_frames(data)
    if fast is None:  # no whole frame in it
        assert slow(data) == ([], [])
    else:
        assert fast == slow(data)


def test_long_lines_and_big_frames() -> None:
    entries = [LogEntry(source="stdout", time_nano=T0, line=b"x" * n) for n in
               (0, 127, 128, 16383, 16384, 40000, 200000)]
    data = b"".join(encode_frame(e) for e in entries)
    assert decode_frames(data) == slow(data)


@given(entries_st, st.binary(min_size=1, max_size=12), st.integers(0, 10**6))
def test_damage_is_left_to_the_frame_decoder(entries: list[LogEntry], junk: bytes,
                                             where: int) -> None:
    """Either the fast path agrees with the frame decoder, or it declines (None)."""
    data = b"".join(encode_frame(e) for e in entries)
    at = where % (len(data) + 1)
    data = data[:at] + junk + data[at:]
    fast = decode_frames(data)
    if fast is not None:
        assert fast == slow(data)


def test_a_second_source_field_is_declined() -> None:
    body = LogEntry(source="stdout", line=b"a").SerializeToString() + b"\x0a\x03bad"
    data = len(body).to_bytes(4, "big") + body
    assert decode_frames(data) is None
    assert FrameDecoder().feed(data).entries == []


CTX = ContainerContext(container_id="c" * 64, name="web", image_name="busybox",
                       image_id="sha256:" + "1" * 64, tag="web", host_name="h", labels={"app": "x"},
                       env={"MODE": "prod"})


def plain(line: LogEntry, sub_second: bool) -> list[object]:
    """The entry as msgpack would encode it from Python objects (the reference)."""
    n, pairs = context_pairs(CTX)
    unpacker = msgpack.Unpacker(raw=True)
    unpacker.feed(pairs)
    items = list(unpacker)
    record = dict(zip(items[0::2], items[1::2]))
    assert len(record) == n
    record[b"source"] = line.source.encode()
    record[b"log"] = line.line
    if sub_second:  # EventTime has 32-bit seconds: 1970 to 2106
        ns = min(max(line.time_nano, 0), 2**32 * 10**9 - 1)
        t: object = msgpack.ExtType(0, (ns // 10**9).to_bytes(4, "big") +
                                    (ns % 10**9).to_bytes(4, "big"))
    else:
        t = line.time_nano // 10**9
    return [t, record]


@given(entries_st, st.booleans())
def test_fluentd_entries_are_what_msgpack_makes(lines: list[LogEntry], sub_second: bool) -> None:
    got = encode_entries(lines, CTX, sub_second)
    assert len(got) == len(lines)
    for blob, line in zip(got, lines):
        assert msgpack.unpackb(blob, raw=True) == plain(line, sub_second)
        # The line is a msgpack str (as Docker's Go encoder sends it), not bin.
        assert blob[-len(line.line) - 1:][:1] != b"\xc4" or not line.line


def test_fluentd_str_headers_of_every_size() -> None:
    for n in (0, 31, 32, 255, 256, 4095, 4096, 65535, 65536):
        line = LogEntry(source="stderr", time_nano=T0, line=b"y" * n)
        (blob,) = encode_entries([line], CTX, True)
        assert msgpack.unpackb(blob, raw=True) == plain(line, True)


def damaged(entries: list[LogEntry], cut: int, junk: bytes, where: int) -> bytes:
    """The entries' frames with ``cut`` bytes torn off the end and ``junk`` put in somewhere."""
    data = b"".join(encode_frame(e) for e in entries)
    data = data[:len(data) - cut] if cut < len(data) else data
    at = where % (len(data) + 1)
    return data[:at] + junk + data[at:]


def as_columns(entries: list[LogEntry]) -> tuple[list[str], list[int], list[bytes]]:
    return [e.source for e in entries], [e.time_nano for e in entries], [e.line for e in entries]


@given(entries_st, st.integers(0, 50), st.binary(max_size=12), st.integers(0, 10**6))
def test_columns_are_the_frames_or_nothing(entries: list[LogEntry], cut: int, junk: bytes,
                                          where: int) -> None:
    """decode_columns gives exactly the frame decoder's entries (as columns, and where the
    last ends), or declines: never a wrong line, whatever the damage."""
    data = damaged(entries, cut, junk, where)
    got = decode_columns(data)
    if got is None:
        return
    cols, end = got
    want, ends = slow(data)
    want = want[:len(cols)]
    assert (cols.sources, cols.times, cols.lines) == as_columns(want)
    assert end == ends[len(cols) - 1]
    assert not any(e.partial for e in want)
    assert [(e.source, e.time_nano, e.line) for e in cols] == list(zip(*as_columns(want)))


def test_plain_lines_come_as_columns() -> None:
    entries = [LogEntry(source=("stdout", "stderr")[i % 2], time_nano=T0 + i, line=b"line %d" % i)
               for i in range(1000)]
    data = b"".join(encode_frame(e) for e in entries)
    got = decode_columns(data + data[:7])  # and the start of a frame not yet whole
    assert got is not None
    cols, end = got
    assert (cols.sources, cols.times, cols.lines) == as_columns(entries) and end == len(data)
    # A line that contains the bytes a body starts with is still decoded right (or declined).
    tricky = [LogEntry(source="stdout", time_nano=T0, line=b"a\x00\x00\x00\x10\n\x06stdout b")]
    data = b"".join(encode_frame(e) for e in tricky + entries)
    assert decode_columns(data) is None
    assert decode_frames(data) == slow(data)
    # Empty lines and partial chunks are left to the frame decoder.
    for odd in (LogEntry(source="stdout", time_nano=T0, line=b""),
                LogEntry(source="stdout", time_nano=T0, line=b"x", partial=True)):
        assert decode_columns(b"".join(encode_frame(e) for e in [*entries, odd])) is None


@given(entries_st, st.integers(0, 50), st.binary(max_size=12), st.integers(0, 10**6))
def test_frame_lengths_are_the_frames_or_nothing(entries: list[LogEntry], cut: int,
                                                 junk: bytes, where: int) -> None:
    """The store's fast walk finds exactly the frames its frame-by-frame walk finds (from the
    start, up to the last whole one), or declines."""
    data = damaged(entries, cut, junk, where)
    got = frame_lengths(data)
    if got is None:
        return
    walk, p = [], 0  # the store's frame-by-frame walk (length and body prefix, no parse)
    while (e := frame_at(data, p, 1 << 20)) > 0:
        walk.append(e - p - 4)
        p = e
    assert list(got) == walk


def known(entry: LogEntry) -> bytes:
    """An entry's known fields, serialized (no unknown field a damaged body may hold)."""
    copy = LogEntry()
    copy.CopyFrom(entry)
    copy.DiscardUnknownFields()
    return copy.SerializeToString()


@given(entries_st, st.binary(max_size=12), st.integers(0, 10**6), st.booleans(), st.booleans())
def test_decode_batch_gives_what_the_frame_decoder_gives(entries: list[LogEntry], junk: bytes,
                                                         where: int, columns: bool,
                                                         final: bool) -> None:
    """Whichever decoder decode_batch picks: the frame decoder's entries (all of them when
    ``final``, torn frames and damage skipped), the offset after each, and where to go on."""
    data = b"".join(encode_frame(e) for e in entries)
    at = where % (len(data) + 1)
    data = data[:at] + junk + data[at:]
    got = decode_batch(data, columns=columns, final=final)
    if final:
        assert list(map(known, got.entries)) == list(map(known, decode_all(data)))
        assert got.consumed == len(data)
        return
    dec = FrameDecoder()
    chunk = dec.feed(data)
    # Junk inside a body can read as a field no schema has: the columns keep only the known
    # fields (all a sink sends), the frame decoder keeps it too.
    assert list(map(known, got.entries)) == list(map(known, chunk.entries))
    ends = [end for _, end in chunk.spans()]
    if isinstance(got.entries, Columns):
        assert got.ends == ends[-1:] and got.consumed == ends[-1]
    else:
        assert got.ends == ends
        assert got.consumed in (len(data) - dec.pending_bytes, ends[-1] if ends else -1)


def test_decode_batch_picks_columns_only_when_asked_and_whole_lines() -> None:
    whole = b"".join(encode_frame(LogEntry(source="stdout", time_nano=T0 + i, line=b"l%d" % i))
                     for i in range(3))
    partial = encode_frame(LogEntry(source="stdout", time_nano=T0, line=b"p", partial=True))
    assert isinstance(decode_batch(whole, columns=True).entries, Columns)
    assert isinstance(decode_batch(whole).entries, list)
    assert isinstance(decode_batch(whole + partial, columns=True).entries, list)
    torn = decode_batch(whole + partial[:-1], columns=True, final=True)
    assert len(torn.entries) == 3 and torn.consumed == len(whole) + len(partial) - 1
    assert torn.damage == len(partial) - 1
