"""Published model versions (``sentinel train --publish``) and the scorers that pick them up.

The trainer writes, per partition, the trained parameters of the partition's streams to the
object store (``model/<version>/p<p>``) and then announces ``{"version": v}`` in the KV key
``model``. Each scorer watches that key (polled every ``interval`` s) and, for every partition it
owns, loads the version's object and hands it to the engine thread as a training result (the
engine's champion/challenger and re-warm apply as for a local retrain); then it sets
``sentinel_partition_model_version{partition}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from .js import Nats, kv_get
from .metrics import ScorerMetrics

log = logging.getLogger("sentinel")

KEY = "model"


def model_object(version: int, p: int) -> str:
    return f"model/{version}/p{p}"


class ModelWatch:
    def __init__(self, nats: Nats, metrics: ScorerMetrics, partitions: list[int], interval: float = 0.5):
        self.nats = nats
        self.metrics = metrics
        self.partitions = list(partitions)
        self.interval = interval
        self.version = 0
        self.applied: dict[int, int] = {}

    async def announced(self) -> int:
        e = await kv_get(self.nats.kv, KEY)
        return int(json.loads(e.value).get("version", 0)) if e is not None else 0

    async def run(self, daemon: Any) -> None:
        from .publish import apply_published  # the engine side of a published model

        while True:
            try:
                v = await self.announced()
                if v > self.version:
                    for p in self.partitions:
                        if self.applied.get(p, 0) >= v:
                            continue
                        data = await self.nats.objects.get(model_object(v, p))
                        c = await daemon.thread.call(apply_published, daemon.engine, bytes(data.data), daemon.clock())
                        self.applied[p] = v  # offered once: a stream that kept its champion is not asked again
                        # The newest version p's streams were offered and judged (champion/challenger):
                        # a stream whose champion did better keeps it, and the log line counts those.
                        self.metrics.model_version.labels(str(p)).set(v)
                        log.info("model version applied", extra={"partition": p, "version": v,
                                                                 "streams": c["success"], "kept_champion": c["rejected"]})
                    self.version = v
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("model watch: %s", e)
            await asyncio.sleep(self.interval)
