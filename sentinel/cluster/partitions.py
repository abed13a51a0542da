"""Which partition a stream goes to, and which scorer owns a partition.

* ``partition_of(key, P)``: a stable hash of the stream key (blake2b of ``str(key)``) mod P,
  the same in every process and release (never Python's salted ``hash``).
* ``owner_of(p, n)``: rendezvous (highest random weight) hashing of partition ``p`` over
  scorers ``0..n-1``: going from n to n+1 scorers moves only the partitions the new scorer
  wins, about P/(n+1) of them; every other partition keeps its owner.
"""

from __future__ import annotations

import hashlib
import re

from ..types import StreamKey


def _h64(b: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(b, digest_size=8).digest(), "big")


def partition_of(key: StreamKey | str, partitions: int) -> int:
    """The partition of ``key`` among ``partitions``.

    >>> partition_of("pump,site=a", 64) == partition_of(StreamKey.parse("pump,site=a"), 64)
    True
    """
    return _h64(str(key).encode()) % partitions


def owner_of(partition: int, n: int) -> int:
    """The scorer (``0..n-1``) that owns ``partition``.

    >>> moved = [p for p in range(64) if owner_of(p, 2) != owner_of(p, 3)]
    >>> all(owner_of(p, 3) == 2 for p in moved)
    True
    """
    best, arg = -1, 0
    pb = str(partition).encode()
    for i in range(n):
        w = _h64(pb + b"\x00" + str(i).encode())
        if w > best:
            best, arg = w, i
    return arg


def owned(index: int, n: int, partitions: int) -> list[int]:
    """The partitions scorer ``index`` of ``n`` owns, ascending."""
    return [p for p in range(partitions) if owner_of(p, n) == index]


_ORDINAL = re.compile(r"-(\d+)$")


def ordinal(hostname: str) -> int | None:
    """The StatefulSet ordinal at the end of a pod's hostname (``sentinel-scorer-2`` -> 2), or None.

    >>> ordinal("sentinel-scorer-2"), ordinal("laptop")
    (2, None)
    """
    m = _ORDINAL.search(hostname.split(".")[0])
    return int(m.group(1)) if m else None
