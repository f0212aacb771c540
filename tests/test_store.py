"""The local store: Docker `local`-driver files, rotation, pruning and compression."""

from __future__ import annotations

import gzip
import os
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pylog.entry import LogEntry
from pylog.frames import FrameDecoder, encode_frame
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
STORED_LEN = FRAME_LEN + 4  # [len][body][len]


def vector_frames(name: str) -> list[bytes]:
    return [raw for raw, _ in FrameDecoder().feed((VECTORS / f"{name}.fifo.bin").read_bytes())]


def parse_local(data: bytes) -> list[LogEntry]:
    """A strict reader of Docker's local format: [len][LogEntry][len], nothing else."""
    out, pos = [], 0
    while pos < len(data):
        (n,) = struct.unpack_from(">I", data, pos)
        body = data[pos + 4:pos + 4 + n]
        assert len(body) == n
        assert struct.unpack_from(">I", data, pos + 4 + n) == (n,)
        entry = LogEntry()
        entry.ParseFromString(body)
        out.append(entry)
        pos += 8 + n
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


def test_entries_are_kept_in_docker_local_format(store, tmp_path):
    frames = vector_frames("basic")
    clog = store.open(CID, StoreOptions())
    clog.append(frames)
    path = tmp_path / "containers" / CID / "container.log"
    assert path.read_bytes() == b"".join(raw + raw[:4] for raw in frames)
    assert [e.line for e in parse_local(path.read_bytes())] == [
        b"hello stderr", b"hello stdout", b"no newline at end"]
    assert clog.stats.entries == 3
    assert clog.stats.bytes == path.stat().st_size
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)


def test_appends_accumulate(store, tmp_path):
    clog = store.open(CID, StoreOptions())
    clog.append([frame(1)])
    clog.append([])
    clog.append([frame(2), frame(3)])
    assert numbers(stored_entries(tmp_path / "containers" / CID)) == [1, 2, 3]


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
        clog.append([frame(i)])
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
    clog.append([frame(i) for i in range(20)])
    drain(executor)
    d = tmp_path / "containers" / CID
    assert files(d) == ["container.log", "container.log.4", "container.log.5", "container.log.6"]
    assert [numbers(parse_local((d / n).read_bytes())) for n in files(d)] == [
        [18, 19], [9, 10, 11], [12, 13, 14], [15, 16, 17]]


def test_rotated_files_get_growing_seq_numbers_and_are_compressed(store, executor, tmp_path):
    clog = open_log(store, 2 * STORED_LEN, 3, compress=True)
    d = tmp_path / "containers" / CID
    clog.append([frame(i) for i in range(3)])
    drain(executor)
    assert files(d) == ["container.log", "container.log.1.gz"]
    clog.append([frame(i) for i in range(3, 5)])
    drain(executor)
    assert files(d) == ["container.log", "container.log.1.gz", "container.log.2.gz"]
    clog.append([frame(i) for i in range(5, 7)])
    drain(executor)
    assert files(d) == ["container.log", "container.log.2.gz", "container.log.3.gz"]
    assert numbers(parse_local(gzip.decompress((d / "container.log.2.gz").read_bytes()))) == [2, 3]
    assert oct((d / "container.log.2.gz").stat().st_mode & 0o777) == oct(0o600)
    assert numbers(stored_entries(d)) == [2, 3, 4, 5, 6]


def test_compress_false_keeps_plain_rotated_files(store, executor, tmp_path):
    clog = open_log(store, 2 * STORED_LEN, 3, compress=False)
    clog.append([frame(i) for i in range(6)])
    drain(executor)
    d = tmp_path / "containers" / CID
    assert files(d) == ["container.log", "container.log.1", "container.log.2"]
    assert numbers(parse_local((d / "container.log.1").read_bytes())) == [0, 1]


def test_max_file_1_keeps_only_the_current_file(store, executor, tmp_path):
    clog = open_log(store, 2 * STORED_LEN, 1, compress=True)
    clog.append([frame(i) for i in range(7)])
    drain(executor)
    d = tmp_path / "containers" / CID
    assert files(d) == ["container.log"]
    assert numbers(stored_entries(d)) == [6]


def test_entry_bigger_than_max_size_is_kept_in_a_file_of_its_own(store, executor, tmp_path):
    clog = open_log(store, 100, 5, compress=False)
    big = frame(1, size=500)
    clog.append([frame(0), big, frame(2)])
    drain(executor)
    d = tmp_path / "containers" / CID
    assert files(d) == ["container.log", "container.log.1", "container.log.2"]
    assert (d / "container.log.2").read_bytes() == big + big[:4]
    assert numbers(stored_entries(d)) == [0, 1, 2]
    assert clog.stats.entries == 3 and clog.stats.dropped == 0


def test_longline_chunks_are_stored_as_dockerd_sent_them(store, tmp_path):
    frames = vector_frames("longline")
    clog = store.open(CID, StoreOptions(max_size=20_000, max_file=10, compress=False))
    clog.append(frames)
    entries = stored_entries(tmp_path / "containers" / CID)
    assert [len(e.line) for e in entries] == [16384, 16384, 7232, 5]
    assert [e.partial_log_metadata.ordinal for e in entries] == [1, 2, 3, 0]


# ------------------------------------------------------------------ reopening (plugin restart)


def test_reopening_continues_the_files_and_the_seq_numbers(tmp_path, executor):
    s1 = Store(tmp_path, executor)
    open_log(s1, 2 * STORED_LEN, 10, compress=False).append([frame(i) for i in range(5)])
    s1.close()
    s2 = Store(tmp_path, executor)  # a restarted plugin
    clog = open_log(s2, 2 * STORED_LEN, 10, compress=False)
    clog.append([frame(i) for i in range(5, 8)])
    s2.close()
    executor.shutdown(wait=True)
    d = tmp_path / "containers" / CID
    assert files(d) == ["container.log", "container.log.1", "container.log.2", "container.log.3"]
    assert numbers(stored_entries(d)) == list(range(8))


# ------------------------------------------------------------------ Store bookkeeping


def test_open_returns_one_shared_log_per_container(store):
    a = store.open(CID, StoreOptions())
    b = store.open(CID, StoreOptions(max_size=1234))
    assert a is b
    assert a.options.max_size == 1234
    assert store.open(CID2, StoreOptions()) is not a


def test_get_finds_a_stopped_containers_logs_after_restart(tmp_path, executor):
    s1 = Store(tmp_path, executor)
    s1.open(CID, StoreOptions()).append([frame(1)])
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
    clog.append([frame(i) for i in range(7)])
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
    import errno

    import pylog.store

    clog = store.open(CID, StoreOptions())
    clog.append([frame(0), frame(1)])
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
    clog.append([frame(2), frame(3), frame(4)])  # must not raise
    monkeypatch.setattr(pylog.store.os, "write", real_write)
    assert len(calls) == 2
    assert path.read_bytes() == before  # the torn half was cut off
    assert clog.stats.dropped == 3
    assert "No space" in clog.stats.last_error
    assert clog.stats.entries == 2
    clog.append([frame(5)])  # the disk has room again
    assert numbers(parse_local(path.read_bytes())) == [0, 1, 5]
    assert clog.stats.last_error == ""
