"""The index of a container's current file: how far its frames have been walked, where the newest
whole frame starts, frame starts about a MiB apart (marks) and the damage found on the way.

The writer walks the bytes it has just added (a splice at most) and rotates where :func:`walk`
stops; a file opened again is walked in a worker thread a piece at a time by :func:`walk_file`,
which never rotates. The walk is saved when the log is closed (:func:`save_walk`) and taken up
again if the file is still the very same, so reopening a log costs nothing.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from itertools import accumulate, repeat
from operator import add
from pathlib import Path

from .durable import StateError, read_json, write_json
from .frames import DEFAULT_MAX_FRAME as MAX_FRAME
from .frames import frame_at, frame_lengths, next_sync

log = logging.getLogger(__name__)

MARK_EVERY = 1 << 20  # a known frame start in the current file at least every MiB
WALK_PIECE = 4 << 20  # a file opened again is walked this much at a time (bounded memory)
PROCESS_WALK = 64 << 20  # walks of this much and more go to the walker process
WALKED = "walked.json"


@dataclass(slots=True)
class WalkState:
    """Where the walk over the current file is. ``scan`` is the file offset it goes on from
    (everything before it is whole frames or counted damage); the counters say what it found
    since they were last taken (:meth:`take_counts`)."""

    scan: int = 0
    last_frame: int = -1  # where the newest whole frame starts (-1: none in this file)
    marks: list[int] = field(default_factory=lambda: [0])
    in_garbage: bool = False
    frames: int = 0
    corrupt_regions: int = 0
    corrupt_bytes: int = 0

    def take_counts(self) -> tuple[int, int, int]:
        counts = (self.frames, self.corrupt_regions, self.corrupt_bytes)
        self.frames = self.corrupt_regions = self.corrupt_bytes = 0
        return counts

    def restart(self) -> None:
        """A new current file begins (a rotation): its offsets start at 0."""
        self.scan, self.last_frame, self.marks = 0, -1, [0]


def walk(state: WalkState, data: bytes, start: int, limit: int | None) -> int | None:
    """Walk ``data[start:]`` (file offset ``state.scan`` at ``data[start]``) frame by frame.

    Returns None when every whole frame was walked (a half frame at the end is left for later),
    or the offset in ``data`` of a frame that would end past file offset ``limit`` (it must start
    the next file; ``state`` is up to just before it). The first frame of a file never rotates.
    """
    if not state.in_garbage:
        lengths = frame_lengths(data[start:] if start else data, MAX_FRAME)
        if lengths is not None:
            return _walk_whole(state, lengths, start, limit)
    base = state.scan - start  # file offset of data[0]
    pos, frames, last = start, 0, -1
    in_garbage = state.in_garbage
    try:
        while True:
            end = frame_at(data, pos, MAX_FRAME)
            if end == 0:
                return None
            if end < 0:
                if not in_garbage:
                    state.corrupt_regions += 1
                    in_garbage = True
                skip = next_sync(data, pos, MAX_FRAME)
                state.corrupt_bytes += skip - pos
                pos = skip
                continue
            in_garbage = False
            if limit is not None and base + end > limit and base + pos > 0:
                return pos
            last, frames, pos = pos, frames + 1, end
    finally:
        state.in_garbage = in_garbage
        _advance(state, frames, base + last, base + pos)


def _walk_whole(state: WalkState, lengths: tuple[int, ...], start: int,
                limit: int | None) -> int | None:
    """:func:`walk` when the bytes are plainly good frames (found in C): only a rotation
    takes Python steps."""
    base = state.scan  # file offset of data[start]
    whole = 4 * len(lengths) + sum(lengths)
    if limit is None or base + whole <= limit:
        if whole > MARK_EVERY:
            _mark(state, base, list(accumulate(map(add, lengths, repeat(4)))))
        _advance(state, len(lengths), base + whole - 4 - lengths[-1], base + whole)
        return None
    ends = list(accumulate(map(add, lengths, repeat(4))))
    i = bisect_right(ends, limit - base)  # the first frame that ends past the limit
    if i == 0 and base == 0:
        i = 1  # a frame bigger than max-size alone stays where it is
    if i >= len(ends):
        _advance(state, len(ends), base + (ends[-2] if len(ends) > 1 else 0), base + ends[-1])
        return None
    cut = ends[i - 1] if i else 0
    if i:
        _advance(state, i, base + (ends[i - 2] if i > 1 else 0), base + cut)
    return start + cut


def _advance(state: WalkState, frames: int, last_frame: int, scan: int) -> None:
    if frames:
        state.frames += frames
        state.last_frame = last_frame
        if not state.in_garbage and scan - state.marks[-1] >= MARK_EVERY:
            state.marks.append(scan)
    state.scan = scan


def _mark(state: WalkState, base: int, ends: list[int]) -> None:
    """Marks among frame ``ends`` (offsets after each frame, from file offset ``base``), one at
    least every MARK_EVERY; the last end is left to :func:`_advance`."""
    i = 0
    while True:
        i = bisect_left(ends, state.marks[-1] + MARK_EVERY - base, lo=i)
        if i >= len(ends) - 1:
            return
        state.marks.append(base + ends[i])


def walk_file(fd: int, state: WalkState, size: int, piece: int = WALK_PIECE) -> WalkState:
    """Worker thread: walk the file from ``state.scan`` to ``size`` a piece at a time, without
    rotating (opening a log never changes its files). Returns ``state``, walked."""
    carry = b""
    offset = state.scan
    while offset < size:
        data = os.pread(fd, min(piece, size - offset), offset)
        if not data:
            break
        offset += len(data)
        buf = carry + data if carry else data
        before = state.scan
        walk(state, buf, 0, None)
        carry = buf[state.scan - before:]
    return state


def walk_path(path: str, state: WalkState, size: int) -> WalkState:
    """:func:`walk_file` of the file at ``path`` (in the walker process)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return walk_file(fd, state, size)
    finally:
        os.close(fd)


def _lowest_priority() -> None:
    os.setpriority(os.PRIO_PROCESS, 0, 19)


_walker: ProcessPoolExecutor | None = None


def walker() -> ProcessPoolExecutor | None:
    """A process of its own, at the lowest CPU priority, for walks of PROCESS_WALK bytes and
    more: a GiB after a crash is seconds of a core, which then went to the containers' logging
    instead (a thread at low priority would hold the GIL while preempted). None if processes
    cannot be had here (no /dev/shm, say): such walks go to a thread then."""
    global _walker
    if _walker is None:
        try:
            _walker = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                          initializer=_lowest_priority)
        except (OSError, ImportError) as e:
            log.warning("no walker process (%s): big walks run in a thread", e)
            return None
    return _walker


class BackgroundWalk:
    """:func:`walk_file` in a worker thread, or in the walker process for a big one;
    ``on_done(self, state)`` runs on the loop with the walked state (None if reading failed),
    then ``done`` is set."""

    def __init__(self, fd: int, state: WalkState, size: int,
                 on_done: Callable[[BackgroundWalk, WalkState | None], None],
                 name: str = "", path: Path | None = None) -> None:
        self.size = size  # the file's size when the walk began
        self.name = name
        self.done = asyncio.Event()
        self._from = state.scan
        self._started = time.monotonic()
        self._on_done = on_done
        self._fd, self._state = fd, state
        loop = asyncio.get_running_loop()
        pool = walker() if path is not None and size - state.scan >= PROCESS_WALK else None
        if pool is not None:
            try:
                future = loop.run_in_executor(pool, walk_path, str(path), state, size)
            except (OSError, RuntimeError, BrokenProcessPool) as e:
                log.warning("%s: the walker process failed (%s): walking in a thread", name, e)
                future = loop.run_in_executor(None, walk_file, fd, state, size)
        else:
            future = loop.run_in_executor(None, walk_file, fd, state, size)
        future.add_done_callback(self._finished)

    def _finished(self, future: asyncio.Future[WalkState]) -> None:
        global _walker
        if not future.cancelled() and isinstance(future.exception(), BrokenProcessPool):
            # The walker died (killed, out of memory): this walk goes to a thread.
            log.warning("%s: the walker process failed: walking in a thread", self.name)
            _walker = None
            again = asyncio.get_running_loop().run_in_executor(
                None, walk_file, self._fd, self._state, self.size)
            again.add_done_callback(self._finished)
            return
        try:
            state: WalkState | None = future.result()
            log.info("%s: walked %.1f MiB of its current file in %.2f s (in a worker)",
                     self.name, (self.size - self._from) / (1 << 20),
                     time.monotonic() - self._started,
                     extra={"event": "walked", "seconds": time.monotonic() - self._started})
        except (OSError, asyncio.CancelledError) as e:
            log.error("%s: walking the stored log failed: %s", self.name, e)
            state = None
        try:
            self._on_done(self, state)
        finally:
            self.done.set()


def _walk_key(fd: int, max_size: int) -> list[int]:
    st = os.fstat(fd)
    return [st.st_ino, st.st_size, st.st_mtime_ns, max_size]


def save_walk(directory: Path, fd: int, max_size: int, state: WalkState) -> None:
    """Keep the walk of a log being closed, for the next opening of the very same file."""
    try:
        write_json(directory / WALKED, {
            "file": _walk_key(fd, max_size), "scan": state.scan, "last_frame": state.last_frame,
            "marks": state.marks, "in_garbage": state.in_garbage})
    except OSError as e:
        log.debug("%s: could not save the walk: %s", directory.name, e)


def load_walk(directory: Path, fd: int, max_size: int, size: int) -> WalkState:
    """The saved walk if it is of this very file (inode, size, mtime, max-size), else a walk
    from the start. The saved walk is good for this opening only: it is removed."""
    path = directory / WALKED
    try:
        saved = read_json(path)
        if saved is None:
            return WalkState()
        os.unlink(path)
        if saved["file"] != _walk_key(fd, max_size):
            return WalkState()
        scan, last, marks = int(saved["scan"]), int(saved["last_frame"]), saved["marks"]
        if not (0 <= scan <= size and -1 <= last < scan and marks and marks[0] == 0
                and all(isinstance(m, int) and 0 <= m <= scan for m in marks)):
            raise StateError(f"{path} does not fit the file")
    except (StateError, KeyError, TypeError, ValueError) as e:
        log.warning("%s: the saved walk is unusable (%s); walking the file again",
                    directory.name, e)
        _unlink(path)
        return WalkState()
    except OSError:
        return WalkState()
    return WalkState(scan=scan, last_frame=last, marks=sorted(marks),
                     in_garbage=bool(saved.get("in_garbage")))


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
