"""The checkpointer: resume from the newest checkpoint, and write one every ``state.checkpoint_interval``.

A checkpoint is *fuzzy* (:mod:`sentinel.runtime.engine.fuzzy`), so that scoring never waits for it
(issue 10: a 100k-stream snapshot cloned in one go stopped the engine thread for seconds):

1. *start*, one engine-thread call: the write-ahead log position scored so far, the sources'
   cursors and the engine-wide data of that moment; the weights are shared, not copied;
2. *copy*: the per-tick state in slot chunks (``state.checkpoint_chunk_bytes`` each, 8 MiB: a few ms), one engine-thread call per chunk, ticks scored in between. Meanwhile every other engine
   call waits (:meth:`EngineThread.hold <sentinel.runtime.engine_thread.EngineThread.hold>`:
   feedback, reloads, history loads, training jobs);
3. *write*, off the engine thread, atomically (:func:`sentinel.state.checkpoint.save`). Until it is
   written no training result is applied (:meth:`Checkpointer.weights_free`), since the file is
   written from the live weights.

The checkpoint records the start's log position and cursors: on restart the log is replayed from
there, and a stream's samples its chunk already holds are skipped, uncounted. :attr:`Checkpointer.last`
says how long each engine-thread step took. :meth:`Checkpointer.snapshot` is the one-go snapshot of
before (kept for comparison: ``benchmarks/bench_e2e.py``).

A checkpoint that is refused (unsafe, truncated, another version, or not fitting
this config) is moved aside and the next older one is tried (the daemon starts
fresh when none is left), or the daemon exits when ``state.on_bad_checkpoint: exit``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from .. import failpoints
from ..config.schema import StateConfig
from ..metrics import Metrics
from ..state import checkpoint as ckpt
from ..state.wal import WalPosition
from .engine import Engine
from .engine.fuzzy import FuzzySnapshot

log = logging.getLogger("sentinel")


class Thread(Protocol):
    """What the checkpoint needs of :class:`~sentinel.runtime.engine_thread.EngineThread`."""

    async def call_now(self, fn: Callable[..., Any], *args: Any) -> Any: ...
    def hold(self) -> None: ...
    def release(self) -> None: ...


@dataclass(frozen=True)
class CheckpointStats:
    """One checkpoint's engine-thread steps (the start, then one per chunk) and phases, in seconds."""

    steps: int
    slots_per_chunk: int
    max_step_s: float  # the longest the engine thread was kept from scoring
    copy_s: float  # start of the first step to the end of the last (ticks scored in between)
    write_s: float


class Checkpointer:
    def __init__(self, cfg: StateConfig, metrics: Metrics, clock: Callable[[], float] = time.time,
                 chunk_bytes: int | None = None):
        """``chunk_bytes``: per-tick state copied per engine-thread step (default ``state.checkpoint_chunk_bytes``)."""
        self.cfg = cfg
        self.metrics = metrics
        self.clock = clock
        self.chunk_bytes = chunk_bytes or cfg.checkpoint_chunk_bytes
        self.restored_wal: WalPosition | None = None
        self.last: CheckpointStats | None = None
        self._lock = asyncio.Lock()  # one checkpoint at a time
        self._idle = asyncio.Event()  # set: no checkpoint shares the engine's weights
        self._idle.set()

    def resume(self, engine: Engine, new_engine: Callable[[], Engine]) -> tuple[Engine, dict[str, dict | None], bool]:
        """Restore the newest checkpoint that loads and fits: ``(engine, cursors, resumed)``.

        A refused checkpoint is moved aside and the next older one is tried, each into a fresh
        engine from ``new_engine()`` (:func:`sentinel.state.checkpoint.restore`); none left: a fresh
        engine. With ``on_bad_checkpoint: exit`` the first refusal raises :class:`CheckpointError`.
        :attr:`restored_wal` is the write-ahead log position the restored checkpoint covers.
        """
        d = Path(self.cfg.dir)
        got: list[Engine] = []

        def apply(c: ckpt.Checkpoint) -> None:
            eng = new_engine()
            eng.restore(c.meta, c.tensors)
            got.append(eng)

        r = ckpt.restore(d, apply, on_bad=self.cfg.on_bad_checkpoint)
        c = r.checkpoint
        if c is None:
            if r.refused:
                log.error("every checkpoint refused; starting fresh", extra={"dir": str(d)})
                return new_engine(), {}, False
            log.info("no checkpoint, starting fresh", extra={"dir": str(d)})
            return engine, {}, False
        engine = got[-1]
        self.restored_wal = c.wal_position
        self.metrics.model_version.set(engine.model_version)
        log.info("resumed from checkpoint", extra={"path": str(c.path), "streams": engine.n_streams,
                                                   "model_version": engine.model_version})
        return engine, dict(c.meta.get("cursors", {})), True

    def snapshot(self, engine: Engine, cursors: dict[str, dict | None],
                 wal: WalPosition | None = None) -> tuple[dict, dict[str, torch.Tensor]]:
        """On the engine thread, in one go: everything to resume, tensors copied so scoring may go on
        (the checkpoint before issue 10; :meth:`save` takes it in chunks instead).

        ``wal``: the write-ahead log position scored so far (stored as ``meta["wal_position"]``).
        """
        meta, tensors = engine.snapshot()
        meta["cursors"] = dict(cursors)
        meta["saved_at"] = self.clock()
        if wal is not None:
            meta[ckpt.WAL_KEY] = wal.to_json()
        return meta, {k: v.clone() for k, v in tensors.items()}

    def write(self, meta: dict, tensors: dict[str, torch.Tensor]) -> Path:
        path = ckpt.save(self.cfg.dir, meta, tensors, self.cfg.keep)
        self.metrics.checkpoint_last_success.set(self.clock())
        return path

    async def weights_free(self) -> None:
        """Return once no checkpoint is being copied or written (a training result may then be applied)."""
        while not self._idle.is_set():
            await self._idle.wait()

    async def save(self, thread: Thread, engine: Engine,
                   start: Callable[[], tuple[WalPosition | None, dict[str, dict | None]]]) -> tuple[Path, WalPosition | None]:
        """Take a fuzzy checkpoint of ``engine`` and write it: ``(path, log position it covers)``.

        ``start()`` runs on the engine thread at the start: ``(write-ahead log position scored so far, cursors)``.
        """
        async with self._lock:
            self._idle.clear()
            thread.hold()
            snap: FuzzySnapshot | None = None
            times: list[float] = []
            try:
                def begin() -> tuple[FuzzySnapshot, WalPosition | None, dict[str, dict | None]]:
                    t = time.perf_counter()
                    wal, cursors = start()
                    s = FuzzySnapshot(engine, self.chunk_bytes)
                    times.append(time.perf_counter() - t)
                    return s, wal, dict(cursors)

                def step() -> bool:
                    t = time.perf_counter()
                    assert snap is not None
                    done = snap.step()
                    times.append(time.perf_counter() - t)
                    if failpoints.ARMED:
                        failpoints.hit("checkpoint.copy")
                    return done

                t0 = time.perf_counter()
                snap, wal, cursors = await thread.call_now(begin)
                await asyncio.to_thread(snap.allocate)  # page faults off the engine thread
                while not await thread.call_now(step):
                    pass
                t1 = time.perf_counter()
                thread.release()  # copied: other engine calls may go on (training results wait for the write)
                meta, tensors = await asyncio.to_thread(snap.result)
                meta["cursors"] = cursors
                meta["saved_at"] = self.clock()
                if wal is not None:
                    meta[ckpt.WAL_KEY] = wal.to_json()
                path = await asyncio.to_thread(self.write, meta, tensors)
                self.last = CheckpointStats(len(times), snap.slots_per_chunk, max(times), t1 - t0,
                                            time.perf_counter() - t1)
            finally:
                thread.release()
                if snap is not None:
                    snap.release()
                self._idle.set()
            del meta, tensors
            for _ in snap.free():  # a buffer at a time, so that no one free holds the GIL long
                await asyncio.sleep(0)
        log.info("checkpoint written", extra={"path": str(path), "streams": engine.n_streams,
                                              "steps": self.last.steps, "max_step_s": round(self.last.max_step_s, 4),
                                              "write_s": round(self.last.write_s, 2)})
        return path, wal

    async def run(self, save: Callable[[], Awaitable[Any]]) -> None:
        """``await save()`` every ``checkpoint_interval`` (read each time: a reload may change it)."""
        while True:
            await asyncio.sleep(self.cfg.checkpoint_interval)
            try:
                await save()
            except Exception:
                log.exception("checkpoint failed")
