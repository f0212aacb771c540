"""ReadLogs: a container's stored entries as the frame stream ``docker logs`` reads.

The reference is Docker's ``json-file`` driver, option for option: ``Tail`` counts entries from
the end (applied before Since/Until, as json-file does), ``Since``/``Until`` are inclusive,
``Follow`` streams new entries until the container's logging stops. dockerd adds nothing to a
plugin's lines, so a line (or the last chunk of a split line) gets its ``\\n`` back here, and a
chunk that is not the last, or output that ended without a newline, does not.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import os
import struct
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from .entry import LogEntry
from .errors import RequestError
from .frames import FrameDecoder, decode_all
from .store import CURRENT, MAX_STORED_FRAME, ContainerLog
from .timefmt import parse_rfc3339_ns

log = logging.getLogger(__name__)

_LEN = struct.Struct(">I")
_READ_CHUNK = 4 << 20


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


def _read_to_eof(fd: int) -> bytes:
    chunks: list[bytes] = []
    while True:
        chunk = os.read(fd, _READ_CHUNK)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _read_file(fd: int, is_gzip: bool) -> bytes:
    data = _read_to_eof(fd)
    if is_gzip:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            log.error("a compressed log file is damaged, skipping it: %s", e)
            return b""
    return data


def select_entries(entries: list[LogEntry], cfg: ReadConfig) -> tuple[list[LogEntry], bool]:
    """The entries within Since/Until; True as second value once past Until (stop reading)."""
    since, until = cfg.since, cfg.until
    if since is None and until is None:
        return entries, False
    out: list[LogEntry] = []
    for entry in entries:
        t = entry.time_nano
        if since is not None and t < since:
            continue
        if until is not None and t > until:
            return out, True
        out.append(entry)
    return out, False


def encode_for_docker(entries: list[LogEntry]) -> bytes:
    """Frames as dockerd's ReadLogs decoder wants them."""
    out: list[bytes] = []
    pack = _LEN.pack
    for entry in entries:
        # As json-file: a newline ends every line and every line's last chunk; a partial chunk
        # that is not the last (or output that ended without a newline) gets none.
        whole = not entry.partial or entry.partial_log_metadata.last
        reply = LogEntry(source=entry.source, time_nano=entry.time_nano,
                         line=entry.line + b"\n" if whole else entry.line)
        encoded = reply.SerializeToString()
        out.append(pack(len(encoded)))
        out.append(encoded)
    return b"".join(out)


def render(entries: list[LogEntry], cfg: ReadConfig) -> tuple[bytes, bool]:
    """Frames for dockerd from stored entries; True as second value once past ``until``."""
    selected, stop = select_entries(entries, cfg)
    return encode_for_docker(selected), stop


def _decode(data: bytes) -> list[LogEntry]:
    return decode_all(data, MAX_STORED_FRAME)


def _tail_entries(files: list[tuple[int, bool]], current: list[LogEntry], n: int) -> list[LogEntry]:
    """The last ``n`` entries over the rotated files (oldest first) and the current file's."""
    picked = [current[-n:]]
    need = n - len(picked[0])
    for fd, is_gz in reversed(files):
        if need <= 0:
            break
        entries = _decode(_read_file(fd, is_gz))
        picked.append(entries[-need:] if need < len(entries) else entries)
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


async def read_entries(clog: ContainerLog, cfg: ReadConfig) -> AsyncIterator[list[LogEntry]]:
    """Stored entries in batches, as ReadConfig selects them; with Follow, until the container
    stops logging."""
    snap = clog.snapshot()
    waiter = clog.waiter() if cfg.follow and clog.writers > 0 else None
    try:
        cur = snap.current
        end = snap.current_end
        if cfg.tail < 0:
            for _seq, fd, is_gz in snap.rotated:
                data = await asyncio.to_thread(_read_file, fd, is_gz)
                out, stop = await asyncio.to_thread(_select_data, data, cfg)
                if out:
                    yield out
                if stop:
                    return
            if cur is not None:
                data = await asyncio.to_thread(os.pread, cur, end, 0)
                out, stop = await asyncio.to_thread(_select_data, data, cfg)
                if out:
                    yield out
                if stop:
                    return
        elif cfg.tail > 0:
            data = await asyncio.to_thread(os.pread, cur, end, 0) if cur is not None else b""
            files = [(fd, gz) for _s, fd, gz in snap.rotated]
            picked = await asyncio.to_thread(_tail_entries, files, _decode(data), cfg.tail)
            out, stop = select_entries(picked, cfg)
            if out:
                yield out
            if stop:
                return
        if waiter is None:
            return
        async for out in _follow(clog, cfg, waiter, snap.current_seq, cur, end):
            yield out
    finally:
        if waiter is not None:
            clog.drop_waiter(waiter)
        snap.close()


def _select_data(data: bytes, cfg: ReadConfig) -> tuple[list[LogEntry], bool]:
    return select_entries(_decode(data), cfg)


async def _follow(clog: ContainerLog, cfg: ReadConfig, waiter: asyncio.Event, seq: int,
                  fd: int | None, offset: int) -> AsyncIterator[list[LogEntry]]:
    """New entries as they are written, across rotations, until no stream writes any more.

    Runs on the event loop thread, where the store writes too: between two awaits nothing is
    written, so "read to the end, then wait" cannot miss an entry. Of the current file only
    whole frames are read (up to ``clog.frame_end``); a rotated one is read to its end.
    """
    own_fds: list[int] = []
    decoder = FrameDecoder(MAX_STORED_FRAME)
    try:
        while True:
            waiter.clear()
            if fd is not None:
                current = seq == clog.next_seq
                want = min(_READ_CHUNK, clog.frame_end - offset) if current else _READ_CHUNK
                chunk = os.pread(fd, want, offset) if want > 0 else b""
                if chunk:
                    offset += len(chunk)
                    out, stop = select_entries(decoder.feed(chunk).entries, cfg)
                    if out:
                        yield out
                    if stop:
                        return
                    continue
            if clog.next_seq > seq:
                # Our file was rotated away and is drained; the next one is seq+1.
                seq += 1
                decoder = FrameDecoder(MAX_STORED_FRAME)
                offset = 0
                fd = None
                if seq < clog.next_seq:
                    opened = clog.open_rotated(seq)
                    if opened is None:
                        log.warning("follow fell behind: rotated file %d of %s was pruned",
                                    seq, clog.directory.name)
                        continue
                    rfd, is_gz = opened
                    own_fds.append(rfd)
                    if is_gz:
                        out, stop = await asyncio.to_thread(_select_data, _read_file(rfd, True), cfg)
                        if out:
                            yield out
                        if stop:
                            return
                        continue
                    fd = rfd
                continue
            if fd is None:
                try:
                    fd = os.open(clog.directory / CURRENT, os.O_RDONLY)
                    own_fds.append(fd)
                    continue
                except FileNotFoundError:
                    pass
            if clog.writers == 0:
                return
            await waiter.wait()
    finally:
        for f in own_fds:
            os.close(f)
