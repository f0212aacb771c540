"""Frame helpers only the tests need."""

from __future__ import annotations

from pylog.entry import LogEntry
from pylog.frames import DEFAULT_MAX_FRAME, FrameDecoder


def decode_all(data: bytes, max_frame: int = DEFAULT_MAX_FRAME) -> list[LogEntry]:
    """Every valid entry of a complete byte string (a stored file, a captured stream)."""
    dec = FrameDecoder(max_frame)
    entries = dec.feed(data).entries
    for chunk in dec.finish():
        entries += chunk.entries
    return entries
