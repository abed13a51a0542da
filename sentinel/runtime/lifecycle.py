"""``sentinel run``'s outer loop: build the role (this daemon, or a cluster router or scorer), run it
until SIGTERM/SIGINT (or a scorer's request to restart), reload it on SIGHUP, stop it in order."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import torch

from ..config import SentinelConfig
from . import memory
from .daemon import Daemon
from .logs import setup_logging


async def _amain(cfg: SentinelConfig, config_path: str | None, shard: str | None,
                 overrides: list[tuple[str, Any, str]] | None = None, role: str = "all") -> int:
    cluster: Any = None
    if role == "router":
        from ..cluster.router import Router

        d: Any = Router(cfg)
    else:
        if role == "scorer":
            from ..cluster.scorer import ScorerRole

            cfg = cfg.model_copy(update={"state": cfg.state.model_copy(
                update={"checkpoint_interval": cfg.cluster.checkpoint_interval})})
        d = Daemon(cfg, config_path=config_path, shard=shard, overrides=overrides)
        if role == "scorer":
            d.cluster = cluster = ScorerRole(cfg, d.metrics, d.clock)
    await d.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task] = set()

    def _hup() -> None:
        t = asyncio.ensure_future(d.reload())
        reloads.add(t)
        t.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, _hup)
    restart = asyncio.ensure_future(cluster.exit_requested.wait()) if cluster is not None else None
    waits = [asyncio.ensure_future(stop.wait()), *([restart] if restart is not None else [])]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for w in waits:
        w.cancel()
    await d.stop()
    return 75 if restart is not None and restart.done() and not restart.cancelled() else 0


def main(cfg: SentinelConfig, config_path: str | None = None, shard: str | None = None,
         overrides: list[tuple[str, Any, str]] | None = None, role: str = "all") -> int:
    """``overrides``: ``(dotted key, value, option name)`` set on the command line, re-applied at reload.

    ``role``: ``all`` (this daemon), ``router`` or ``scorer`` (:mod:`sentinel.cluster`).
    """
    setup_logging(cfg.logging.level, cfg.logging.format)
    memory.pin_mmap_threshold()  # only with SENTINEL_MALLOC_PIN=1: it costs throughput (sentinel.runtime.memory)
    torch.set_num_threads(cfg.model.score_threads)
    return asyncio.run(_amain(cfg, config_path, shard, overrides, role))
