"""State files that say where data is (a sink's cursor, the current file's seq, the saved walk,
attachments), written so that a power cut leaves either the old file or the new one whole.

A state file is replaced by writing a temp file, fsyncing it, renaming it over the old one and
fsyncing the directory (the rename itself is only durable then). A file found empty, torn or of
the wrong shape is reported by :func:`read_json` as :class:`StateError` with what was wrong, so
each caller can log it once and fall back to re-reading rather than skipping.

A few integers saved after every batch (a sink's cursor) go to a *slot file* instead
(:func:`write_slots`): two checksummed slots in separate sectors, written in place in turn, each
followed by ``fdatasync``. A write torn by a power cut spoils only its own slot and reading takes
the newer whole one, so the file always says the new value or the one before. It costs a fifth
of the CPU of the temp file, fsync, rename and directory fsync (0.05 vs 0.24 ms a save here).
"""

from __future__ import annotations

import json
import logging
import os
import struct
import threading
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class StateError(ValueError):
    """A state file exists but cannot be used (empty, torn, not JSON, wrong shape)."""


def write_json(path: Path, obj: object) -> None:
    """Replace ``path`` with ``obj`` as JSON (mode 0600), durably. OSError if it cannot."""
    data = json.dumps(obj).encode()
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make renames and creations in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_SLOT = struct.Struct(">4sQ3q")  # magic, counter, up to three values
_SLOT_MAGIC = b"PLS1"
_SLOT_SPAN = 512  # one sector per slot: a torn write cannot reach the other


def _slots(data: bytes) -> list[tuple[int, tuple[int, ...]]]:
    """The whole slots in ``data``: (counter, values), checksums checked."""
    out = []
    for at in (0, _SLOT_SPAN):
        raw = data[at:at + _SLOT.size + 4]
        if len(raw) < _SLOT.size + 4 or zlib.crc32(raw[:_SLOT.size]) != \
                int.from_bytes(raw[_SLOT.size:], "big"):
            continue
        magic, counter, *values = _SLOT.unpack(raw[:_SLOT.size])
        if magic == _SLOT_MAGIC:
            out.append((counter, tuple(values)))
    return out


def write_slots(path: Path, values: Sequence[int]) -> None:
    """Save up to three integers in ``path``'s older slot, durably (see the module's doc)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        old = os.pread(fd, 2 * _SLOT_SPAN, 0)
        counter = max((c for c, _ in _slots(old)), default=0) + 1
        body = _SLOT.pack(_SLOT_MAGIC, counter, *values, *[0] * (3 - len(values)))
        os.pwrite(fd, body + zlib.crc32(body).to_bytes(4, "big"), (counter % 2) * _SLOT_SPAN)
        if old:
            os.fdatasync(fd)
        else:
            os.fsync(fd)  # a new file: its size and its name must be durable too
    finally:
        os.close(fd)
    if not old:
        fsync_dir(path.parent)


def read_slots(path: Path) -> tuple[int, ...] | None:
    """The newest whole value in a slot file; None if there is no such file; StateError if
    neither slot is whole."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    found = _slots(data)
    if not found:
        raise StateError(f"{path} has no whole slot ({len(data)} bytes)")
    return max(found)[1]


def read_json(path: Path) -> Any | None:
    """The JSON in ``path``; None if there is no such file; StateError if it is there but
    empty or not JSON (torn by a crash of an older version, or damaged)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    if not data.strip():
        raise StateError(f"{path} is empty")
    try:
        return json.loads(data)
    except ValueError as e:
        raise StateError(f"{path} is not valid JSON ({e})") from None


class LatestWriter:
    """One thread that writes state files durably, the newest value of each: a caller hands a
    value over without waiting for it (the event loop neither blocks on the fsyncs nor is woken
    when they are done), and values of a file that come while one is being written become one
    write. :meth:`flush` waits until everything handed over is written."""

    def __init__(self) -> None:
        self._pending: dict[Path, tuple[Callable[[Path, Any], None] | None, object]] = {}
        self._writing = False
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def put(self, path: Path, obj: object,
            write: Callable[[Path, Any], None] | None = None) -> None:
        """Have ``obj`` written to ``path`` by ``write`` (default :func:`write_json`)."""
        with self._cond:
            self._pending[path] = (write, obj)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="pylog-state",
                                                daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def flush(self) -> None:
        """Block until every value handed over is on disk (call it in a worker thread)."""
        with self._cond:
            while self._pending or self._writing:
                self._cond.wait()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending:
                    self._cond.wait()
                batch, self._pending, self._writing = self._pending, {}, True
            for path, (write, obj) in batch.items():
                try:
                    (write or write_json)(path, obj)
                except OSError as e:
                    log.warning("could not save %s: %s", path, e)
            with self._cond:
                self._writing = False
                self._cond.notify_all()


STATE = LatestWriter()  # the sinks' cursors
