"""Reassembler: whole lines from dockerd's 16 KiB chunks."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pylog.entry import LogEntry, PartialLogEntryMetadata
from pylog.frames import FrameDecoder
from pylog.reassembly import Line, Reassembler

VECTORS = Path(__file__).parent / "vectors"


def vector_entries(name: str) -> list[LogEntry]:
    return FrameDecoder().feed((VECTORS / f"{name}.fifo.bin").read_bytes()).entries


def L(source: str, time_nano: int, line: bytes, partial: bool = False) -> Line:
    """A line as the Reassembler hands it out: a LogEntry without partial_log_metadata."""
    return LogEntry(source=source, time_nano=time_nano, line=line, partial=partial)


def chunk(line: bytes, pid: str, ordinal: int, last: bool = False, t: int = 100,
          source: str = "stdout") -> LogEntry:
    meta = PartialLogEntryMetadata(id=pid, ordinal=ordinal, last=last)
    return LogEntry(source=source, time_nano=t, line=line, partial=True,
                    partial_log_metadata=meta)


def whole(line: bytes, t: int = 100, source: str = "stdout") -> LogEntry:
    return LogEntry(source=source, time_nano=t, line=line)


def push_all(r: Reassembler, entries) -> list[Line]:
    return [line for e in entries if (line := r.push(e)) is not None]


def test_line_is_log_entry():
    assert Line is LogEntry


def test_longline_reassembles_to_one_line():
    entries = vector_entries("longline")
    r = Reassembler()
    results = [r.push(e) for e in entries]
    assert results[0] is None and results[1] is None  # nothing until the last chunk
    line, after = results[2], results[3]
    assert line == L("stdout", entries[0].time_nano, b"a" * 40000, partial=False)
    assert not line.HasField("partial_log_metadata")
    assert after == L("stdout", entries[3].time_nano, b"after", partial=False)
    assert after is entries[3]  # a whole entry is passed on as it is
    assert r.pending == 0
    assert r.flush() == []
    assert r.stats.lines == 2
    assert r.stats.split_lines == 1
    assert r.stats.out_of_order == 0
    assert r.stats.cut_lines == 0


def test_basic_final_partial_chunk_comes_out_of_flush_incomplete():
    entries = vector_entries("basic")
    r = Reassembler()
    lines = push_all(r, entries)
    assert [(ln.source, ln.line, ln.partial) for ln in lines] == [
        ("stderr", b"hello stderr", False),
        ("stdout", b"hello stdout", False),
    ]
    assert lines[0] is entries[0] and lines[1] is entries[1]
    assert r.pending == 1
    flushed = r.flush()
    assert flushed == [L("stdout", entries[2].time_nano, b"no newline at end", partial=True)]
    assert not flushed[0].HasField("partial_log_metadata")
    assert r.pending == 0
    assert r.flush() == []  # flushed once only
    assert r.stats.lines == 3


@pytest.mark.parametrize("name", ["binary", "tty", "hostns"])
def test_unsplit_vectors_pass_through_unchanged(name):
    entries = vector_entries(name)
    r = Reassembler()
    lines = push_all(r, entries)
    assert [(ln.source, ln.time_nano, ln.line, ln.partial) for ln in lines] == [
        (e.source, e.time_nano, e.line, False) for e in entries
    ]
    assert len(lines) == len(entries)
    assert all(ln is e for ln, e in zip(lines, entries))  # passed on, not copied
    assert r.flush() == []


def test_interleaved_stdout_and_stderr_partials():
    r = Reassembler()
    out = push_all(r, [
        chunk(b"out-1 ", "idout", 1, t=10, source="stdout"),
        chunk(b"err-1 ", "iderr", 1, t=11, source="stderr"),
        whole(b"a whole stderr line", t=12, source="stderr"),
        chunk(b"out-2 ", "idout", 2, t=10, source="stdout"),
        chunk(b"err-2", "iderr", 2, last=True, t=11, source="stderr"),
        chunk(b"out-3", "idout", 3, last=True, t=10, source="stdout"),
    ])
    assert out == [
        L("stderr", 12, b"a whole stderr line"),
        L("stderr", 11, b"err-1 err-2"),
        L("stdout", 10, b"out-1 out-2 out-3"),
    ]
    assert r.pending == 0
    assert r.stats.out_of_order == 0
    assert r.stats.split_lines == 2


def test_two_lines_in_flight_on_the_same_stream_with_different_ids_stay_apart():
    r = Reassembler()
    out = push_all(r, [
        chunk(b"A1", "a", 1, t=1),
        chunk(b"B1", "b", 1, t=2),
        chunk(b"A2", "a", 2, last=True, t=1),
        chunk(b"B2", "b", 2, last=True, t=2),
    ])
    assert [ln.line for ln in out] == [b"A1A2", b"B1B2"]


def test_flush_returns_every_unfinished_line_oldest_first():
    r = Reassembler()
    assert push_all(r, [
        chunk(b"newer", "n", 1, t=20, source="stdout"),
        chunk(b"older", "o", 1, t=10, source="stderr"),
        chunk(b" more", "n", 2, t=20, source="stdout"),
    ]) == []
    assert r.pending == 2
    assert r.flush() == [
        L("stderr", 10, b"older", partial=True),
        L("stdout", 20, b"newer more", partial=True),
    ]


def test_partials_without_metadata_id_are_joined_per_source():
    """Engines that set ``partial`` without an id: the source keys the line."""
    r = Reassembler()
    out = push_all(r, [
        LogEntry(source="stdout", time_nano=1, line=b"o1", partial=True),
        LogEntry(source="stderr", time_nano=2, line=b"e1", partial=True),
        LogEntry(source="stdout", time_nano=3, line=b"o2", partial=True,
                 partial_log_metadata=PartialLogEntryMetadata(last=True)),
    ])
    assert out == [L("stdout", 1, b"o1o2")]
    assert r.flush() == [L("stderr", 2, b"e1", partial=True)]


def test_max_line_cuts_a_long_line_into_pieces_that_add_up():
    entries = vector_entries("longline")
    r = Reassembler(max_line=32768)
    results = [r.push(e) for e in entries]
    assert results[0] is None
    piece1, piece2, after = results[1], results[2], results[3]
    assert piece1 == L("stdout", entries[0].time_nano, b"a" * 32768, partial=True)
    assert piece2.line == b"a" * 7232
    assert piece2.partial is False  # the last piece ends the line
    assert piece2.time_nano == entries[0].time_nano
    assert piece1.line + piece2.line == b"a" * 40000
    assert after.line == b"after"
    assert r.stats.cut_lines == 1
    assert r.pending == 0


def test_max_line_bounds_what_is_held_for_an_endless_line():
    r = Reassembler(max_line=50_000)
    held_max = 0
    emitted = []
    for i in range(1, 200):
        line = r.push(chunk(bytes([65 + i % 26]) * 16384, "endless", i))
        if line is not None:
            assert line.partial is True
            assert not line.HasField("partial_log_metadata")
            emitted.append(line.line)
        held_max = max(held_max, 16384 * i - sum(map(len, emitted)))
    assert held_max < 50_000 + 16384
    rest = r.flush()
    assert len(rest) == 1 and rest[0].partial is True
    got = b"".join(emitted) + rest[0].line
    assert got == b"".join(bytes([65 + i % 26]) * 16384 for i in range(1, 200))
    assert r.stats.cut_lines == len(emitted)


def test_out_of_order_chunks_are_counted():
    r = Reassembler()
    out = push_all(r, [
        chunk(b"1", "x", 1),
        chunk(b"3", "x", 3),  # 2 is missing
        chunk(b"4", "x", 4, last=True),
    ])
    assert out == [L("stdout", 100, b"134")]
    assert r.stats.out_of_order == 1


def test_line_starting_at_a_later_ordinal_is_counted_out_of_order():
    r = Reassembler()
    out = push_all(r, [chunk(b"2", "y", 2), chunk(b"3", "y", 3, last=True)])
    assert [ln.line for ln in out] == [b"23"]
    assert r.stats.out_of_order == 1


def test_in_order_chunks_are_not_counted():
    r = Reassembler()
    push_all(r, [chunk(b"%d" % i, "z", i, last=i == 5) for i in range(1, 6)])
    assert r.stats.out_of_order == 0


# ------------------------------------------------------------------ dockerd's splitting, undone

CHUNK = 16384


def dockerd_entries(source: str, lines: list[bytes], t0: int, ends_with_newline: bool):
    """What dockerd's copier sends for ``lines`` of one stream: long lines in 16 KiB chunks."""
    out = []
    for n, line in enumerate(lines):
        t = t0 + n
        last_line = n == len(lines) - 1
        whole_line = ends_with_newline or not last_line
        if whole_line and len(line) <= CHUNK:
            out.append(whole(line, t=t, source=source))
            continue
        pieces = [line[i:i + CHUNK] for i in range(0, len(line), CHUNK)] or [b""]
        pid = f"{source}-{n}"
        for k, piece in enumerate(pieces, 1):
            out.append(chunk(piece, pid, k, last=whole_line and k == len(pieces), t=t,
                             source=source))
    return out


_lines = st.lists(st.one_of(st.binary(max_size=40),
                            st.builds(lambda c, n: c * n, st.sampled_from([b"a", b"\xff"]),
                                      st.integers(0, 3 * CHUNK + 5))),
                  max_size=6)


@settings(max_examples=150, deadline=None)
@given(out_lines=_lines, err_lines=_lines, out_nl=st.booleans(), err_nl=st.booleans(),
       order=st.lists(st.booleans(), max_size=60))
def test_interleaved_streams_reassemble_to_the_original_lines(out_lines, err_lines, out_nl,
                                                              err_nl, order):
    out_entries = dockerd_entries("stdout", out_lines, 1000, out_nl)
    err_entries = dockerd_entries("stderr", err_lines, 2000, err_nl)
    merged = []
    picks = iter(order)
    while out_entries or err_entries:
        take_out = next(picks, True) if out_entries and err_entries else bool(out_entries)
        merged.append((out_entries if take_out else err_entries).pop(0))
    r = Reassembler()
    lines = push_all(r, merged) + r.flush()
    for source, expected, nl in (("stdout", out_lines, out_nl), ("stderr", err_lines, err_nl)):
        got = [ln for ln in lines if ln.source == source]
        assert [ln.line for ln in got] == expected
        assert [not ln.partial for ln in got] == [nl or i < len(expected) - 1
                                                  for i in range(len(expected))]
    assert not any(ln.HasField("partial_log_metadata") for ln in lines)
    assert r.stats.out_of_order == 0
    assert r.pending == 0
