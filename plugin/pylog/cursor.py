"""Where a sink has got to in one container's log: ``cursor-<sink>.pos`` in the container's
store directory, a slot file (:func:`pylog.durable.write_slots`) saved after every batch the
sink took. Cursors of older versions (``cursor-<sink>.json``) are read when there is no ``.pos``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .durable import STATE, StateError, read_json, read_slots, write_slots
from .position import Position

log = logging.getLogger(__name__)


class Cursor:
    """One sink's position in one container's stored log."""

    def __init__(self, directory: Path, sink_key: str) -> None:
        self.path = directory / f"cursor-{sink_key}.pos"
        self.old_path = directory / f"cursor-{sink_key}.json"  # written by older versions
        self._warned = False

    def load(self) -> Position | None:
        """The saved position; None if there is none, or if the file cannot be used (said once,
        with the file's name): the delivery then reads again from the oldest stored line."""
        try:
            return _read(self.path, self.old_path)
        except (OSError, StateError, KeyError, TypeError, ValueError) as e:
            if not self._warned:
                self._warned = True
                log.warning("sink cursor %s cannot be used (%s); re-reading the container's "
                            "stored log from its oldest line (the sink may get lines twice)",
                            self.path if self.path.exists() else self.old_path, e)
            return None

    def save(self, pos: Position) -> None:
        """Hand the position to the state writer's thread (durably written, the newest of
        several at once), without waiting: a save per batch cost the loop a worker's handoff."""
        STATE.put(self.path, (pos.seq, pos.offset), write_slots)


def _read(path: Path, old_path: Path) -> Position | None:
    saved = _saved(path)
    return saved if saved is not None else _saved(old_path)


def _saved(path: Path) -> Position | None:
    """A cursor file of either format (a slot file, or an older version's JSON)."""
    if path.suffix == ".pos":
        values = read_slots(path)
        return None if values is None else Position(values[0], values[1])
    d = read_json(path)
    return None if d is None else Position(int(d["seq"]), int(d["offset"]))


def cursor_seqs(directory: Path) -> list[int]:
    """The seqs the sinks' saved cursors in ``directory`` name, of both formats (those that can
    be read): what a seq taken after a lost seq.json must be past."""
    seqs = []
    for path in [*directory.glob("cursor-*.pos"), *directory.glob("cursor-*.json")]:
        try:
            saved = _saved(path)
        except (StateError, OSError, KeyError, TypeError, ValueError):
            continue
        if saved is not None:
            seqs.append(saved.seq)
    return seqs
