"""Retention is a property of the stored log: saved with it, used by every opener, and opening a
stored log never rotates, prunes or compresses anything. State that says where data is survives
a crash, and a torn state file falls back to re-reading, never to skipping."""

from __future__ import annotations

import gzip
import itertools
import json
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import pylog.durable
from pylog.cursor import Cursor
from pylog.delivery import Position
from pylog.durable import STATE, StateError, read_json, read_slots, write_json, write_slots
from pylog.entry import LogEntry
from pylog.frames import encode_frame
from pylog.store import OPTIONS, SEQ, Store, StoreOptions
from tests.helpers_frames import decode_all

CID = "cea5473d46e89ae41d5b1672731285f919468b5b251442d7092dd21e35e109d1"
T0 = 1_795_319_769_000_000_000


def frame(i: int) -> bytes:
    return encode_frame(LogEntry(source="stdout", time_nano=T0 + i, line=b"%06d xxxxxxxxxx" % i))


FRAME_LEN = len(frame(0))
WRITTEN = StoreOptions(max_size=FRAME_LEN * 50, max_file=4, compress=False)
LINES = 170  # three rotations with WRITTEN, and a current file of 20 frames


def log_files(directory: Path) -> dict[str, bytes]:
    """Every log file of a container (not the state files) and its bytes."""
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())
            if p.name.startswith("container.log")}


def numbers(directory: Path) -> list[int]:
    """The entries of every log file, oldest file first."""
    def order(name: str) -> int:
        parts = name.split(".")
        return int(parts[2]) if len(parts) > 2 else 1 << 30
    out: list[int] = []
    for name in sorted(log_files(directory), key=order):
        data = (directory / name).read_bytes()
        if name.endswith(".gz"):
            data = gzip.decompress(data)
        out += [e.time_nano - T0 for e in decode_all(data)]
    return out


@pytest.fixture
def stored(tmp_path: Path) -> Path:
    """A stopped container's log written with WRITTEN (above the defaults' max-file, with
    compress off), its store closed: the directory."""
    with ThreadPoolExecutor(1) as ex:
        store = Store(tmp_path, ex)
        clog = store.open(CID, WRITTEN)
        data = b"".join(frame(i) for i in range(LINES))
        clog.append(data)
        store.close()
    directory = tmp_path / "containers" / CID
    assert numbers(directory) == list(range(LINES))
    assert len(log_files(directory)) == 4
    return directory


OPENERS = [StoreOptions(max_size=s, max_file=f, compress=c) for s, f, c in itertools.product(
    [FRAME_LEN * 3, FRAME_LEN * 50, 20 << 20], [1, 2, 4, 9], [True, False])]


@pytest.mark.parametrize("options", OPENERS, ids=str)
def test_opening_a_stored_log_with_any_options_changes_no_file(stored: Path,
                                                              options: StoreOptions) -> None:
    """A writer's options, whatever they are, do nothing to the files until it writes; a reader
    (``get``) uses the saved ones. Neither rotates, prunes nor compresses."""
    before = log_files(stored)
    with ThreadPoolExecutor(1) as ex:
        store = Store(stored.parent.parent, ex)
        assert store.get(CID) is not None
        assert store.get(CID).options == WRITTEN  # type: ignore[union-attr]
        store.close()
        store = Store(stored.parent.parent, ex)
        clog = store.open(CID, options)
        assert clog.frame_end == FRAME_LEN * 20
        store.close()
    assert log_files(stored) == before


@pytest.mark.parametrize("options", OPENERS[::5], ids=str)
async def test_opening_in_the_event_loop_changes_no_file(stored: Path,
                                                         options: StoreOptions) -> None:
    """The same with the walk over the current file in a worker (no saved walk: a crash)."""
    (stored / "walked.json").unlink()
    before = log_files(stored)
    with ThreadPoolExecutor(1) as ex:
        store = Store(stored.parent.parent, ex)
        clog = store.get(CID)
        assert clog is not None and clog.walking
        await clog.ready()
        assert clog.frame_end == FRAME_LEN * 20 and clog.options == WRITTEN
        store.close()
        store = Store(stored.parent.parent, ex)
        clog = store.open(CID, options)
        await clog.ready()
        store.close()
    assert log_files(stored) == before


def test_the_saved_options_survive_a_restart_and_writing_uses_them(stored: Path) -> None:
    with ThreadPoolExecutor(1) as ex:
        store = Store(stored.parent.parent, ex)
        clog = store.get(CID)
        assert clog is not None and clog.options == WRITTEN
        clog.append(b"".join(frame(i) for i in range(LINES, LINES + 31)))  # one more rotation
        store.close()
    assert numbers(stored) == list(range(50, LINES + 31))  # 4 files of WRITTEN kept
    assert json.loads((stored / OPTIONS).read_text()) == WRITTEN.to_json()


def test_a_rotation_left_by_a_crash_is_finished_without_compressing_or_pruning(
        stored: Path) -> None:
    """Opening finishes the renames of a rotation a crash cut short; compressing and pruning
    wait for the container's next rotation, and follow its own options."""
    current = stored / "container.log"
    tail = frame(LINES)
    with open(current, "ab") as f:
        f.write(tail)
    (stored / "container.log.new").write_bytes(tail)
    with ThreadPoolExecutor(1) as ex:
        store = Store(stored.parent.parent, ex)
        clog = store.get(CID)
        assert clog is not None
        assert sorted(log_files(stored)) == ["container.log", "container.log.1",
                                             "container.log.2", "container.log.3",
                                             "container.log.4"]
        assert numbers(stored) == list(range(LINES + 1))
        store.close()
        with_compress = StoreOptions(max_size=WRITTEN.max_size, max_file=3, compress=True)
        store = Store(stored.parent.parent, ex)
        clog = store.open(CID, with_compress)
        clog.append(b"".join(frame(i) for i in range(LINES + 1, LINES + 52)))
        store.close()
    assert sorted(log_files(stored)) == ["container.log", "container.log.4.gz",
                                         "container.log.5.gz"]


def test_the_store_options_file_unusable_is_reported_and_changes_nothing(
        stored: Path, caplog: pytest.LogCaptureFixture) -> None:
    (stored / OPTIONS).write_text('{"max-size": 3')  # torn
    before = log_files(stored)
    with ThreadPoolExecutor(1) as ex, caplog.at_level(logging.WARNING):
        store = Store(stored.parent.parent, ex)
        assert store.get(CID) is not None
        store.close()
    assert log_files(stored) == before
    assert "saved store options are unusable" in caplog.text


@pytest.mark.parametrize("torn", ["", '{"next": ', "[]", '{"next": "x"}'])
def test_a_torn_seq_takes_a_seq_past_every_cursor(stored: Path, torn: str,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """A sink's cursor names (seq, offset); if seq.json is lost the next seq must not be one a
    cursor names with another meaning: past them all, the cursor re-reads what is kept."""
    (stored / SEQ).write_text(torn)
    Cursor(stored, "fluentd-x").save(Position(9, FRAME_LEN * 7))  # max-file=1 kept no seq 9
    STATE.flush()
    with ThreadPoolExecutor(1) as ex, caplog.at_level(logging.WARNING):
        store = Store(stored.parent.parent, ex)
        clog = store.get(CID)
        assert clog is not None and clog.next_seq == 10
        store.close()
    assert "saved log sequence is unusable" in caplog.text


def test_state_is_written_durably(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Temp file, fsync, rename, fsync of the directory: in that order."""
    calls: list[str] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        calls.append("fsync-dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "fsync-file")
        real_fsync(fd)

    def rename(a: str | Path, b: str | Path) -> None:
        calls.append("rename")
        real_rename(a, b)

    monkeypatch.setattr(pylog.durable.os, "fsync", fsync)
    monkeypatch.setattr(pylog.durable.os, "rename", rename)
    write_json(tmp_path / "state.json", {"seq": 3})
    assert calls == ["fsync-file", "rename", "fsync-dir"]
    assert read_json(tmp_path / "state.json") == {"seq": 3}
    assert not (tmp_path / "state.json.tmp").exists()


def test_a_slot_file_is_written_in_place_durably(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A new slot file: written, fsynced, its directory fsynced; later values: written in
    place and fdatasynced (no temp file, no rename)."""
    calls: list[str] = []
    real_fsync, real_fdatasync = os.fsync, os.fdatasync

    def fsync(fd: int) -> None:
        calls.append("fsync-dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "fsync-file")
        real_fsync(fd)

    def fdatasync(fd: int) -> None:
        calls.append("fdatasync")
        real_fdatasync(fd)

    monkeypatch.setattr(pylog.durable.os, "fsync", fsync)
    monkeypatch.setattr(pylog.durable.os, "fdatasync", fdatasync)
    monkeypatch.setattr(pylog.durable.os, "rename", None)  # never called
    path = tmp_path / "cursor-x.pos"
    write_slots(path, (3, 100))
    assert calls == ["fsync-file", "fsync-dir"] and read_slots(path) == (3, 100, 0)
    calls.clear()
    for offset in (200, 300, 400):
        write_slots(path, (3, offset))
        assert read_slots(path) == (3, offset, 0)
    assert calls == ["fdatasync"] * 3 and os.listdir(tmp_path) == ["cursor-x.pos"]


def test_a_torn_slot_leaves_the_value_before(tmp_path: Path) -> None:
    """A power cut in the middle of a slot's write spoils that slot only: the file then says
    the value before it. Neither slot whole: a StateError naming the file."""
    path = tmp_path / "cursor-x.pos"
    for offset in (100, 200, 300):  # counters 1, 2, 3: slots 1, 0, 1
        write_slots(path, (5, offset))
    data = bytearray(path.read_bytes())
    data[512 + 20] ^= 0xFF  # the newest (counter 3, slot 1) torn
    path.write_bytes(bytes(data))
    assert read_slots(path) == (5, 200, 0)
    write_slots(path, (5, 400))  # goes over the torn slot, not the good one
    assert read_slots(path) == (5, 400, 0)
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF
    data[512 + 10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(StateError, match="cursor-x.pos"):
        read_slots(path)
    assert read_slots(tmp_path / "absent.pos") is None


def test_a_cursor_of_an_older_version_is_read(stored: Path) -> None:
    """Cursors saved as cursor-<sink>.json by older versions: read until a new one is saved."""
    cursor = Cursor(stored, "fluentd-x")
    cursor.old_path.write_text(json.dumps({"seq": 2, "offset": 77}))
    assert cursor.load() == Position(2, 77)
    cursor.save(Position(3, 10))
    STATE.flush()
    assert cursor.load() == Position(3, 10) and cursor.path.name == "cursor-fluentd-x.pos"


@pytest.mark.parametrize("data", [b"", b"   ", b'{"seq": 3', b"\x00\x00"])
def test_read_json_names_an_empty_or_torn_file(tmp_path: Path, data: bytes) -> None:
    (tmp_path / "state.json").write_bytes(data)
    with pytest.raises(StateError, match="state.json"):
        read_json(tmp_path / "state.json")
    assert read_json(tmp_path / "absent.json") is None


@pytest.mark.parametrize("torn", ["", '{"File": "/run/docker/logging/ab', "\x00" * 8])
async def test_a_torn_attachment_record_is_reported_and_kept_aside(
        tmp_path: Path, torn: str, caplog: pytest.LogCaptureFixture) -> None:
    """An attachment record found empty or torn at start names a FIFO pylog cannot re-attach
    to: a clear error, the record kept as .bad for the operator, the other records used."""
    from pylog.driver import Driver

    records = tmp_path / "state" / "attachments"
    records.mkdir(parents=True)
    (records / "torn.json").write_text(torn)
    (records / "gone.json").write_text(json.dumps(
        {"File": str(tmp_path / "no-such-fifo"), "Info": {"ContainerID": CID}}))
    driver = Driver(tmp_path / "state", fifo_dir=str(tmp_path))
    with caplog.at_level(logging.INFO):
        await driver.start()
    await driver.close()
    assert (records / "torn.json.bad").read_text() == torn
    assert not (records / "torn.json").exists() and not (records / "gone.json").exists()
    assert "cannot re-attach" in caplog.text and "torn.json" in caplog.text


def test_the_state_writer_writes_the_newest_value_of_each_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Values handed over while a write is under way become one write of the newest; flush
    waits for all of them."""
    from pylog.durable import LatestWriter

    written: list[tuple[str, object]] = []
    first_started, release = threading.Event(), threading.Event()
    real = pylog.durable.write_json

    def slow_write(path: Path, obj: object) -> None:
        written.append((path.name, obj))
        first_started.set()
        assert release.wait(10)
        real(path, obj)

    monkeypatch.setattr(pylog.durable, "write_json", slow_write)
    writer = LatestWriter()
    writer.put(tmp_path / "a.json", 1)
    assert first_started.wait(10)
    for value in (2, 3, 4):  # while the first is being written
        writer.put(tmp_path / "a.json", value)
    writer.put(tmp_path / "b.json", "x")
    release.set()
    writer.flush()
    assert written == [("a.json", 1), ("a.json", 4), ("b.json", "x")]
    assert read_json(tmp_path / "a.json") == 4 and read_json(tmp_path / "b.json") == "x"


async def test_a_big_walk_goes_to_the_walker_process_and_gives_the_same_index(
        stored: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A walk of PROCESS_WALK bytes or more runs in a low-priority process of its own; its
    index is the one a walk here gives."""
    import pylog.frameindex

    (stored / "walked.json").unlink()
    with ThreadPoolExecutor(1) as ex:
        here = Store(stored.parent.parent, ex)
        clog = here.get(CID)
        assert clog is not None
        await clog.ready()
        expected = (clog.frame_end, clog.last_frame, list(clog.marks))
        here.close()
        (stored / "walked.json").unlink()
        monkeypatch.setattr(pylog.frameindex, "PROCESS_WALK", 1)
        store = Store(stored.parent.parent, ex)
        clog = store.get(CID)
        assert clog is not None and clog.walking
        await clog.ready()
        assert pylog.frameindex._walker is not None  # the process was used
        assert (clog.frame_end, clog.last_frame, list(clog.marks)) == expected
        store.close()
