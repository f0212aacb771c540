"""State files that say where data is (a sink's cursor, the current file's seq, the saved walk,
attachments), written so that a power cut leaves either the old file or the new one whole.

A state file is replaced by writing a temp file, fsyncing it, renaming it over the old one and
fsyncing the directory (the rename itself is only durable then). A file found empty, torn or of
the wrong shape is reported by :func:`read_json` as :class:`StateError` with what was wrong, so
each caller can log it once and fall back to re-reading rather than skipping.
"""

from __future__ import annotations

import json
import logging
import os
import threading
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
        self._pending: dict[Path, object] = {}
        self._writing = False
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def put(self, path: Path, obj: object) -> None:
        with self._cond:
            self._pending[path] = obj
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
            for path, obj in batch.items():
                try:
                    write_json(path, obj)
                except OSError as e:
                    log.warning("could not save %s: %s", path, e)
            with self._cond:
                self._writing = False
                self._cond.notify_all()


STATE = LatestWriter()  # the sinks' cursors
