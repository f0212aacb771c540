"""LogReader: a container's stored frames read from a position, a batch at a time."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pylog.entry import LogEntry
from pylog.frames import encode_frame
from pylog.reader import LogReader, Position
from pylog.store import ContainerLog, StoreOptions

CID = "d" * 64
T0 = 1_795_319_769_000_000_000


def frame(i: int, size: int = 20) -> bytes:
    return encode_frame(LogEntry(source="stdout", time_nano=T0 + i,
                                 line=(b"%06d " % i).ljust(size, b"x")))


async def drain(reader: LogReader, max_bytes: int) -> tuple[list[int], list[tuple[int, int]]]:
    """Every entry's number, and the position after each batch."""
    got: list[int] = []
    after: list[tuple[int, int]] = []
    while not (batch := await reader.read(max_bytes)).at_end:
        got += [e.time_nano - T0 for e in batch.entries]
        after.append((batch.seq, batch.ends[-1]))
    return got, after


async def test_a_frame_longer_than_one_read_is_read_whole(tmp_path: Path) -> None:
    with ThreadPoolExecutor(1) as ex:
        clog = ContainerLog(tmp_path / CID, StoreOptions(), ex)
        data = frame(0) + frame(1, size=300_000) + frame(2)
        clog.append(data)
        reader = LogReader(clog, None)
        got, after = await drain(reader, 1 << 16)
        assert got == [0, 1, 2] and after[-1] == (1, len(data))
        reader.close()
        clog.close()


async def test_damage_longer_than_a_read_is_skipped(tmp_path: Path) -> None:
    with ThreadPoolExecutor(1) as ex:
        clog = ContainerLog(tmp_path / CID, StoreOptions(), ex)
        clog.append(frame(0) + b"\xee" * 5000 + frame(1))
        reader = LogReader(clog, None)
        first = await reader.read(1000)
        assert [e.time_nano - T0 for e in first.entries] == [0]
        second = await reader.read(1000)
        assert [e.time_nano - T0 for e in second.entries] == [1]
        assert first.damage + second.damage == 5000  # each byte of it skipped once
        assert (await reader.read(1000)).at_end
        reader.close()
        clog.close()


async def test_a_torn_frame_in_a_rotated_file_does_not_hide_what_follows(tmp_path: Path) -> None:
    """The end of a finished file is final: a torn frame is skipped and the frames behind it
    are read; then the next file."""
    with ThreadPoolExecutor(1) as ex:
        d = tmp_path / CID
        d.mkdir()
        (d / "container.log.1").write_bytes(frame(0) + frame(1, size=5000)[:100] + frame(2))
        clog = ContainerLog(d, StoreOptions(), ex)
        clog.append(frame(3))
        reader = LogReader(clog, None)
        got, _ = await drain(reader, 1 << 16)
        assert got == [0, 2, 3]
        reader.close()
        clog.close()


async def test_a_reader_goes_on_across_rotations_and_holds_at_the_end(tmp_path: Path) -> None:
    per = len(frame(0))
    with ThreadPoolExecutor(1) as ex:
        clog = ContainerLog(tmp_path / CID, StoreOptions(max_size=3 * per, max_file=10,
                                                         compress=True), ex)
        clog.append(frame(0) + frame(1))
        reader = LogReader(clog, Position(1, per))  # from the second frame
        got, _ = await drain(reader, 1 << 16)
        assert got == [1]
        clog.append(b"".join(frame(i) for i in range(2, 11)))  # three rotations
        ex.submit(lambda: None).result()  # compressed
        got, after = await drain(reader, 2 * per)
        assert got == list(range(2, 11)) and after[-1] == (clog.next_seq, 2 * per)
        assert reader.dropped_bytes == 0
        reader.close()
        clog.close()


async def test_a_snapshot_reader_reads_what_the_snapshot_holds(tmp_path: Path) -> None:
    per = len(frame(0))
    with ThreadPoolExecutor(1) as ex:
        clog = ContainerLog(tmp_path / CID, StoreOptions(max_size=3 * per, max_file=2,
                                                         compress=False), ex)
        clog.append(b"".join(frame(i) for i in range(5)))
        reader = LogReader(clog, None, snapshot=clog.snapshot())
        clog.append(b"".join(frame(i) for i in range(5, 20)))  # rotated and pruned meanwhile
        ex.submit(lambda: None).result()
        got, _ = await drain(reader, 1 << 16)
        assert got == [0, 1, 2, 3, 4]
        reader.close()
        clog.close()
