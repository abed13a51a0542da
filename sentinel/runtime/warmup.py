"""Warm-up from the sources' history, so a stream with a past scores at once.

* At a fresh start (no checkpoint): each source's last ``streams.history_lookback``
  is read and merged into the engine (:meth:`HistoryWarmup.fresh_start`).
* A stream first seen live (the tick reports it): its history up to its first live
  sample is read in the background and put in front of what it holds
  (:meth:`HistoryWarmup.new_streams`).

History is an optimisation: when a source cannot give it, the streams warm up from live data.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..types import StreamKey
from .engine import Engine
from .scheduler import EngineCall
from .shard import Shard

log = logging.getLogger("sentinel")


class HistoryWarmup:
    def __init__(self, engine: Engine, call: EngineCall, shard: Shard, lookback: float,
                 clock: Callable[[], float] = time.time):
        self.engine = engine
        self.call = call
        self.shard = shard
        self.lookback = lookback
        self.clock = clock
        self.tasks: set[asyncio.Task] = set()
        self.closed = False

    def _load(self, samples: list, create: bool) -> int:
        taken = self.engine.load_history(samples, create)
        if create:
            self.engine.take_created()  # these streams got their history just now
        return taken

    async def fresh_start(self, sources: Sequence[Any]) -> None:
        if self.lookback <= 0:
            return
        now = self.clock()
        for src in sources:
            t0 = time.perf_counter()
            try:
                samples = await src.history(None, now - self.lookback, now)
            except Exception as e:
                log.warning("history unavailable, streams warm up from live data",
                            extra={"source": src.name, "error": str(e)})
                continue
            taken = await self.call(self._load, self.shard.keep(samples), True)
            log.info("history loaded", extra={"source": src.name, "samples": taken, "streams": self.engine.n_streams,
                                              "seconds": round(time.perf_counter() - t0, 2)})

    def new_streams(self, src: Any, firsts: dict[StreamKey, float]) -> None:
        """Read the history of streams first seen live, before their first sample, in the background."""
        if src is None or self.lookback <= 0 or self.closed:
            return

        async def fetch() -> None:
            until = min(firsts.values())
            try:
                samples = await src.history(list(firsts), until - self.lookback, until)
            except Exception as e:
                log.info("no history for new streams", extra={"source": src.name, "error": str(e)})
                return
            if not samples:
                return
            taken = await self.call(self._load, samples, False)
            log.info("history loaded for new streams", extra={"source": src.name, "streams": len(firsts),
                                                              "samples": taken})

        task = asyncio.create_task(fetch(), name=f"history-{src.name}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def close(self) -> None:
        """Cancel the fetches in flight; no new ones start."""
        self.closed = True
        tasks = list(self.tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
