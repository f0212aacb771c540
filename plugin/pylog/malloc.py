"""Keeping freed memory for the next batch instead of handing it back to the kernel.

Every batch a sink sends is built as a few large ``bytes`` (fluentd: messages of up to 1 MiB).
With glibc's default, dynamic thresholds, freeing such a buffer often trims the heap (or
unmaps it), so the next one is fresh memory that the kernel must fault in page by page. Fixed
thresholds keep up to 64 MiB of freed memory at the top of the heap for reuse: a quarter less
of pylog's CPU in B1 through the fluentd sink, at the same peak RSS (bench/run.py).

glibc only: elsewhere (musl, say) nothing is changed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # from glibc's <malloc.h>
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
TRIM_THRESHOLD = 64 << 20  # free memory at the top of the heap kept, not given back
MMAP_THRESHOLD = 16 << 20  # smaller blocks come from the heap, not from their own mmap
# One heap for every thread: the workers decode batches the event loop then frees, and an
# arena of their own kept its own freed memory besides the main heap's.
ARENA_MAX = 1


def keep_freed_memory() -> bool:
    """Set the thresholds (True), or leave the allocator as it is (False: not glibc)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        log.debug("no glibc mallopt: allocator thresholds left as they are")
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
                and mallopt(M_ARENA_MAX, ARENA_MAX))
