"""ReadLogs: a container's stored entries as the frame stream ``docker logs`` reads.

The reference is Docker's ``json-file`` driver, option for option: ``Tail`` counts entries from
the end (applied before Since/Until, as json-file does), ``Since``/``Until`` are inclusive,
``Follow`` streams new entries until the container's logging stops. dockerd adds nothing to a
plugin's lines, so a line (or the last chunk of a split line) gets its ``\\n`` back here, and a
chunk that is not the last, or output that ended without a newline, does not.
"""

from __future__ import annotations

import asyncio
import logging
from bisect import bisect_right
from collections import deque
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .dockerframes import columns_frames
from .entry import LogEntry
from .errors import RequestError
from .frames import Columns, decode_batch, frame_lengths, frame_runs, frames_size, join_frames
from .position import Position
from .reader import LogReader
from .store import CONTAINER_ID_RE, MAX_STORED_FRAME, ContainerLog, file_pieces
from .timefmt import parse_rfc3339_ns

log = logging.getLogger(__name__)

_PIECE = 1 << 20
_DECODE_RUN = 128 << 10  # bytes decoded per call: one call holds the GIL (~5 ms for this)
_TAIL_BATCH = 20_000  # entries of a tail handed on at once (~ a piece of short lines)
_FOLLOW_BYTES = 4 << 20  # what a follower reads at once


@dataclass(frozen=True, slots=True)
class ReadConfig:
    since: int | None = None  # ns, inclusive
    until: int | None = None  # ns, inclusive
    tail: int = -1  # <0 all, 0 none, N last N entries
    follow: bool = False

    @classmethod
    def from_request(cls, config: Mapping[str, Any] | None) -> ReadConfig:
        config = config or {}
        tail = config.get("Tail", -1)
        if not isinstance(tail, int) or isinstance(tail, bool):
            raise RequestError(f"Config.Tail must be an integer, got {tail!r}")
        follow = config.get("Follow", False)
        if not isinstance(follow, bool):
            raise RequestError(f"Config.Follow must be a boolean, got {follow!r}")
        return cls(
            since=parse_rfc3339_ns(config.get("Since")),
            until=parse_rfc3339_ns(config.get("Until")),
            tail=tail,
            follow=follow,
        )


def read_request(info: Any, config: Any) -> tuple[str, ReadConfig]:
    """ReadLogs' container ID and configuration; RequestError naming a wrong field."""
    if not isinstance(info, dict):
        raise RequestError("ReadLogs: Info must be an object")
    container_id = info.get("ContainerID")
    if not isinstance(container_id, str) or not CONTAINER_ID_RE.match(container_id):
        raise RequestError(f"ReadLogs: Info.ContainerID must be 64 hex characters, "
                           f"got {container_id!r}")
    if config is not None and not isinstance(config, dict):
        raise RequestError("ReadLogs: Config must be an object")
    return container_id, ReadConfig.from_request(config)


def _file_entries(fd: int, is_gzip: bool, size: int | None,
                  start: int = 0) -> Iterator[Sequence[LogEntry]]:
    """The entries of a stored file (from ``start``, a frame start), a piece at a time
    (damaged regions skipped), for a worker thread."""
    carry = b""  # the start of a frame that goes on in the next piece
    for piece in file_pieces(fd, is_gzip, size, _PIECE, start):
        data = carry + piece if carry else piece
        decoded = decode_batch(data, MAX_STORED_FRAME, columns=True)
        carry = data[decoded.consumed:]
        if decoded.entries:
            yield decoded.entries
    if carry:  # a frame never finished (a torn write), with good frames behind it perhaps
        decoded = decode_batch(carry, MAX_STORED_FRAME, final=True)
        if decoded.entries:
            yield decoded.entries


def select_entries(entries: Sequence[LogEntry],
                   cfg: ReadConfig) -> tuple[Sequence[LogEntry], bool]:
    """The entries within Since/Until; True as second value once past Until (stop reading)."""
    since, until = cfg.since, cfg.until
    if since is None and until is None:
        return entries, False
    if isinstance(entries, Columns):
        return _select_columns(entries, since, until)
    out: list[LogEntry] = []
    for entry in entries:
        t = entry.time_nano
        if since is not None and t < since:
            continue
        if until is not None and t > until:
            return out, True
        out.append(entry)
    return out, False


def _select_columns(columns: Columns, since: int | None,
                    until: int | None) -> tuple[Columns, bool]:
    """select_entries for Columns, without making an entry of each line."""
    times = columns.times
    end, stop = len(times), False
    if until is not None:
        for i, t in enumerate(times):
            if t > until:
                end, stop = i, True
                break
    keep = range(end) if since is None else [i for i in range(end) if times[i] >= since]
    if len(keep) == len(times):
        return columns, stop
    return Columns([columns.sources[i] for i in keep], [times[i] for i in keep],
                   [columns.lines[i] for i in keep]), stop


def encode_for_docker(entries: Sequence[LogEntry]) -> bytes:
    """Frames as dockerd's ReadLogs decoder wants them."""
    if isinstance(entries, Columns):
        return _encode_columns(entries)
    # As json-file: a newline ends every line and every line's last chunk; a partial chunk
    # that is not the last (or output that ended without a newline) gets none.
    return join_frames(LogEntry(
        source=entry.source, time_nano=entry.time_nano,
        line=entry.line + b"\n" if not entry.partial or entry.partial_log_metadata.last
        else entry.line).SerializeToString() for entry in entries)


def _encode_columns(columns: Columns) -> bytes:
    """encode_for_docker for Columns (whole lines only: each gets its newline back): a batch
    at a time (:func:`columns_frames`) where it can, else a line at a time."""
    fast = columns_frames(columns.sources, columns.times, columns.lines)
    if fast is not None:
        return fast
    return join_frames(LogEntry(source=source, time_nano=time_nano,
                                line=line + b"\n").SerializeToString()
                       for source, time_nano, line in zip(columns.sources, columns.times,
                                                          columns.lines))


def _last_entries(fd: int, is_gzip: bool, size: int | None, n: int,
                  start: int = 0) -> list[LogEntry]:
    """The last ``n`` entries of a stored file (of what follows ``start``, a frame start).
    Only they are decoded: the frames before them are counted by their length fields, a piece
    at a time, in C (:func:`frame_lengths`), and only the pieces that hold the last ``n`` are
    kept. What it buys: `docker logs --tail 1000` of 1,000,000 lines in a third of the time of
    decoding them all (bench/bench_logs.py)."""
    kept: deque[tuple[bytes, int]] = deque()  # whole frames, and how many
    in_kept = 0
    carry = b""  # the start of a frame that goes on in the next piece
    for piece in file_pieces(fd, is_gzip, size, _PIECE, start):
        data = carry + piece if carry else piece
        lengths = frame_lengths(data, MAX_STORED_FRAME)
        if lengths is None:  # damage, or a frame not like dockerd's: decode them all
            return _last_entries_decoded(fd, is_gzip, size, n, start)
        whole = frames_size(lengths)
        carry = data[whole:]
        kept.append((data[:whole], len(lengths)))
        in_kept += len(lengths)
        while in_kept - kept[0][1] >= n:
            in_kept -= kept.popleft()[1]
    pieces = [frames for frames, _ in kept]
    skip = in_kept - n  # whole frames before the last n: not decoded (their lengths are known)
    if skip > 0:  # all in the first piece (the loop above dropped every piece before it)
        before: Sequence[int] = (frame_lengths(pieces[0], MAX_STORED_FRAME) or ())[:skip]
        pieces[0] = pieces[0][frames_size(before):]
    out: list[LogEntry] = []
    for data in [run for piece in pieces for run in frame_runs(piece, _DECODE_RUN)] + [carry]:
        out += decode_batch(data, MAX_STORED_FRAME, final=True).entries
    return out[-n:]


def _last_entries_decoded(fd: int, is_gzip: bool, size: int | None, n: int,
                          start: int = 0) -> list[LogEntry]:
    """The last ``n`` entries of a stored file, every entry decoded (damaged regions skipped),
    no more than ``n`` held at a time."""
    last: deque[LogEntry] = deque(maxlen=n)
    for entries in _file_entries(fd, is_gzip, size, start):
        last.extend(entries)
    return list(last)


def _last_of_current(fd: int, size: int, marks: list[int], n: int) -> list[LogEntry]:
    """The last ``n`` entries of the current file, read from the last of its marks (frame
    starts about a MiB apart, :attr:`ContainerLog.marks`) and, while that gives fewer than
    ``n``, from the mark before where the entries found so far say the n-th last one is (a
    quarter more, for lines of other sizes), as json-file reads its file backwards: `docker
    logs --tail` then costs what the tail holds, not the file's size."""
    starts = [m for m in marks if m < size] or [0]
    i = len(starts) - 1
    while True:
        entries = _last_entries(fd, False, size, n, starts[i])
        if len(entries) >= n or i == 0:
            return entries
        span = size - starts[i]
        want = span * n / len(entries) * 1.25 if entries else span * 4
        i = min(i - 1, max(0, bisect_right(starts, size - want) - 1))


def _tail_entries(current: tuple[int, int, list[int]] | None, rotated: list[tuple[int, bool]],
                  n: int) -> list[LogEntry]:
    """The last ``n`` entries over the rotated files (oldest first) and the current file
    (its fd, where its whole frames end, and its marks)."""
    picked = [_last_of_current(*current, n)] if current is not None else []
    need = n - sum(map(len, picked))
    for fd, is_gz in reversed(rotated):
        if need <= 0:
            break
        picked.append(_last_entries(fd, is_gz, None, need))
        need -= len(picked[-1])
    return [e for group in reversed(picked) for e in group]


async def read_logs(clog: ContainerLog, cfg: ReadConfig) -> AsyncIterator[bytes]:
    """Yield frame batches for ``docker logs``; with Follow, until the container stops logging."""
    inner = read_entries(clog, cfg)
    try:
        async for entries in inner:
            if len(entries) > 1000:  # history: encode off the event loop
                yield await asyncio.to_thread(encode_for_docker, entries)
            else:
                yield encode_for_docker(entries)
    finally:
        await inner.aclose()  # type: ignore[attr-defined]  # release the follow waiter now


async def read_entries(clog: ContainerLog,
                       cfg: ReadConfig) -> AsyncIterator[Sequence[LogEntry]]:
    """Stored entries in batches, as ReadConfig selects them; with Follow, until the container
    stops logging."""
    await clog.ready()  # a log opened again is walked first (in a worker)
    snap = clog.snapshot()
    history = LogReader(clog, None, snapshot=snap)  # closes the snapshot
    waiter = clog.waiter() if cfg.follow and clog.writers > 0 else None
    try:
        if cfg.tail < 0:
            batches = _history(history, cfg)
        elif cfg.tail > 0:
            batches = _tail(history, snap.rotated, snap.current, snap.current_end,
                            snap.current_marks, cfg)
        else:
            batches = _nothing()
        async for out, stop in batches:
            if out:
                yield out
            if stop:
                return
        if waiter is None:
            return
        async for out in _follow(clog, cfg, waiter, Position(snap.current_seq,
                                                             snap.current_end)):
            yield out
    finally:
        if waiter is not None:
            clog.drop_waiter(waiter)
        history.close()


async def _nothing() -> AsyncIterator[tuple[Sequence[LogEntry], bool]]:
    return
    yield  # an async generator of nothing


async def _history(reader: LogReader,
                   cfg: ReadConfig) -> AsyncIterator[tuple[Sequence[LogEntry], bool]]:
    """What the snapshot holds, as Since/Until select it, a piece at a time; True as second
    value once past Until (the caller stops)."""
    while True:
        batch = await reader.read(_PIECE, columns=True)
        if batch.at_end:
            return
        yield select_entries(batch.entries, cfg)


async def _tail(reader: LogReader, rotated: list[tuple[int, int, bool]], current: int | None,
                end: int, marks: list[int],
                cfg: ReadConfig) -> AsyncIterator[tuple[Sequence[LogEntry], bool]]:
    """The last ``cfg.tail`` entries of the snapshot (in a worker), then Since/Until."""
    files = [(fd, gz) for _s, fd, gz in rotated]
    last = (current, end, marks) if current is not None else None
    chunks, stop = await reader.in_worker(_tail_selected, last, files, cfg)
    # In batches of a history piece's size, each let go once handed on: what the loop does
    # with each, freeing it too (450,000 entries at once: ~50 ms), stays bounded.
    if not chunks and stop:
        yield [], stop
    while chunks:
        chunk = chunks.pop()
        yield chunk, stop and not chunks
        del chunk


def _tail_selected(current: tuple[int, int, list[int]] | None, rotated: list[tuple[int, bool]],
                   cfg: ReadConfig) -> tuple[list[Sequence[LogEntry]], bool]:
    """The selected tail in batches of ``_TAIL_BATCH`` entries, last batch first."""
    picked, stop = select_entries(_tail_entries(current, rotated, cfg.tail), cfg)
    chunks = [picked[i:i + _TAIL_BATCH] for i in range(0, len(picked), _TAIL_BATCH)]
    chunks.reverse()
    return chunks, stop


async def _follow(clog: ContainerLog, cfg: ReadConfig, waiter: asyncio.Event,
                  start: Position) -> AsyncIterator[Sequence[LogEntry]]:
    """New entries as they are written, from ``start`` across rotations, until no stream
    writes any more; read and decoded in a worker, as every reader does (:class:`LogReader`).

    The waiter is cleared before each read takes what may be read: a write during the read
    sets it, so "read to the end, then wait" cannot miss an entry.
    """
    reader = LogReader(clog, start)
    try:
        while True:
            waiter.clear()
            batch = await reader.read(_FOLLOW_BYTES, columns=True)
            if not batch.at_end:
                out, stop = select_entries(batch.entries, cfg)
                if out:
                    yield out
                if stop:
                    return
                continue
            if waiter.is_set():
                continue  # written (or stopped) while the worker read: look again
            if clog.writers == 0:
                return
            await waiter.wait()
    finally:
        reader.close()
