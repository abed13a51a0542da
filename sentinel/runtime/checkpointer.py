"""The checkpointer: resume from the newest checkpoint, and write one every ``state.checkpoint_interval``.

A snapshot is taken on the engine thread (so it matches the cursors of what was
scored) and written off it, atomically (:func:`sentinel.state.checkpoint.save`). A
checkpoint that is refused (unsafe, truncated, another version, or not fitting
this config) is moved aside and the next older one is tried (the daemon starts
fresh when none is left), or the daemon exits when ``state.on_bad_checkpoint: exit``.
A checkpoint records the write-ahead log position it covers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import torch

from ..config.schema import StateConfig
from ..metrics import Metrics
from ..state import checkpoint as ckpt
from ..state.wal import WalPosition
from .engine import Engine

log = logging.getLogger("sentinel")


class Checkpointer:
    def __init__(self, cfg: StateConfig, metrics: Metrics, clock: Callable[[], float] = time.time):
        self.cfg = cfg
        self.metrics = metrics
        self.clock = clock
        self.restored_wal: WalPosition | None = None

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
        """On the engine thread: everything to resume, tensors copied so scoring may go on.

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

    async def save(self, snapshot: Callable[[], Awaitable[tuple[dict, dict[str, torch.Tensor]]]],
                   streams: int = 0) -> Path:
        meta, tensors = await snapshot()
        path = await asyncio.to_thread(self.write, meta, tensors)
        log.info("checkpoint written", extra={"path": str(path), "streams": streams})
        return path

    async def run(self, save: Callable[[], Awaitable[Any]]) -> None:
        """``await save()`` every ``checkpoint_interval`` (read each time: a reload may change it)."""
        while True:
            await asyncio.sleep(self.cfg.checkpoint_interval)
            try:
                await save()
            except Exception:
                log.exception("checkpoint failed")
