"""The checkpointer: resume from the newest checkpoint, and write one every ``state.checkpoint_interval``.

A snapshot is taken on the engine thread (so it matches the cursors of what was
scored) and written off it, atomically (:func:`sentinel.state.checkpoint.save`). A
checkpoint that is refused (unsafe, truncated, another version, or not fitting
this config) is moved aside and the daemon starts fresh, or exits when
``state.on_bad_checkpoint: exit``.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import torch

from ..config.schema import StateConfig
from ..errors import CheckpointError
from ..metrics import Metrics
from ..state import checkpoint as ckpt
from .engine import Engine

log = logging.getLogger("sentinel")


class Checkpointer:
    def __init__(self, cfg: StateConfig, metrics: Metrics, clock: Callable[[], float] = time.time):
        self.cfg = cfg
        self.metrics = metrics
        self.clock = clock

    def resume(self, engine: Engine, new_engine: Callable[[], Engine]) -> tuple[Engine, dict[str, dict | None], bool]:
        """Restore the newest checkpoint into ``engine``: ``(engine, cursors, resumed)``.

        A refused checkpoint is moved aside and a fresh engine from ``new_engine()`` is
        returned (or :class:`CheckpointError` raised with ``on_bad_checkpoint: exit``).
        """
        d = Path(self.cfg.dir)
        try:
            c = ckpt.load_latest(d)
            if c is None:
                log.info("no checkpoint, starting fresh", extra={"dir": str(d)})
                return engine, {}, False
            try:
                engine.restore(c.meta, c.tensors)
            except Exception as e:  # it loaded safely but does not fit: missing keys, wrong shapes or types
                raise CheckpointError(f"{c.path}: does not fit this config ({type(e).__name__}: {e})") from None
        except CheckpointError as e:
            if self.cfg.on_bad_checkpoint == "exit":
                raise CheckpointError(f"cannot resume: {e} (state.on_bad_checkpoint: exit)") from None
            for p in ckpt.list_checkpoints(d)[-1:]:
                aside = p.with_name(p.name + ".bad")
                shutil.move(p, aside)
                log.error("checkpoint refused, moved aside; starting fresh",
                          extra={"error": str(e), "moved_to": str(aside)})
            return new_engine(), {}, False
        self.metrics.model_version.set(engine.model_version)
        log.info("resumed from checkpoint", extra={"path": str(c.path), "streams": engine.n_streams,
                                                   "model_version": engine.model_version})
        return engine, dict(c.meta.get("cursors", {})), True

    def snapshot(self, engine: Engine, cursors: dict[str, dict | None]) -> tuple[dict, dict[str, torch.Tensor]]:
        """On the engine thread: everything to resume, tensors copied so scoring may go on."""
        meta, tensors = engine.snapshot()
        meta["cursors"] = dict(cursors)
        meta["saved_at"] = self.clock()
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
