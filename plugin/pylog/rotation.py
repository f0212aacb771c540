"""Rotation on disk: the renames that start a new current file, finishing them after a crash,
and the current file's seq, which must never be used again for other bytes.

A sink's cursor is a (seq, offset), so a seq taken again would point it into the wrong file.
Rotated files alone do not say the seq once they are pruned (with max-file=1 none is kept), so
it is saved (``seq.json``) at each rotation, before the rotated file can be pruned.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .cursor import cursor_seqs
from .durable import StateError, read_json, write_json
from .storefiles import CURRENT, NEXT, cut_tail, rotated_files, unlink

log = logging.getLogger(__name__)

SEQ = "seq.json"


def first_free_seq(directory: Path) -> int:
    """The seq the current file gets when it is rotated."""
    after_rotated = max((s for s, _ in rotated_files(directory)), default=0) + 1
    try:
        saved = read_json(directory / SEQ)
        return after_rotated if saved is None else max(after_rotated, int(saved["next"]))
    except (StateError, OSError, KeyError, TypeError, ValueError) as e:
        # Past every seq a cursor names: a cursor then re-reads what is kept, never skips.
        seq = max([after_rotated, *(c + 1 for c in cursor_seqs(directory))])
        log.warning("%s: the saved log sequence is unusable (%s); taking %d, past every "
                    "file a sink has read", directory.name, e, seq)
        return seq


def save_seq(directory: Path, next_seq: int) -> None:
    write_json(directory / SEQ, {"next": next_seq})


def recover_rotation(directory: Path) -> None:
    """A crash in the middle of a rotation leaves ``container.log.new`` (the copied tail) beside
    ``container.log``: finish the renames, without the tail twice. Compressing and pruning are
    left to the next rotation (opening changes no file's content)."""
    new = directory / NEXT
    if not new.exists():
        return
    current = directory / CURRENT
    tail = new.read_bytes()
    if not current.exists():
        # The crash came between the two renames: the rotated file may still hold the tail.
        seqs = [s for s, _ in rotated_files(directory)]
        if seqs:
            cut_tail(directory / f"{CURRENT}.{max(seqs)}", tail)
    elif current.stat().st_size > 0:
        cut_tail(current, tail)  # the crash came before the cut
        seq = first_free_seq(directory)
        os.rename(current, directory / f"{CURRENT}.{seq}")
        save_seq(directory, seq + 1)
    os.rename(new, current)


def rotate_files(directory: Path, fd: int, size: int, seq: int, boundary: int) -> int:
    """The renames of a rotation of the current file (open as ``fd``, ``size`` bytes) at
    ``boundary``: the new current file's fd. OSError if it failed (all undone then).

    Order matters for crashes: the tail is copied into ``container.log.new``, the files are
    renamed, and only then is the rotated file cut at the boundary. A crash before the cut
    leaves the tail in both files, which :func:`recover_rotation` or readers see once more at
    most (a duplicate, never a loss)."""
    new_path = directory / NEXT
    current = directory / CURRENT
    rotated = directory / f"{CURRENT}.{seq}"
    step = "copy"
    new_fd = -1
    try:
        tail = os.pread(fd, size - boundary, boundary)
        new_fd = os.open(new_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        if tail:
            os.write(new_fd, tail)
        os.rename(current, rotated)
        step = "renamed"
        os.rename(new_path, current)
        step = "both"
        os.ftruncate(fd, boundary)  # the rotated file ends at the boundary
        return new_fd
    except OSError:
        try:  # undo: the old file (tail and all) stays current
            if step == "both":
                os.rename(current, new_path)
            if step != "copy":
                os.rename(rotated, current)
        except OSError:
            log.exception("undoing a failed rotation of %s failed", directory.name)
        unlink(new_path)
        if new_fd >= 0:
            os.close(new_fd)
        raise
