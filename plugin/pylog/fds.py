"""File descriptors held in a list (a snapshot of a container's log files, a process's
namespaces): closed together."""

from __future__ import annotations

import os


def close_all(fds: list[int]) -> None:
    """Close every fd in ``fds`` (one already closed is no error) and empty the list."""
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
    fds.clear()
