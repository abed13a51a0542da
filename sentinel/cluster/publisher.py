"""The router's output: samples, grouped by partition, published to JetStream and acknowledged.

:meth:`Publisher.publish` returns once JetStream has stored every message holding its samples
(``PubAck``), so a write answered 2xx by a router survives the router's death. Per partition,
samples handed over while the partition's previous message is being stored (concurrent writes),
or within ``linger`` seconds (default 0: no added latency), travel in one message: fewer, fuller
messages cost the router and the scorers less per sample. A stream's
samples always go to the same subject, in the order they were handed over (one flush at a time
per partition).
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
    def __init__(self, nats: Nats, metrics: RouterMetrics, timeout: float = 10.0, linger: float = 0.0):
        self.nats = nats
        self.partitions = nats.cfg.partitions
        self.metrics = metrics
        self.timeout = timeout
        self.linger = linger
        self._locks: dict[int, asyncio.Lock] = {}
        self._pending: dict[int, list[tuple[list[Sample], asyncio.Future]]] = {}
        self._cache: dict[object, int] = {}  # stream key -> partition (bounded: cleared past CACHE_KEYS)
        self._tasks: set[asyncio.Task] = set()

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

    async def _flush(self, p: int) -> None:
        lock = self._locks.setdefault(p, asyncio.Lock())
        async with lock:  # a partition's messages in the order they were handed over
            if self.linger > 0:
                await asyncio.sleep(self.linger)
            waiting = self._pending.pop(p, [])
            samples = [s for ss, _ in waiting for s in ss]
            try:
                for a in range(0, len(samples), MAX_MESSAGE_SAMPLES):
                    await self.nats.js.publish(self.nats.subject(p), codec.encode(samples[a:a + MAX_MESSAGE_SAMPLES]),
                                               timeout=self.timeout)
            except Exception as e:
                for _, f in waiting:
                    if not f.done():
                        f.set_exception(e)
                return
            for _, f in waiting:
                if not f.done():
                    f.set_result(None)

    async def publish(self, samples: Sequence[Sample]) -> bool:
        """Publish ``samples``; True once all are stored, False (logged, counted) if not."""
        if not samples:
            return True
        loop = asyncio.get_running_loop()
        futs = []
        for p, ss in self.split(samples).items():
            f = loop.create_future()
            first = p not in self._pending
            self._pending.setdefault(p, []).append((ss, f))
            if first:
                t = loop.create_task(self._flush(p))
                self._tasks.add(t)
                t.add_done_callback(self._tasks.discard)
            futs.append(f)
        try:
            await asyncio.gather(*futs)
        except Exception as e:
            self.metrics.publish_errors.inc()
            log.warning("publish to JetStream failed: %s", e)
            return False
        self.metrics.published.inc(len(samples))
        return True
