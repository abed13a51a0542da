"""Process-wide memory settings: glibc malloc's mmap threshold, pinned.

glibc serves allocations at or above its mmap threshold with their own ``mmap`` and returns them
to the system when freed; smaller ones come from the heap, which keeps freed memory for reuse.
The threshold is dynamic by default: each freed mmapped block raises it to that block's size (up
to 32 MiB), so after a few rounds of large numpy temporaries, blocks of several MiB come from the
heap and stay resident in it, fragmented, after the arrays that needed them are gone. Pinning the
threshold turns the adjustment off. No-op off glibc (musl, macOS, Windows).

Off unless ``SENTINEL_MALLOC_PIN=1`` is in the environment: measured at 100k streams
(benchmarks/README.md, "Memory per stream"), it saved 1,261 B RSS per stream but cost throughput:
the bare step ran at 0.53x, end to end 0.94x (not yet profiled; a likely cause: every block of 4 MiB
or more, such as a step slice's gate temporaries, is then a fresh mmap whose pages fault in each time).
"""

from __future__ import annotations

import ctypes
import os
import sys

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
MMAP_THRESHOLD = 4 << 20


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 (glibc only)
        return libc
    except (OSError, AttributeError):
        return None


def pin_mmap_threshold(nbytes: int = MMAP_THRESHOLD) -> bool:
    """Pin glibc's mmap threshold at ``nbytes`` (before the big allocations: at start). True if it was set."""
    if os.environ.get("SENTINEL_MALLOC_PIN", "0") != "1":
        return False
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.mallopt(ctypes.c_int(M_MMAP_THRESHOLD), ctypes.c_int(nbytes)))
