"""Backfill (subscription mode): catch up from the database while pushes are held, then release them minus the overlap."""

from __future__ import annotations

import asyncio
import contextlib

from ...types import Sample
from ..base import Emit
from ..receiver import Pushed
from .core import InfluxDBCore
from .query import _FAR_FUTURE_NS


class Backfill(InfluxDBCore):
    def _hold(self, p: Pushed) -> None:
        n = len(p.outcome.samples)
        if self._held + n > self.cfg.receiver.push_buffer:
            self.stats["push_buffer_dropped"] += n
            return
        self._held += n
        self._buffer.append(p)

    async def _backfill(self, emit: Emit) -> bool:
        """Catch up ``time > t`` from the database while holding pushes; release them minus the overlap.

        Returns True when a push had arrived before the catch-up began (then every write
        before it is covered and the source can go live).
        """

        def drain_nowait() -> None:
            while not self._queue.empty():
                self._hold(self._queue.get_nowait())

        async def drainer() -> None:
            while True:
                self._hold(await self._queue.get())

        drain_nowait()
        saw_push = bool(self._buffer)
        self.stats["backfill_rounds"] += 1
        task = asyncio.create_task(drainer())
        # Per-stream newest timestamp handed over, kept across rounds: a push held after one round
        # may carry points an earlier round already read from the database.
        last = self._emitted
        try:
            t = self._start_t()
            while True:
                samples, rejected, end, cut, newest = await self._page(t, _FAR_FUTURE_NS)
                for s in samples:
                    last[s.key] = s.ts
                self._t = end if cut else max(t, newest)
                if samples or rejected:
                    await emit(self._batch(samples, rejected))
                if not cut:
                    break
                t = end
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        drain_nowait()
        # Release the held pushes, minus what the catch-up already handed over.
        merged: list[Sample] = []
        rejected_total: dict[str, int] = {}
        max_ns = self._t if self._t is not None else -1
        for p in self._buffer:
            for k, v in p.outcome.rejected.items():
                rejected_total[k] = rejected_total.get(k, 0) + v
            max_ns = max(max_ns, p.outcome.max_ts_ns)
            merged.extend(p.outcome.samples)
        self._buffer = []
        self._held = 0
        merged.sort(key=lambda s: s.ts)
        fresh = []
        for s in merged:
            lt = last.get(s.key)
            if lt is not None and s.ts <= lt:
                self.stats["deduplicated"] += 1
                continue
            last[s.key] = s.ts
            fresh.append(s)
        self._t = max_ns
        if fresh or rejected_total:
            await emit(self._batch(fresh, rejected_total))
        return saw_push


