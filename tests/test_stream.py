"""The FIFO reader: moves dockerd's bytes into the store (splice), and never stops reading."""

from __future__ import annotations

import array
import asyncio
import errno
import fcntl
import os
import termios
from concurrent.futures import ThreadPoolExecutor

import pytest

import pylog.store
from pylog.entry import LogEntry
from pylog.frames import encode_frame
from pylog.store import ContainerLog, Store, StoreOptions
from pylog.stream import FifoStream
from tests.helpers_frames import decode_all

CID = "cea5473d46e89ae41d5b1672731285f919468b5b251442d7092dd21e35e109d1"
T0 = 1_795_319_769_000_000_000
TIMEOUT = 20  # seconds; only so that a broken stream fails instead of hanging the run


def frame(i: int, size: int = 20) -> bytes:
    line = (b"%06d " % i).ljust(size, b"x")[:size]
    return encode_frame(LogEntry(source="stdout", time_nano=T0 + i, line=line))


@pytest.fixture
def clog(tmp_path):
    with ThreadPoolExecutor(max_workers=1) as ex:
        store = Store(tmp_path / "state", ex)
        yield store.open(CID, StoreOptions(max_size=10 * len(frame(0)), max_file=100,
                                            compress=False))
        store.close()


class Writer:
    """dockerd's end of the FIFO: opened O_RDWR, as dockerd does."""

    def __init__(self, path: str) -> None:
        os.mkfifo(path)
        self.path = path
        self.fd: int | None = os.open(path, os.O_RDWR)

    def write(self, data: bytes) -> None:
        assert self.fd is not None
        assert os.write(self.fd, data) == len(data)

    def close(self) -> None:
        """The container's logging ends: end of stream for the reader."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


@pytest.fixture
def fifo(tmp_path):
    w = Writer(str(tmp_path / "fifo"))
    yield w
    w.close()


def pending(fd: int) -> int:
    """Bytes in the pipe, not read yet."""
    buf = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return buf[0]


async def until(clog: ContainerLog, cond) -> None:
    """Wait, woken by the store, until ``cond()`` holds."""
    ev = clog.waiter()
    try:
        async def wait() -> None:
            while not cond():
                ev.clear()
                await ev.wait()
        await asyncio.wait_for(wait(), TIMEOUT)
    finally:
        clog.drop_waiter(ev)


def stored(clog: ContainerLog) -> list[int]:
    """Every entry on disk, oldest first."""
    d = clog.directory
    names = sorted((int(n.split(".")[2]), n) for n in os.listdir(d)
                   if n.startswith("container.log."))  # the rotated files
    data = b"".join((d / n).read_bytes() for _, n in names) + (d / "container.log").read_bytes()
    return [e.time_nano - T0 for e in decode_all(data)]


async def test_the_fifo_is_moved_into_the_store_until_end_of_stream(clog, fifo):
    ended = []
    stream = FifoStream(fifo.path, clog, lambda: ended.append(True))
    stream.start()
    data = b"".join(frame(i) for i in range(25))  # over max-size twice: rotates on the way
    fifo.write(data[:100])  # a write that ends inside a frame
    await until(clog, lambda: clog.stats.bytes >= 100)
    fifo.write(data[100:])
    await until(clog, lambda: clog.stats.bytes == len(data))
    assert not stream.done.is_set() and not ended
    fifo.close()  # dockerd closes its end: end of stream
    await asyncio.wait_for(stream.done.wait(), TIMEOUT)
    assert ended == [True] and stream.done.is_set()
    assert stream.stats.bytes == len(data) and stream.stats.dropped_bytes == 0
    assert clog.stats.rotations == 2
    assert stored(clog) == list(range(25))


async def test_disk_full_keeps_the_fifo_flowing_and_counts_what_is_dropped(clog, fifo,
                                                                          monkeypatch):
    """While the file cannot take the bytes, the FIFO is still read (dockerd's writes, and so
    the container, do not block), and the loss is counted and shown; then writing resumes."""
    stream = FifoStream(fifo.path, clog, lambda: None)
    stream.start()
    fifo.write(frame(0))
    await until(clog, lambda: clog.frame_end > 0)

    def enospc(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    dropped = asyncio.Event()
    note = clog.note_dropped

    def note_and_tell(nbytes: int, error: OSError) -> None:
        note(nbytes, error)
        dropped.set()

    monkeypatch.setattr(pylog.store.os, "splice", enospc)
    monkeypatch.setattr(clog, "note_dropped", note_and_tell)
    lost = frame(1) + frame(2)
    fifo.write(lost)

    async def all_dropped() -> None:
        while clog.stats.dropped_bytes < len(lost):
            dropped.clear()
            await dropped.wait()

    await asyncio.wait_for(all_dropped(), TIMEOUT)
    assert pending(fifo.fd) == 0  # the FIFO was emptied all the same
    assert not stream.done.is_set()  # still reading
    assert clog.stats.dropped_bytes == stream.stats.dropped_bytes == len(lost)
    assert clog.stats.last_error.startswith("write:") and "No space" in clog.stats.last_error
    monkeypatch.undo()  # the disk has room again
    fifo.write(frame(3))
    await until(clog, lambda: clog.frame_end == 2 * len(frame(0)))
    assert clog.stats.last_error == ""
    assert stored(clog) == [0, 3]
    fifo.close()
    await asyncio.wait_for(stream.done.wait(), TIMEOUT)


async def test_a_disk_that_fills_inside_a_frame_loses_only_the_dropped_lines(clog, fifo,
                                                                            monkeypatch):
    """The disk fills up in the middle of a splice: the half frame in the file is cut off when
    the rest of it is dropped, so the first line after the disk has room again is stored whole
    and readable (not swallowed by the torn frame)."""
    stream = FifoStream(fifo.path, clog, lambda: None)
    stream.start()
    fifo.write(frame(0))
    await until(clog, lambda: clog.frame_end > 0)
    splice = os.splice
    calls = []

    def half_then_enospc(src, dst, count, *args, **kwargs):
        calls.append(count)
        if len(calls) == 1:  # room for half a frame, then none
            return splice(src, dst, len(frame(1)) // 2, *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pylog.store.os, "splice", half_then_enospc)
    fifo.write(frame(1) + frame(2))
    await until(clog, lambda: clog.stats.dropped_bytes > 0 and pending(fifo.fd) == 0)
    monkeypatch.undo()  # the disk has room again
    fifo.write(frame(3))
    await until(clog, lambda: clog.stats.bytes >= 2 * len(frame(0)) + len(frame(1)) // 2)
    assert clog.frame_end == (clog.directory / "container.log").stat().st_size
    assert stored(clog) == [0, 3]
    assert clog.stats.corrupt_regions == 1  # the half frame, counted
    fifo.close()
    await asyncio.wait_for(stream.done.wait(), TIMEOUT)
