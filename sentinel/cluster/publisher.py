"""The router's output: samples, grouped by partition, published to JetStream and acknowledged.

:meth:`Publisher.publish` returns once JetStream has stored every message (``PubAck``), so a
write answered 2xx by a router survives the router's death. A stream's samples always go to
the same subject, in order: one body's messages for different partitions are published
concurrently, each partition's in order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from ..types import Sample
from . import codec
from .js import Nats
from .metrics import RouterMetrics
from .partitions import partition_of

log = logging.getLogger("sentinel")

CACHE_KEYS = 200_000
MAX_MESSAGE_SAMPLES = 5000  # one message stays far below NATS' default 1 MiB payload limit


class Publisher:
    def __init__(self, nats: Nats, metrics: RouterMetrics, timeout: float = 10.0):
        self.nats = nats
        self.partitions = nats.cfg.partitions
        self.metrics = metrics
        self.timeout = timeout
        self._locks: dict[int, asyncio.Lock] = {}
        self._cache: dict[object, int] = {}  # stream key -> partition (bounded: cleared past CACHE_KEYS)

    def split(self, samples: Sequence[Sample]) -> dict[int, list[Sample]]:
        by: dict[int, list[Sample]] = {}
        cache = self._cache
        if len(cache) > CACHE_KEYS:
            cache.clear()
        P = self.partitions
        for s in samples:
            p = cache.get(s.key)
            if p is None:
                p = cache[s.key] = partition_of(s.key, P)
            by.setdefault(p, []).append(s)
        return by

    async def _one(self, p: int, samples: list[Sample]) -> None:
        lock = self._locks.setdefault(p, asyncio.Lock())
        async with lock:  # a partition's messages in the order they were handed over
            for a in range(0, len(samples), MAX_MESSAGE_SAMPLES):
                await self.nats.js.publish(self.nats.subject(p), codec.encode(samples[a:a + MAX_MESSAGE_SAMPLES]),
                                           timeout=self.timeout)

    async def publish(self, samples: Sequence[Sample]) -> bool:
        """Publish ``samples``; True once all are stored, False (logged, counted) if not."""
        if not samples:
            return True
        try:
            await asyncio.gather(*(self._one(p, ss) for p, ss in self.split(samples).items()))
        except Exception as e:
            self.metrics.publish_errors.inc()
            log.warning("publish to JetStream failed: %s", e)
            return False
        self.metrics.published.inc(len(samples))
        return True
