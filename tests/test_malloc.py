"""pylog serve keeps freed memory for the next batch (pylog.malloc): building and freeing
1 MiB messages over and over must not make the kernel fault in fresh pages each time."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

PROGRAM = """
import resource, sys
from pylog.malloc import keep_freed_memory
if sys.argv[1] == "tuned":
    assert keep_freed_memory()
parts = [b"x" * 4096] * 256


def batch():
    msgs = [b"".join(parts) for _ in range(6)]  # a batch: six messages of 1 MiB, sent, freed
    del msgs


for _ in range(5):  # warm up
    batch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):  # 300 MiB of messages
    batch()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROGRAM, mode], check=True,
                         capture_output=True, text=True)
    return int(out.stdout)


# (Asked without calling keep_freed_memory, which would change this test process's malloc.)
GLIBC = platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not GLIBC, reason="not glibc: pylog leaves malloc alone")
def test_messages_built_and_freed_reuse_memory() -> None:
    tuned = faults("tuned")
    assert tuned < 1000, f"{tuned} page faults for 300 MiB of messages built and freed"


@pytest.mark.skipif(not GLIBC, reason="not glibc: pylog leaves malloc alone")
def test_without_it_each_message_is_faulted_in() -> None:
    """What the setting is for (if glibc changes its defaults, this says the setting may no
    longer be needed)."""
    assert faults("default") > 10_000
