"""Polling (InfluxQL or Flux): read the window ``(cursor, now - lateness]`` page by page."""

from __future__ import annotations

from ..base import Emit
from .core import InfluxDBCore
from .query import _NS


class Polling(InfluxDBCore):
    async def _run_poll(self, emit: Emit) -> None:
        """Poll until stopped; a failure propagates (RunningSource retries with backoff)."""
        while not self._stop.is_set():
            more = await self.poll_once(emit)
            self.connected = True
            if not more:
                await self._sleep(self.cfg.poll_interval)

    async def poll_once(self, emit: Emit) -> bool:
        """Read one page after the cursor; emit it; return True when more pages are waiting."""
        t = self._start_t()
        upper = self._now_ns() - int(self.cfg.lateness * _NS)
        if upper <= t:
            return False
        samples, rejected, end, cut, _newest = await self._page(t, upper)
        self._t = end
        if samples or rejected:
            await emit(self._batch(samples, rejected))
        return cut

