"""State files that say where data is (a sink's cursor, the current file's seq, the saved walk,
attachments), written so that a power cut leaves either the old file or the new one whole.

A state file is replaced by writing a temp file, fsyncing it, renaming it over the old one and
fsyncing the directory (the rename itself is only durable then). A file found empty, torn or of
the wrong shape is reported by :func:`read_json` as :class:`StateError` with what was wrong, so
each caller can log it once and fall back to re-reading rather than skipping.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


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
