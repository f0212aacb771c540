"""Dead-letter files: where a sink keeps what a server refused for good, one JSON row a record
(or a refusal), appended off the event loop, 0600 in a 0700 directory. A row is written before
the refusal counts as settled, so a failed write makes the batch fail and be sent again."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .base import SinkError

log = logging.getLogger(__name__)


def append_file(path: Path, data: bytes) -> None:
    """Append ``data`` to ``path`` (created 0600, its directory 0700)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


class DeadLetters:
    """One sink's dead-letter file of JSON rows: ``{"time", "sink", ...the row's own keys}``."""

    def __init__(self, path: Path, sink_key: str) -> None:
        self.path = path
        self.sink_key = sink_key
        self.count = 0  # rows appended by this sink instance

    async def append(self, rows: Sequence[dict[str, Any]], what: str) -> None:
        """Append ``rows``; SinkError (the batch is sent again) if they cannot be kept.
        ``what`` says in the log line what happened to them."""
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        data = "".join(json.dumps({"time": now, "sink": self.sink_key, **row},
                                  ensure_ascii=False) + "\n" for row in rows)
        try:
            await asyncio.to_thread(append_file, self.path, data.encode("utf-8", "replace"))
        except OSError as e:
            raise SinkError(f"{len(rows)} refused records could not be kept in {self.path}: "
                            f"{e.strerror or e}") from None
        self.count += len(rows)
        log.warning("sink %s: %s; appended to %s (%d rows so far)", self.sink_key, what,
                    self.path, self.count)
