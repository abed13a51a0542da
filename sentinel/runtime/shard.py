"""``--shard I/N``: which streams this process scores (rendezvous hashing)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from ..config import ConfigError
from ..types import Sample, StreamKey


def parse_shard(shard: str | None) -> tuple[int, int] | None:
    """``"I/N"`` -> ``(I, N)``; ``None`` or ``""`` -> no sharding.

    >>> parse_shard(" 1 / 4 "), parse_shard(None)
    ((1, 4), None)
    """
    if not shard:
        return None
    try:
        i, n = (int(x) for x in shard.split("/"))
    except ValueError:
        raise ConfigError(f"--shard: expected I/N, got {shard!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ConfigError(f"--shard: need 0 <= I < N, got {shard!r}")
    return i, n


def owner(key: StreamKey, n: int) -> int:
    """Rendezvous (highest random weight) hashing: the shard that owns ``key`` among ``n``."""
    k = str(key).encode()
    best, arg = -1, 0
    for i in range(n):
        w = int.from_bytes(hashlib.blake2b(k + b"\x00" + str(i).encode(), digest_size=8).digest(), "big")
        if w > best:
            best, arg = w, i
    return arg


class Shard:
    """Keeps the samples of the streams shard ``i`` of ``n`` owns; ``Shard(None)`` keeps all."""

    def __init__(self, shard: tuple[int, int] | None):
        self.shard = shard

    def keep(self, samples: Iterable[Sample]) -> list[Sample]:
        if self.shard is None:
            return samples if isinstance(samples, list) else list(samples)
        i, n = self.shard
        return [s for s in samples if owner(s.key, n) == i]
