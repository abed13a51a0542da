"""The running source: what the runtime wraps around every source plugin.

A plugin (InfluxDB, PostgreSQL, the simulator) only does its own I/O and parsing:
``run(emit)`` follows new data, ``history()`` reads the past, ``connected`` says
whether its server answers. :class:`RunningSource` adds, once for all of them:

* health: it is the one writer of ``sentinel_source_up{source}`` (from the plugin's
  ``connected``, every ``health_interval`` seconds, and 0 when the plugin ends or fails);
* containment: a plugin that raises is logged with its name and restarted after a
  backoff with full jitter (:func:`~sentinel.sources.base.backoff_delays`), never
  taking the daemon down;
* self-metrics: ``sentinel_source_restarts_total{source}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import Any

from ..metrics import Metrics
from ..types import Sample, StreamKey
from .base import Emit, Source, backoff_delays

log = logging.getLogger("sentinel")


class RunningSource:
    def __init__(self, plugin: Source, metrics: Metrics, *, health_interval: float = 1.0,
                 backoff_initial: float = 1.0, backoff_max: float = 60.0, rng: random.Random | None = None):
        self.plugin = plugin
        self.name = plugin.name
        self.metrics = metrics
        self.health_interval = health_interval
        self._delays = lambda: backoff_delays(backoff_initial, backoff_max, rng=rng)
        self._stopping = False
        self._up = metrics.source_up.labels(self.name)
        self._up.set(0)
        self._restarts = metrics.source_restarts.labels(self.name)

    @property
    def connected(self) -> bool:
        return bool(self.plugin.connected)

    def http_routes(self) -> list[Any]:
        fn = getattr(self.plugin, "http_routes", None)
        return list(fn()) if fn is not None else []

    async def history(self, keys: list[StreamKey] | None, since: float, until: float) -> list[Sample]:
        return await self.plugin.history(keys, since, until)

    def _health(self) -> None:
        self._up.set(1 if self.plugin.connected and not self._stopping else 0)

    async def _watch(self) -> None:
        while True:
            self._health()
            await asyncio.sleep(self.health_interval)

    async def run(self, emit: Emit) -> None:
        """Run the plugin until :meth:`stop`; a plugin that fails is restarted after a backoff."""
        watch = asyncio.create_task(self._watch(), name=f"health-{self.name}")
        delays = None
        try:
            while not self._stopping:
                try:
                    await self.plugin.run(emit)
                    return  # the plugin ended by itself (stopped)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    if self._stopping:
                        return
                    delays = delays or self._delays()
                    d = next(delays)
                    log.exception("source failed; restarting it", extra={"source": self.name,
                                                                          "retry_in": round(d, 2)})
                    self._up.set(0)
                    self._restarts.inc()
                    await asyncio.sleep(d)
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
            self._up.set(0)

    async def stop(self) -> None:
        self._stopping = True
        await self.plugin.stop()
        self._up.set(0)
