"""Background training in a separate process, so scoring keeps its core.

A single-worker process pool (spawned, not forked: torch and threads do not mix
with fork) runs :func:`sentinel.model.train.train` with a bounded thread count;
the runtime applies the result on its scoring thread.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os

from ..model.train import TrainJob, TrainResult, TrainSettings, train


def _init_worker(threads: int) -> None:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    torch.set_num_threads(max(1, threads))


def _run(job: TrainJob, settings: TrainSettings, device: str) -> TrainResult:
    return train(job, settings, device=device)


class BackgroundTrainer:
    """Submit jobs to a worker process; ``inline=True`` trains in the calling thread (tests, replay)."""

    def __init__(self, device: str, threads: int, inline: bool = False):
        self.device = device
        self.inline = inline
        self._pool: cf.ProcessPoolExecutor | None = None
        if not inline:
            self._pool = cf.ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn"),
                                                initializer=_init_worker, initargs=(threads,))

    def submit(self, job: TrainJob, settings: TrainSettings) -> cf.Future:
        """Train ``job`` with ``settings`` (passed per job: a reload of ``train.*`` applies to the next)."""
        if self._pool is None:
            f: cf.Future = cf.Future()
            try:
                f.set_result(_run(job, settings, self.device))
            except Exception as e:  # reported through the future, as the pool does
                f.set_exception(e)
            return f
        return self._pool.submit(_run, job, settings, self.device)

    def shutdown(self, timeout: float = 5.0) -> None:
        """Drop queued jobs and end the worker now: a job in flight is abandoned (re-issued after a restart).

        Without terminating the worker, interpreter exit would wait for the job in flight to finish,
        so SIGTERM during a long training would take as long as the training.
        """
        if self._pool is None:
            return
        pool, self._pool = self._pool, None
        procs = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout)
