"""Fuzzing the parts that read bytes from outside: the FIFO/store frame walk, the decoder and
line reassembly, over random bytes and mutations of the frames captured from dockerd.

Bounded in CI (300 examples each); for a long run: ``HYPOTHESIS_PROFILE=long bash
scripts/test.sh tests/test_fuzz.py`` (50,000 examples each).
"""

from __future__ import annotations

import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from pylog.entry import LogEntry
from pylog.frames import FrameDecoder
from pylog.reassembly import MAX_PENDING, Reassembler
from pylog.store import ContainerLog, StoreOptions
from tests.helpers_frames import decode_all

VECTORS = Path(__file__).parent / "vectors"
CAPTURED = b"".join((VECTORS / f"{n}.fifo.bin").read_bytes()
                    for n in ("basic", "longline", "binary", "tty", "hostns"))


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """The captured stream with bytes flipped, cut out, duplicated or inserted."""
    data = bytearray(CAPTURED)
    for _ in range(draw(st.integers(0, 8))):
        op = draw(st.sampled_from(["flip", "cut", "dup", "insert"]))
        at = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif op == "cut":
            del data[at:at + draw(st.integers(1, 64))]
        elif op == "dup":
            data[at:at] = data[at:at + draw(st.integers(1, 64))]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=32))
        if not data:
            data = bytearray(b"\0")
    return bytes(data)


stream = st.one_of(st.binary(max_size=4096), mutated())


@given(stream, st.lists(st.integers(1, 4096), max_size=20))
def test_decoder_never_raises_and_accounts_for_every_byte(data: bytes, cuts: list[int]) -> None:
    dec = FrameDecoder()
    entries = []
    pos = 0
    for size in cuts + [len(data)]:
        chunk = dec.feed(data[pos:pos + size])
        entries += chunk.entries
        pos += size
    for chunk in dec.finish():
        entries += chunk.entries
    assert dec.pending_bytes == 0
    assert all(e.source in ("stdout", "stderr") for e in entries)
    # However the bytes arrive, the same entries come out.
    assert [e.SerializeToString() for e in entries] == \
        [e.SerializeToString() for e in decode_all(data)]


@given(stream, st.integers(64, 4096), st.lists(st.integers(1, 2048), max_size=10))
def test_store_walk_never_raises_and_readers_agree(tmp_path_factory: object, data: bytes,
                                                   max_size: int, cuts: list[int]) -> None:
    directory = Path(str(tmp_path_factory.mktemp("fuzz")))  # type: ignore[attr-defined]
    with ThreadPoolExecutor(1) as pool:
        clog = ContainerLog(directory / "c", StoreOptions(max_size=max_size, max_file=50,
                                                          compress=False), pool)
        pos = 0
        for size in cuts + [len(data)]:
            clog.append(data[pos:pos + size])
            pos += size
            assert clog.frame_end <= clog._size
        clog.close()
        pool.submit(lambda: None).result()  # rotations done
    stored = sorted(directory.joinpath("c").glob("container.log*"))
    total = sum(p.stat().st_size for p in stored)
    assert total == len(data)  # every byte kept (garbage too: readers skip it)


@given(st.lists(st.tuples(st.sampled_from(["stdout", "stderr"]), st.booleans(),
                          st.integers(0, 200), st.integers(0, 5), st.booleans(),
                          st.binary(max_size=64)), max_size=300))
def test_reassembly_never_raises_and_stays_bounded(items: list[tuple]) -> None:
    tracemalloc.start()
    r = Reassembler(max_line=256)
    out = 0
    for source, partial, ident, ordinal, last, line in items:
        e = LogEntry(source=source, time_nano=1, line=line, partial=partial)
        if partial:
            e.partial_log_metadata.id = str(ident)
            e.partial_log_metadata.ordinal = ordinal
            e.partial_log_metadata.last = last
        if r.push(e) is not None:
            out += 1
        assert r.pending <= MAX_PENDING
    out += len(r.flush())
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert r.pending == 0
    assert peak < 8 << 20
