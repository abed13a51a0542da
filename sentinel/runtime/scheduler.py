"""The trainer scheduler: the one due -> train -> apply loop.

``sentinel run`` calls :meth:`TrainingScheduler.run` (engine calls on the engine thread,
training in the worker process, one job at a time); ``sentinel train`` (and a backtest)
call :meth:`TrainingScheduler.run_once_sync` (everything inline, in order). Both go
through the same :meth:`~TrainingScheduler.due` and :meth:`~TrainingScheduler.finish`,
so a job is counted, logged and applied the same way everywhere.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..metrics import Metrics
from ..model.train import TrainJob, TrainResult, TrainSettings, train
from .engine import Engine

log = logging.getLogger("sentinel")

EngineCall = Callable[..., Awaitable[Any]]
Progress = Callable[[int, int, float], None]


async def _direct(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


class TrainingScheduler:
    """Trains what :meth:`Engine.due_training` hands out and applies the results.

    ``call``: runs an engine method where the engine lives (default: right here).
    ``trainer``: an object with ``submit(job, settings) -> concurrent.futures.Future``
    (:class:`~sentinel.runtime.trainer.BackgroundTrainer`); only :meth:`run` needs it.
    """

    def __init__(self, engine: Engine, *, metrics: Metrics | None = None, clock: Callable[[], float] = time.time,
                 device: str = "cpu", trainer: Any = None, call: EngineCall = _direct,
                 gate: Callable[[], Awaitable[Any]] | None = None):
        """``gate``: awaited before a result is applied (the daemon's: no checkpoint shares the weights)."""
        self.engine = engine
        self.gate = gate
        self.metrics = metrics
        self.clock = clock
        self.device = device
        self.trainer = trainer
        self.call = call
        self.inflight = 0  # jobs handed out and not yet applied (or failed)

    def _level(self) -> int:
        """``train.progress``: each job is logged at info level, else at debug (read at each job: live)."""
        return logging.INFO if self.engine.cfg.train.progress else logging.DEBUG

    def due(self, now: float) -> list[TrainJob]:
        jobs = self.engine.due_training(now)
        for job in jobs:
            retrain = bool(job.has_champion is not None and job.has_champion.any())
            log.log(self._level(), "training started",
                    extra={"streams": len(job.seeds), "device": self.device, "retrain": retrain})
        return jobs

    def finish(self, job: TrainJob, res: TrainResult, now: float, seconds: float) -> dict[str, int]:
        """Apply a result (on the engine's thread); count and log it."""
        counts = self.engine.apply_training(job, res, now)
        if self.metrics is not None:
            self.metrics.retrain_duration_seconds.observe(seconds)
            for r, c in counts.items():
                self.metrics.retrain.labels(r).inc(c)
            self.metrics.model_version.set(self.engine.model_version)
        log.log(self._level(), "training done",
                extra={"streams": len(job.seeds), "accepted": counts["success"], "rejected": counts["rejected"],
                       "epochs": res.epochs, "seconds": round(seconds, 2), "model_version": self.engine.model_version})
        return counts

    def fail(self, job: TrainJob) -> None:
        """A job whose training raised: counted, and its streams may be scheduled again."""
        log.exception("training failed")
        if self.metrics is not None:
            self.metrics.retrain.labels("failure").inc(len(job.seeds))
        self.engine.release_job(job)

    # -- inline: sentinel train, backtests -------------------------------------------------
    def run_once_sync(self, now: float | None = None, progress: Callable[[int, int], Progress] | None = None
                      ) -> list[dict[str, int]]:
        """Train every due job now, in order, in this thread. ``progress(i, n)`` gives job i's epoch callback."""
        now = self.clock() if now is None else now
        jobs = self.due(now)
        out = []
        for i, job in enumerate(jobs):
            t0 = time.perf_counter()
            res = train(job, self.settings, device=self.device,
                        progress=progress(i, len(jobs)) if progress is not None else None)
            out.append(self.finish(job, res, now, time.perf_counter() - t0))
        return out

    @property
    def settings(self) -> TrainSettings:
        return self.engine.settings  # read at each job: a reload of train.* applies to the next one

    # -- the daemon --------------------------------------------------------------------------
    async def run_once(self) -> int:
        """One pass: every due job trained in the worker and applied on the engine thread. Returns jobs."""
        jobs = await self.call(self.due, self.clock())
        self.inflight = len(jobs)
        try:
            for job in jobs:
                t0 = time.perf_counter()
                try:
                    res = await asyncio.wrap_future(self.trainer.submit(job, self.settings))
                except asyncio.CancelledError:
                    raise
                except Exception:
                    await self.call(self.fail, job)
                    continue
                finally:
                    self.inflight -= 1
                if self.gate is not None:
                    await self.gate()
                await self.call(self.finish, job, res, self.clock(), time.perf_counter() - t0)
        finally:
            self.inflight = 0
        return len(jobs)

    async def run(self, interval: float = 1.0) -> None:
        """Every ``interval`` seconds, :meth:`run_once` (jobs in flight are waited for first)."""
        while True:
            await asyncio.sleep(interval)
            await self.run_once()
