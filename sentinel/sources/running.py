"""The running source: what the runtime wraps around every source plugin (Telegraf's running_input).

A plugin (InfluxDB, PostgreSQL, the simulator) only does its own I/O and parsing:
``run(emit)`` follows new data until stopped and *raises* when it cannot go on;
it sets ``connected = True`` once its server answers. :class:`RunningSource`
adds, once for all of them:

* retry: a plugin whose ``run`` raised is run again after a delay with exponential
  backoff and full jitter (the plugin's ``cfg.backoff_initial`` / ``backoff_max``;
  :func:`~sentinel.retry.backoff_delays`); the delays start afresh once the
  plugin had connected again. A :class:`~sentinel.errors.SourceUnavailable` (the
  server is down) is a warning; any other error is logged as an error and retried no
  faster than the plugin's ``retry_floor`` seconds;
* health: it sets the plugin's ``connected`` to False when ``run`` fails, and is the
  one writer of ``sentinel_source_up{source}`` (refreshed every ``health_interval`` s,
  0 once stopped);
* self-metrics: ``sentinel_source_errors_total{source,kind}`` (``unavailable`` |
  ``error``), one per failed run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Iterator
from typing import Any

from ..errors import SourceError, SourceUnavailable
from ..metrics import SOURCE_ERROR_KINDS, Metrics
from ..retry import backoff_delays
from ..types import Sample, StreamKey
from .base import Emit

log = logging.getLogger("sentinel")


class RunningSource:
    def __init__(self, plugin: Any, metrics: Metrics, *, health_interval: float = 1.0,
                 rng: random.Random | None = None):
        self.plugin = plugin
        self.name: str = plugin.name
        self.health_interval = health_interval
        cfg = getattr(plugin, "cfg", None)
        self._initial = float(getattr(cfg, "backoff_initial", 0.5))
        self._max = float(getattr(cfg, "backoff_max", 30.0))
        self._rng = rng or random.Random()
        self._stop = asyncio.Event()
        metrics.add_source(self.name)  # every series of this source exported as 0 from the start
        self._up = metrics.source_up.labels(self.name)
        self._errors = {k: metrics.source_errors.labels(self.name, k) for k in SOURCE_ERROR_KINDS}
        self.failures = 0  # failed runs since the plugin last connected

    @property
    def connected(self) -> bool:
        return bool(self.plugin.connected) and not self._stop.is_set()

    def http_routes(self) -> list[Any]:
        fn = getattr(self.plugin, "http_routes", None)
        return list(fn()) if fn is not None else []

    async def history(self, keys: list[StreamKey] | None, since: float, until: float) -> list[Sample]:
        return await self.plugin.history(keys, since, until)

    def _delays(self) -> Iterator[float]:
        return backoff_delays(self._initial, self._max, rng=self._rng)

    async def _watch(self) -> None:
        while True:
            self._up.set(1 if self.connected else 0)
            await asyncio.sleep(self.health_interval)

    async def run(self, emit: Emit) -> None:
        """Run the plugin until :meth:`stop`, running it again after a backoff whenever it fails."""
        watch = asyncio.create_task(self._watch(), name=f"health-{self.name}")
        delays = self._delays()
        try:
            while not self._stop.is_set():
                try:
                    await self.plugin.run(emit)
                    return  # it returns only once stopped
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    if self._stop.is_set():
                        return
                    if self.plugin.connected:  # it had connected since the last failure: start afresh
                        delays, self.failures = self._delays(), 0
                    self.plugin.connected = False
                    self._up.set(0)
                    self.failures += 1
                    d = next(delays)
                    if isinstance(e, SourceUnavailable):
                        self._errors["unavailable"].inc()
                        log.warning("%s: %s; retrying in %.2fs", self.name, e, d)
                    else:
                        self._errors["error"].inc()
                        d = max(d, float(getattr(self.plugin, "retry_floor", 0.0)))
                        log.error("%s: %s; retrying in %.2fs", self.name, e, d, exc_info=not isinstance(e, SourceError))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), d)
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
            self._up.set(0)

    async def stop(self) -> None:
        """Stop the plugin (and any retry wait); safe to call twice."""
        self._stop.set()
        self._up.set(0)
        await self.plugin.stop()
