"""The local store: files in the FIFO's own format, rotation, pruning and compression."""

from __future__ import annotations

import errno
import gzip
import os
import struct
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pylog.store
from pylog.entry import LogEntry
from pylog.frames import FrameDecoder, decode_all, encode_frame
from pylog.store import ContainerLog, Store, StoreOptions

VECTORS = Path(__file__).parent / "vectors"
CID = "cea5473d46e89ae41d5b1672731285f919468b5b251442d7092dd21e35e109d1"
CID2 = "4703175c3f811301b7281e667d4d591e58972299abdf25152296668e21d2e92c"
T0 = 1_795_319_769_000_000_000


def frame(i: int, size: int = 20, source: str = "stdout") -> bytes:
    """Entry ``i``: a line of exactly ``size`` bytes starting with its number."""
    line = (b"%06d " % i).ljust(size, b"x")[:size]
    return encode_frame(LogEntry(source=source, time_nano=T0 + i, line=line))


FRAME_LEN = len(frame(0))  # every frame(i) with the default size has this length
STORED_LEN = FRAME_LEN  # the store keeps [len][body] as it came, nothing added


def vector_frames(name: str) -> list[bytes]:
    return FrameDecoder().feed((VECTORS / f"{name}.fifo.bin").read_bytes()).frames()


def append(clog: ContainerLog, frames: list[bytes]) -> None:
    """Append whole frames the way the driver does: one buffer, one run over all of it."""
    data = b"".join(frames)
    clog.append(data, [(0, len(data))] if data else [])


def frame_lengths(data: bytes) -> list[int]:
    """The length of each frame of a stored file; asserts the file is whole frames only."""
    out, pos = [], 0
    while pos < len(data):
        assert len(data) - pos >= 4, "a torn length prefix at the end"
        (n,) = struct.unpack_from(">I", data, pos)
        assert pos + 4 + n <= len(data), "a torn frame at the end"
        out.append(4 + n)
        pos += 4 + n
    return out


def parse_local(data: bytes) -> list[LogEntry]:
    """A strict reader of the store's format: [len][LogEntry] repeated, nothing else."""
    out, pos = [], 0
    while pos < len(data):
        (n,) = struct.unpack_from(">I", data, pos)
        body = data[pos + 4:pos + 4 + n]
        assert len(body) == n
        entry = LogEntry()
        entry.ParseFromString(body)
        assert entry.source in ("stdout", "stderr")
        out.append(entry)
        pos += 4 + n
    return out


def files(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


def stored_entries(directory: Path) -> list[LogEntry]:
    """Every entry on disk, oldest file first (rotated by seq, then the current file)."""
    rotated = []
    for name in os.listdir(directory):
        parts = name.split(".")
        if name.startswith("container.log.") and parts[2].isdigit():
            rotated.append((int(parts[2]), name))
    out = []
    for _seq, name in sorted(rotated):
        data = (directory / name).read_bytes()
        out += parse_local(gzip.decompress(data) if name.endswith(".gz") else data)
    out += parse_local((directory / "container.log").read_bytes())
    return out


def numbers(entries: list[LogEntry]) -> list[int]:
    return [e.time_nano - T0 for e in entries]


def drain(executor: ThreadPoolExecutor) -> None:
    """Wait until every job submitted so far (compression, pruning) has run."""
    executor.submit(lambda: None).result(timeout=30)


@pytest.fixture
def executor():
    ex = ThreadPoolExecutor(max_workers=1, thread_name_prefix="test-compress")
    yield ex
    ex.shutdown(wait=True)


@pytest.fixture
def store(tmp_path, executor):
    s = Store(tmp_path, executor)
    yield s
    s.close()


def open_log(store: Store, max_size: int, max_file: int, compress: bool = True,
             cid: str = CID) -> ContainerLog:
    return store.open(cid, StoreOptions(max_size=max_size, max_file=max_file, compress=compress))


# ------------------------------------------------------------------ format


def test_entries_are_kept_exactly_as_dockerd_sent_them(store, tmp_path):
    data = (VECTORS / "basic.fifo.bin").read_bytes()
    chunk = FrameDecoder().feed(data)
    clog = store.open(CID, StoreOptions())
    clog.append(chunk.data, chunk.runs)
    path = tmp_path / "containers" / CID / "container.log"
    assert path.read_bytes() == data  # the FIFO's bytes, byte for byte
    assert [e.line for e in parse_local(path.read_bytes())] == [
        b"hello stderr", b"hello stdout", b"no newline at end"]
    assert frame_lengths(path.read_bytes()) == [len(f) for f in chunk.frames()]
    assert clog.stats.bytes == path.stat().st_size == len(data)
    assert clog.stats.rotations == 0 and clog.stats.dropped_bytes == 0
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)


def test_only_the_runs_of_a_chunk_are_written(store, tmp_path):
    """Garbage the decoder skipped between frames never reaches the file."""
    good = [frame(i) for i in range(5)]
    data = (b"junk" + good[0] + good[1] + b"\x00\x00\x00\x03abc" + good[2]
            + b"\xff" * 20 + good[3] + good[4])
    dec = FrameDecoder()
    chunk = dec.feed(data)
    assert len(chunk.runs) == 3  # the test's premise: three runs with gaps between them
    clog = store.open(CID, StoreOptions())
    clog.append(chunk.data, chunk.runs)
    path = tmp_path / "containers" / CID / "container.log"
    assert path.read_bytes() == b"".join(good)
    assert clog.stats.bytes == len(b"".join(good))


def test_runs_select_bytes_of_data(store, tmp_path):
    data = frame(0) + frame(1) + frame(2) + frame(3)
    clog = store.open(CID, StoreOptions())
    clog.append(data, [(FRAME_LEN, 2 * FRAME_LEN), (3 * FRAME_LEN, 4 * FRAME_LEN)])
    assert numbers(stored_entries(tmp_path / "containers" / CID)) == [1, 3]


def test_appends_accumulate(store, tmp_path):
    clog = store.open(CID, StoreOptions())
    append(clog, [frame(1)])
    clog.append(b"", [])
    append(clog, [frame(2), frame(3)])
    assert numbers(stored_entries(tmp_path / "containers" / CID)) == [1, 2, 3]


def test_appending_chunks_of_a_cut_stream_stores_the_stream(store, tmp_path):
    """The FIFO is read in arbitrary pieces; the file still gets every frame once, in order."""
    data = b"".join(frame(i, size=10 + i) for i in range(30))
    clog = store.open(CID, StoreOptions())
    dec = FrameDecoder()
    for i in range(0, len(data), 17):
        chunk = dec.feed(data[i:i + 17])
        clog.append(chunk.data, chunk.runs)
    assert (tmp_path / "containers" / CID / "container.log").read_bytes() == data


@pytest.mark.parametrize("bad", ["", "abc", CID.upper(), CID[:63], CID + "0", "../" + CID[3:]])
def test_container_id_must_be_64_hex(store, bad):
    with pytest.raises(ValueError):
        store.open(bad, StoreOptions())
    with pytest.raises(ValueError):
        store.get(bad)


# ------------------------------------------------------------------ rotation


@pytest.mark.parametrize("per_file", [1, 2, 3, 7])
@pytest.mark.parametrize("max_file", [1, 2, 3, 5])
@pytest.mark.parametrize("compress", [True, False])
def test_rotation_obeys_max_size_and_max_file(store, executor, tmp_path, per_file, max_file,
                                              compress):
    max_size = per_file * STORED_LEN
    clog = open_log(store, max_size, max_file, compress)
    total = 40
    for i in range(total):  # one entry at a time, like a slow container
        append(clog, [frame(i)])
    drain(executor)
    d = tmp_path / "containers" / CID
    names = files(d)
    assert len(names) <= max_file
    assert "container.log" in names
    for name in names:
        if not name.endswith(".gz"):
            assert (d / name).stat().st_size <= max_size
    rotated = [n for n in names if n != "container.log"]
    if compress:
        assert all(n.endswith(".gz") for n in rotated)
    else:
        assert not any(n.endswith(".gz") for n in rotated)
        assert all(len((d / n).read_bytes()) == max_size for n in rotated)
    # What is left is the newest entries, complete, in order, without duplicates.
    kept = numbers(stored_entries(d))
    assert kept == list(range(total - len(kept), total))
    rotations = (total - 1) // per_file
    in_current = total - rotations * per_file
    assert len(kept) == in_current + per_file * min(max_file - 1, rotations)
    assert clog.stats.rotations == rotations


def test_rotation_in_one_big_append_gives_the_same_files(store, executor, tmp_path):
    clog = open_log(store, 3 * STORED_LEN, 4, compress=False)
    append(clog, [frame(i) for i in range(20)])
    drain(executor)
    d = tmp_path / "containers" / CID
    assert files(d) == ["container.log", "container.log.4", "container.log.5", "container.log.6"]
    assert [numbers(parse_local((d / n).read_bytes())) for n in files(d)] == [
        [18, 19], [9, 10, 11], [12, 13, 14], [15, 16, 17]]


def test_rotated_files_get_growing_seq_numbers_and_are_compressed(store, executor, tmp_path):
    clog = open_log(store, 2 * STORED_LEN, 3, compress=True)
    d = tmp_path / "containers" / CID
    append(clog, [frame(i) for i in range(3)])
    drain(executor)
    assert files(d) == ["container.log", "container.log.1.gz"]
    append(clog, [frame(i) for i in range(3, 5)])
    drain(executor)
    assert files(d) == ["container.log", "container.log.1.gz", "container.log.2.gz"]
    append(clog, [frame(i) for i in range(5, 7)])
    drain(executor)
    assert files(d) == ["container.log", "container.log.2.gz", "container.log.3.gz"]
    assert numbers(parse_local(gzip.decompress((d / "container.log.2.gz").read_bytes()))) == [2, 3]
    assert oct((d / "container.log.2.gz").stat().st_mode & 0o777) == oct(0o600)
    assert numbers(stored_entries(d)) == [2, 3, 4, 5, 6]


def test_compress_false_keeps_plain_rotated_files(store, executor, tmp_path):
    clog = open_log(store, 2 * STORED_LEN, 3, compress=False)
    append(clog, [frame(i) for i in range(6)])
    drain(executor)
    d = tmp_path / "containers" / CID
    assert files(d) == ["container.log", "container.log.1", "container.log.2"]
    assert numbers(parse_local((d / "container.log.1").read_bytes())) == [0, 1]


def test_max_file_1_keeps_only_the_current_file(store, executor, tmp_path):
    clog = open_log(store, 2 * STORED_LEN, 1, compress=True)
    append(clog, [frame(i) for i in range(7)])
    drain(executor)
    d = tmp_path / "containers" / CID
    assert files(d) == ["container.log"]
    assert numbers(stored_entries(d)) == [6]


def test_entry_bigger_than_max_size_is_kept_in_a_file_of_its_own(store, executor, tmp_path):
    clog = open_log(store, 100, 5, compress=False)
    big = frame(1, size=500)
    append(clog, [frame(0), big, frame(2)])
    drain(executor)
    d = tmp_path / "containers" / CID
    assert files(d) == ["container.log", "container.log.1", "container.log.2"]
    assert (d / "container.log.1").read_bytes() == frame(0)
    assert (d / "container.log.2").read_bytes() == big
    assert (d / "container.log").read_bytes() == frame(2)
    assert numbers(stored_entries(d)) == [0, 1, 2]
    assert clog.stats.bytes == 2 * FRAME_LEN + len(big) and clog.stats.dropped_bytes == 0
    assert clog.stats.rotations == 2


def test_longline_chunks_are_stored_as_dockerd_sent_them(store, tmp_path):
    frames = vector_frames("longline")
    clog = store.open(CID, StoreOptions(max_size=20_000, max_file=10, compress=False))
    append(clog, frames)
    entries = stored_entries(tmp_path / "containers" / CID)
    assert [len(e.line) for e in entries] == [16384, 16384, 7232, 5]
    assert [e.partial_log_metadata.ordinal for e in entries] == [1, 2, 3, 0]


# ------------------------------------------------------------------ rotation inside a run


def test_a_file_filled_exactly_to_max_size_rotates_only_when_the_next_frame_comes(
        store, executor, tmp_path):
    clog = open_log(store, 3 * FRAME_LEN, 10, compress=False)
    d = tmp_path / "containers" / CID
    append(clog, [frame(i) for i in range(3)])
    assert files(d) == ["container.log"]
    assert (d / "container.log").stat().st_size == 3 * FRAME_LEN
    append(clog, [frame(3)])
    drain(executor)
    assert files(d) == ["container.log", "container.log.1"]
    assert numbers(parse_local((d / "container.log.1").read_bytes())) == [0, 1, 2]
    assert numbers(parse_local((d / "container.log").read_bytes())) == [3]


@pytest.mark.parametrize("already", [0, 1, 2])
def test_a_run_is_split_exactly_at_the_rotation_boundary(store, executor, tmp_path, already):
    """One run crossing several boundaries: each file is filled to max-size exactly."""
    clog = open_log(store, 3 * FRAME_LEN, 100, compress=False)
    append(clog, [frame(i) for i in range(already)])
    append(clog, [frame(i) for i in range(already, 11)])
    drain(executor)
    d = tmp_path / "containers" / CID
    assert files(d) == ["container.log", "container.log.1", "container.log.2", "container.log.3"]
    for n in ("container.log.1", "container.log.2", "container.log.3"):
        assert (d / n).stat().st_size == 3 * FRAME_LEN
    assert [numbers(parse_local((d / n).read_bytes())) for n in files(d)] == [
        [9, 10], [0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert clog.stats.rotations == 3
    assert clog.stats.bytes == 11 * FRAME_LEN


def test_a_frame_that_would_cross_max_size_by_one_byte_goes_to_the_next_file(
        store, executor, tmp_path):
    clog = open_log(store, 3 * FRAME_LEN - 1, 100, compress=False)
    append(clog, [frame(i) for i in range(6)])
    drain(executor)
    d = tmp_path / "containers" / CID
    assert [numbers(parse_local((d / n).read_bytes())) for n in files(d)] == [
        [4, 5], [0, 1], [2, 3]]


def test_boundaries_with_frames_of_different_sizes(store, executor, tmp_path):
    sizes = [30, 50, 20, 70, 10, 40, 5, 5, 90, 1]
    frames = [frame(i, size=n) for i, n in enumerate(sizes)]
    max_size = len(frames[0]) + len(frames[1]) + len(frames[2])  # 0-2 fill the first file exactly
    clog = open_log(store, max_size, 100, compress=False)
    append(clog, frames)
    drain(executor)
    d = tmp_path / "containers" / CID
    got = {n: numbers(parse_local((d / n).read_bytes())) for n in files(d)}
    expected = pack(frames, max_size)
    assert [got[n] for n in in_seq_order(d)] == expected
    assert got["container.log.1"] == [0, 1, 2]
    for n in files(d):
        assert (d / n).stat().st_size <= max_size


def test_a_run_with_gaps_is_split_at_the_boundary_too(store, executor, tmp_path):
    """Runs of a chunk with corrupt regions between them, crossing boundaries mid-run."""
    good = [frame(i) for i in range(9)]
    data = good[0] + b"junk" + b"".join(good[1:5]) + b"\xff" * 9 + b"".join(good[5:])
    chunk = FrameDecoder().feed(data)
    assert len(chunk.runs) == 3
    clog = open_log(store, 2 * FRAME_LEN, 100, compress=False)
    clog.append(chunk.data, chunk.runs)
    drain(executor)
    d = tmp_path / "containers" / CID
    assert [numbers(parse_local((d / n).read_bytes())) for n in in_seq_order(d)] == [
        [0, 1], [2, 3], [4, 5], [6, 7], [8]]
    for n in files(d):
        assert (d / n).stat().st_size <= 2 * FRAME_LEN


def test_oversized_frames_in_the_middle_of_a_run(store, executor, tmp_path):
    sizes = [20, 200, 20, 20, 300, 250, 20]
    frames = [frame(i, size=n) for i, n in enumerate(sizes)]
    clog = open_log(store, 100, 100, compress=False)
    append(clog, frames)
    drain(executor)
    d = tmp_path / "containers" / CID
    assert [numbers(parse_local((d / n).read_bytes())) for n in in_seq_order(d)] == [
        [0], [1], [2, 3], [4], [5], [6]]
    for n in files(d):
        data = (d / n).read_bytes()
        assert len(data) <= 100 or len(frame_lengths(data)) == 1


def pack(frames: list[bytes], max_size: int, used: int = 0) -> list[list[int]]:
    """The reference: frame numbers per file, oldest first, by the rule "rotate when the file
    would grow past max-size; a frame bigger than max-size is kept alone"."""
    out: list[list[int]] = [[]]
    size = used
    for i, f in enumerate(frames):
        if size + len(f) > max_size and size > 0:
            out.append([])
            size = 0
        out[-1].append(i)
        size += len(f)
    return out


def in_seq_order(d: Path) -> list[str]:
    rotated = sorted((int(n.split(".")[2]), n) for n in os.listdir(d) if n != "container.log")
    return [n for _, n in rotated] + ["container.log"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=st.lists(st.one_of(st.just(20), st.integers(0, 120)), min_size=1, max_size=40),
       # Often a multiple of FRAME_LEN (the length of a 20-byte line's frame), so that files
       # fill up to max-size exactly, in the middle of a run.
       max_size=st.one_of(st.integers(1, 400), st.integers(1, 6).map(lambda k: k * FRAME_LEN)),
       cuts=st.lists(st.booleans(), max_size=40),
       appends=st.lists(st.booleans(), max_size=40),
       gap=st.sampled_from([b"", b"x", b"\xff" * 9, b"\x00\x00\x00\x03abc"]))
def test_append_files_match_the_rotation_rule(sizes, max_size, cuts, appends, gap):
    """Any frames, any max-size, cut into runs (with corrupt gaps) and appends anyhow: the files
    hold every frame once, in order, exactly as the rule says, and none exceeds max-size except
    one holding a single oversized frame."""
    frames = [frame(i, size=n) for i, n in enumerate(sizes)]
    # Build the appends: each is (data, runs); a new run starts where `cuts` says, a new
    # append where `appends` says.
    batches: list[tuple[bytes, list[tuple[int, int]]]] = []
    data, runs = b"", []
    for i, f in enumerate(frames):
        if i and i - 1 < len(appends) and appends[i - 1]:
            batches.append((data, runs))
            data, runs = b"", []
        if runs and not (i - 1 < len(cuts) and cuts[i - 1]):
            runs[-1] = (runs[-1][0], len(data) + len(f))
        else:
            data += gap
            runs.append((len(data), len(data) + len(f)))
        data += f
    batches.append((data, runs))
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(max_workers=1) as ex:
        s = Store(Path(tmp), ex)
        try:
            clog = open_log(s, max_size, 10_000, compress=False)
            for data, runs in batches:
                clog.append(data, runs)
            drain(ex)
            d = clog.directory
            order = in_seq_order(d)
            got = [numbers(parse_local((d / n).read_bytes())) for n in order]
            assert got == pack(frames, max_size)
            for n in order:
                stored = (d / n).read_bytes()
                assert len(stored) <= max_size or len(frame_lengths(stored)) == 1, n
            assert b"".join((d / n).read_bytes() for n in order) == b"".join(frames)
            assert clog.stats.bytes == sum(map(len, frames))
            assert clog.stats.rotations == len(order) - 1
            assert clog.stats.dropped_bytes == 0
        finally:
            s.close()


def test_failed_rotation_does_not_hang_append_or_lose_entries(store, tmp_path, monkeypatch):
    clog = open_log(store, 2 * FRAME_LEN, 10, compress=False)
    append(clog, [frame(0), frame(1)])
    real_rename = os.rename
    calls = []

    def failing_rename(src, dst):
        calls.append(dst)
        if len(calls) > 20:  # stop a retry loop with an error instead of hanging the run
            raise RuntimeError(f"rotation retried {len(calls)} times within one append")
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(pylog.store.os, "rename", failing_rename)
    append(clog, [frame(2), frame(3)])  # must return: append never raises
    monkeypatch.setattr(pylog.store.os, "rename", real_rename)
    assert "Permission denied" in clog.stats.last_error
    # Nothing is lost silently: every byte is stored or counted as dropped.
    assert clog.stats.bytes + clog.stats.dropped_bytes == 4 * FRAME_LEN
    append(clog, [frame(4)])  # renaming works again
    d = tmp_path / "containers" / CID
    kept = numbers(stored_entries(d))
    assert kept == sorted(kept) and kept[-1] == 4


# ------------------------------------------------------------------ reopening (plugin restart)


def test_reopening_continues_the_files_and_the_seq_numbers(tmp_path, executor):
    s1 = Store(tmp_path, executor)
    append(open_log(s1, 2 * STORED_LEN, 10, compress=False), [frame(i) for i in range(5)])
    s1.close()
    s2 = Store(tmp_path, executor)  # a restarted plugin
    clog = open_log(s2, 2 * STORED_LEN, 10, compress=False)
    append(clog, [frame(i) for i in range(5, 8)])
    s2.close()
    executor.shutdown(wait=True)
    d = tmp_path / "containers" / CID
    assert files(d) == ["container.log", "container.log.1", "container.log.2", "container.log.3"]
    assert numbers(stored_entries(d)) == list(range(8))


def write_current(tmp_path: Path, data: bytes) -> Path:
    """A container.log left on disk by an earlier run of the plugin."""
    d = tmp_path / "containers" / CID
    d.mkdir(parents=True, exist_ok=True)
    (d / "container.log").write_bytes(data)
    return d


_LONG = frame(99, size=5000)


@pytest.mark.parametrize("torn,cuts", [
    (frame(99), range(1, FRAME_LEN)),  # every cut: in the length prefix, source, time, line
    (_LONG, [1, 2, 3, 4, 5, 11, 12, 30, 100, 2500, len(_LONG) - 1]),
], ids=["short", "long"])
def test_reopening_cuts_a_torn_frame_off_the_end(tmp_path, executor, torn, cuts):
    whole = frame(0) + frame(1, size=300)
    for cut in cuts:
        d = write_current(tmp_path, whole + torn[:cut])
        s = Store(tmp_path, executor)  # the plugin after the crash
        try:
            clog = s.open(CID, StoreOptions())
            assert (d / "container.log").read_bytes() == whole, cut
            append(clog, [frame(2)])  # new entries follow whole frames, not garbage
            assert (d / "container.log").read_bytes() == whole + frame(2), cut
            assert numbers(parse_local((d / "container.log").read_bytes())) == [0, 1, 2]
        finally:
            s.close()


def test_reopening_a_file_that_is_only_a_torn_frame_empties_it(tmp_path, executor):
    d = write_current(tmp_path, frame(0)[:10])
    s = Store(tmp_path, executor)
    try:
        clog = s.open(CID, StoreOptions())
        assert (d / "container.log").read_bytes() == b""
        append(clog, [frame(1)])
        assert (d / "container.log").read_bytes() == frame(1)
    finally:
        s.close()


def test_the_cut_is_taken_into_account_for_max_size(tmp_path, executor):
    """After the repair the file's size is the cut size: rotation falls where it should."""
    d = write_current(tmp_path, frame(0) + frame(99)[:FRAME_LEN - 1])
    s = Store(tmp_path, executor)
    try:
        clog = open_log(s, 3 * FRAME_LEN, 10, compress=False)
        append(clog, [frame(1), frame(2), frame(3)])
        drain(executor)
        assert files(d) == ["container.log", "container.log.1"]
        assert numbers(parse_local((d / "container.log.1").read_bytes())) == [0, 1, 2]
        assert numbers(parse_local((d / "container.log").read_bytes())) == [3]
    finally:
        s.close()


@pytest.mark.parametrize("data", [
    b"",
    frame(0),
    b"".join((VECTORS / f"{n}.fifo.bin").read_bytes()
             for n in ("basic", "longline", "binary", "tty", "hostns")),
    frame(0) + frame(1, size=100_000) + frame(2),  # a length prefix over 16 bits
])
def test_reopening_leaves_a_whole_file_alone(tmp_path, executor, data):
    d = write_current(tmp_path, data)
    s = Store(tmp_path, executor)
    try:
        clog = s.open(CID, StoreOptions())
        assert (d / "container.log").read_bytes() == data
        append(clog, [frame(7)])
        assert (d / "container.log").read_bytes() == data + frame(7)
    finally:
        s.close()




@pytest.mark.parametrize("damage", [
    pytest.param(b"\x00", id="one-byte"),
    pytest.param(b"garbage bytes", id="garbage"),
    pytest.param(b"\x00\x00\x00\x09\n\x06stdout",
                 id="length-one-too-big"),
    pytest.param(frame(99)[5:], id="end-of-a-frame"),
    pytest.param(_LONG[:100], id="torn-long-frame"),
    # A zero-filled block (a crash on a delayed-allocation filesystem): the walk steps over it
    # in fours and stays aligned.
    pytest.param(b"\x00" * 8, id="zero-block"),
])
def test_reopening_keeps_the_whole_frames_after_a_damaged_region(tmp_path, executor, damage):
    data = frame(0) + frame(1) + damage + frame(2) + frame(3)
    d = write_current(tmp_path, data)
    s = Store(tmp_path, executor)
    try:
        clog = s.open(CID, StoreOptions())
        append(clog, [frame(4)])
        stored = (d / "container.log").read_bytes()
        assert stored.startswith(frame(0) + frame(1))
        assert numbers(decode_all(stored)) == [0, 1, 2, 3, 4]
    finally:
        s.close()


# ------------------------------------------------------------------ Store bookkeeping


def test_open_returns_one_shared_log_per_container(store):
    a = store.open(CID, StoreOptions())
    b = store.open(CID, StoreOptions(max_size=1234))
    assert a is b
    assert a.options.max_size == 1234
    assert store.open(CID2, StoreOptions()) is not a


def test_get_finds_a_stopped_containers_logs_after_restart(tmp_path, executor):
    s1 = Store(tmp_path, executor)
    append(s1.open(CID, StoreOptions()), [frame(1)])
    s1.close()
    s2 = Store(tmp_path, executor)
    try:
        clog = s2.get(CID)
        assert clog is not None
        assert numbers(stored_entries(clog.directory)) == [1]
        assert s2.get(CID2) is None
        assert s2.stored_ids() == [CID]
    finally:
        s2.close()


def test_release_and_in_use(store):
    clog = store.open(CID, StoreOptions())
    clog.writers = 1
    assert store.in_use(CID)
    store.release(CID)
    assert store.get(CID) is clog  # still open: a stream writes to it
    clog.writers = 0
    assert not store.in_use(CID)
    store.release(CID)
    assert store.get(CID) is not clog  # closed; get() opens the stored files afresh


def test_remove_deletes_the_containers_files(store, executor, tmp_path):
    clog = open_log(store, 2 * STORED_LEN, 3)
    append(clog, [frame(i) for i in range(7)])
    drain(executor)
    store.remove(CID)
    assert not (tmp_path / "containers" / CID).exists()
    assert store.stored_ids() == []
    assert store.get(CID) is None


def test_stored_ids_ignores_other_names(store, tmp_path):
    store.open(CID2, StoreOptions())
    store.open(CID, StoreOptions())
    (tmp_path / "containers" / "not-a-container").mkdir()
    assert store.stored_ids() == sorted([CID, CID2])


# ------------------------------------------------------------------ write errors


def test_failed_write_drops_the_batch_without_tearing_the_file(store, tmp_path, monkeypatch):
    clog = store.open(CID, StoreOptions())
    append(clog, [frame(0), frame(1)])
    path = tmp_path / "containers" / CID / "container.log"
    before = path.read_bytes()
    real_write = os.write
    calls = []

    def half_then_enospc(fd, data):
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[:len(data) // 2]))  # a short write ...
        raise OSError(errno.ENOSPC, "No space left on device")  # ... then the disk is full

    monkeypatch.setattr(pylog.store.os, "write", half_then_enospc)
    append(clog, [frame(2), frame(3), frame(4)])  # must not raise
    monkeypatch.setattr(pylog.store.os, "write", real_write)
    assert len(calls) == 2
    assert path.read_bytes() == before  # the torn half was cut off
    assert clog.stats.dropped_bytes == 3 * FRAME_LEN
    assert "No space" in clog.stats.last_error
    assert clog.stats.bytes == 2 * FRAME_LEN
    append(clog, [frame(5)])  # the disk has room again
    assert numbers(parse_local(path.read_bytes())) == [0, 1, 5]
    assert clog.stats.last_error == ""
