"""A container's stored files on disk: their names, compression and pruning after a rotation
(in the store's worker thread), and reading them a piece at a time (inflated on the way)."""

from __future__ import annotations

import logging
import os
import re
import shutil
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import cast

from isal import igzip, isal_zlib

_ISAL_ERROR = cast("type[Exception]", isal_zlib.error)  # not an OSError (its stub: an instance)

log = logging.getLogger(__name__)

CURRENT = "container.log"
NEXT = "container.log.new"  # the next current file, while a rotation is under way
ROTATED_RE = re.compile(r"^container\.log\.(\d+)(\.gz)?$")
# Rotated files are gzip made by ISA-L (isal): at its level 1, 5x the speed of zlib's
# level 1 and a little smaller (20 MB of B1's log: 0.02 vs 0.11 CPU-s, 7.2x vs 6.8x).
GZIP_LEVEL = 1
_GZIP = 16 + zlib.MAX_WBITS  # zlib's wbits for the gzip format


def rotated_files(directory: Path) -> list[tuple[int, Path]]:
    """The rotated files (plain or .gz) by seq, oldest first."""
    found = []
    for name in os.listdir(directory):
        m = ROTATED_RE.match(name)
        if m:
            found.append((int(m.group(1)), directory / name))
    found.sort()
    return found


def finish_rotation(directory: Path, newest: int, compress: bool, prune_upto: int) -> None:
    """Worker thread, after a rotation: delete rotated files up to seq ``prune_upto``, then,
    with ``compress``, compress every plain rotated file up to seq ``newest`` (the one just
    rotated, and one a crash left plain). One worker does these in order, so a file is never
    pruned while it is being compressed."""
    try:
        found = rotated_files(directory)
    except FileNotFoundError:
        return  # the container's logs were removed meanwhile
    for seq, path in found:
        if seq <= prune_upto:
            unlink(path)
        elif compress and seq <= newest and not path.name.endswith(".gz"):
            _compress(path)


def uncompressed_size(path: Path) -> int:
    """A rotated file's content size: its own size, or a .gz's trailer (ISIZE, mod 2**32: the
    files are far smaller than 4 GiB)."""
    try:
        if path.name.endswith(".gz"):
            with open(path, "rb") as f:
                f.seek(-4, os.SEEK_END)
                return int(struct.unpack("<I", f.read(4))[0])
        return path.stat().st_size
    except (OSError, struct.error):
        return 0


def _compress(path: Path) -> None:
    gz = path.with_name(path.name + ".gz")
    tmp = path.with_name(path.name + ".gz.tmp")
    try:
        with open(path, "rb") as src, \
                igzip.open(tmp, "wb", compresslevel=GZIP_LEVEL) as dst:  # type: ignore[no-untyped-call]
            shutil.copyfileobj(src, dst, 1 << 20)
        os.chmod(tmp, 0o600)
        os.rename(tmp, gz)
        unlink(path)
    except FileNotFoundError:
        unlink(tmp)
    except (OSError, _ISAL_ERROR) as e:
        log.error("compressing %s failed, keeping it uncompressed: %s", path, e)
        unlink(tmp)


def cut_tail(path: Path, tail: bytes) -> None:
    """Cut ``tail`` off the end of ``path`` if that is how the file ends."""
    try:
        with open(path, "r+b") as f:
            size = f.seek(0, os.SEEK_END)
            if tail and size >= len(tail):
                f.seek(size - len(tail))
                if f.read(len(tail)) == tail:
                    f.truncate(size - len(tail))
    except OSError:
        pass


def file_pieces(fd: int, is_gzip: bool, size: int | None = None, piece: int = 1 << 20,
                start: int = 0) -> Iterator[bytes]:
    """A stored file's bytes, about ``piece`` bytes at a time (inflated on the way if
    compressed): the current file up to ``size`` (where its last whole frame ends), a rotated
    one to its end; a damaged compressed file gives what came before the damage.

    Reading a piece at a time keeps `docker logs` of a big container (pylog.logreader) and a
    sink catching up through compressed files (pylog.delivery) from holding whole files: a fifth
    of the memory and half the CPU for `docker logs` of 1,000,000 lines (bench/bench_logs.py).
    A plain file is read from ``start`` (a frame start)."""
    offset = start
    if not is_gzip:
        while size is None or offset < size:
            data = os.pread(fd, piece if size is None else min(piece, size - offset), offset)
            if not data:
                return
            offset += len(data)
            yield data
        return
    assert start == 0, "a compressed file is read from its start"
    inflate = zlib.decompressobj(_GZIP)
    started = False  # inflate has had input of a member that has not ended
    pending = b""
    try:
        while True:
            if not pending:
                pending = os.pread(fd, piece, offset)
                offset += len(pending)
                if not pending:
                    if started:
                        log.error("a compressed log file ends early; its last lines are lost")
                    return
            data = inflate.decompress(pending, piece)
            started = True
            if inflate.eof:  # the end of one gzip member; another may follow
                pending = inflate.unused_data
                inflate = zlib.decompressobj(_GZIP)
                started = False
            else:
                pending = inflate.unconsumed_tail
            if data:
                yield data
    except zlib.error as e:
        log.error("a compressed log file is damaged, skipping the rest of it: %s", e)


def unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
