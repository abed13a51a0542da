"""The simulator as a source: the fleet's samples in (accelerated) real time, resumable from its cursor."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable

from ...config.source_simulator import SimulatorSourceConfig
from ...types import Sample, SourceBatch, StreamKey
from ..base import Emit
from .fleet import Fleet


class SimulatorSource:
    """The :class:`~sentinel.sources.base.Source` over a :class:`Fleet`.

    Simulated time is ``t_resume + (clock() - clock_at_run_start) * cfg.speed``, where
    ``t_resume`` is ``resume["t"]`` or ``clock()`` at construction. Each wake-up emits
    the samples in ``[cursor, now)`` (chunked to ``cfg.max_batch``) with cursor
    ``{"t": now, "start": fleet.start}``; a source rebuilt from that cursor continues
    at ``t`` with the same fleet, so nothing is skipped or repeated.
    """

    def __init__(self, cfg: SimulatorSourceConfig, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, resume: dict | None = None):
        self.name = cfg.name
        self.cfg = cfg
        self._clock, self._sleep = clock, sleep
        if resume and "t" in resume:
            self._t = float(resume["t"])
            start = float(resume.get("start", self._t))
        else:
            self._t = float(clock())
            start = self._t
        self.fleet = Fleet(cfg, start=start)
        self._stop = asyncio.Event()
        self._done = asyncio.Event()
        self._running = False
        self._task: asyncio.Task | None = None
        self.connected = True  # nothing to connect to (RunningSource clears it while a failed run waits)

    @property
    def cursor(self) -> dict:
        return {"t": self._t, "start": self.fleet.start}

    async def run(self, emit: Emit) -> None:
        if self._stop.is_set():
            return
        self._running = True
        self._task = asyncio.current_task()
        self._done.clear()
        try:
            anchor_real, anchor_sim = self._clock(), self._t
            iv, speed = self.fleet.interval, self.cfg.speed
            span = max(1, self.cfg.max_batch // max(1, self.cfg.streams)) * iv
            while not self._stop.is_set():
                now = anchor_sim + (self._clock() - anchor_real) * speed
                while self._t < now and not self._stop.is_set():
                    t1 = min(now, self._t + span)
                    samples = self.fleet.samples(self._t, t1)
                    self._t = t1
                    if samples:
                        await emit(SourceBatch(self.name, samples, self.cursor, received_at=self._clock()))
                next_tick = math.ceil(self._t / iv) * iv
                await self._wait(max(next_tick - now, 0.0) / speed + 1e-3)
        finally:
            self._running = False
            self._done.set()

    async def _wait(self, delay: float) -> None:
        """Sleep ``delay`` seconds through the injected ``sleep``, cut short by ``stop()``."""
        sleeper = asyncio.ensure_future(self._sleep(delay))
        stopper = asyncio.ensure_future(self._stop.wait())
        _, pending = await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        for p in pending:
            p.cancel()

    async def stop(self) -> None:
        """Stop following; returns once ``run`` has returned (at once when called from inside ``emit``)."""
        self._stop.set()
        if self._running and asyncio.current_task() is not self._task:
            await self._done.wait()

    async def history(self, keys: list[StreamKey] | None, since: float, until: float) -> list[Sample]:
        return self.fleet.samples(since, until, keys)
