"""A place in a container's stored log: what readers move through and sinks' cursors save."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Position:
    """A place in a container's log: file ``seq`` (a rotated file, or the current file, which
    will get seq ``next_seq`` when rotated) and a byte offset into its (uncompressed) content."""

    seq: int
    offset: int
