"""Whole lines from dockerd's 16 KiB chunks (``partial_log_metadata`` id / ordinal / last).

Sinks want one record per line; the store keeps the chunks as dockerd sent them (which is what
Docker's own drivers keep, so ``docker logs`` matches them byte for byte).

A line is a :class:`LogEntry` with no ``partial_log_metadata``: an entry that was whole already is
passed on as it is (no copy); a reassembled one is a new entry. ``partial`` stays True on a line
that did not end with a newline: output flushed at end of stream, and the pieces of a line cut at
``max_line`` bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .entry import LogEntry

DEFAULT_MAX_LINE = 1 << 20
MAX_PENDING = 64  # unfinished lines held at once (dockerd has one per stream; more is hostile)

Line = LogEntry


@dataclass(slots=True)
class _Pending:
    source: str
    time_nano: int
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    next_ordinal: int = 1


@dataclass(slots=True)
class ReassemblyStats:
    lines: int = 0
    split_lines: int = 0  # lines that arrived in more than one chunk
    out_of_order: int = 0  # chunks whose ordinal was not the next expected one
    cut_lines: int = 0  # lines longer than max_line, emitted in pieces
    abandoned: int = 0  # unfinished lines given up because too many were pending


class Reassembler:
    """Feed entries in stream order; get back whole lines."""

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        self.max_line = max_line
        self.stats = ReassemblyStats()
        self._pending: dict[str, _Pending] = {}

    @property
    def pending(self) -> int:
        return len(self._pending)

    def push(self, entry: LogEntry) -> Line | None:
        if not entry.partial:
            self.stats.lines += 1
            return entry
        meta = entry.partial_log_metadata
        key = meta.id or entry.source
        p = self._pending.get(key)
        if p is None:
            if len(self._pending) >= MAX_PENDING:
                # Bound memory against ids that never finish (hostile input: dockerd keeps one
                # per stream). The oldest is given up and counted; the store still has its
                # chunks, so `docker logs` shows them.
                del self._pending[next(iter(self._pending))]
                self.stats.abandoned += 1
            p = self._pending[key] = _Pending(entry.source, entry.time_nano)
        if meta.ordinal and meta.ordinal != p.next_ordinal:
            self.stats.out_of_order += 1
        p.next_ordinal = meta.ordinal + 1
        p.chunks.append(entry.line)
        p.size += len(entry.line)
        if meta.last:
            del self._pending[key]
            self.stats.lines += 1
            self.stats.split_lines += len(p.chunks) > 1
            return LogEntry(source=p.source, time_nano=p.time_nano, line=b"".join(p.chunks))
        if p.size >= self.max_line:
            # Bound memory: hand out what we have; the rest of the line follows as more pieces.
            self.stats.cut_lines += 1
            piece = LogEntry(source=p.source, time_nano=p.time_nano, line=b"".join(p.chunks),
                             partial=True)
            p.chunks.clear()
            p.size = 0
            return piece
        return None

    def flush(self) -> list[Line]:
        """End of stream or StopLogging: hand out every unfinished line, oldest first."""
        out = [
            LogEntry(source=p.source, time_nano=p.time_nano, line=b"".join(p.chunks), partial=True)
            for p in sorted(self._pending.values(), key=lambda p: p.time_nano)
            if p.chunks
        ]
        self.stats.lines += len(out)
        self._pending.clear()
        return out
