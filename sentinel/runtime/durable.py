"""The daemon's write-ahead log wiring: push receivers log before they acknowledge; start replays.

Life of a pushed write (see :mod:`sentinel.state.ingestlog` for the ordering contract):

1. the receiver appends the body to the log, hands its samples on, and answers 2xx once
   the record is durable (``server.wal.fsync``);
2. the scoring thread scores the batch and reports the record's end position
   (:meth:`Durability.scored`); a checkpoint snapshot taken on that thread stores it
   (:meth:`Durability.covered`);
3. after the checkpoint file is written, segments no kept checkpoint needs are deleted
   (:meth:`Durability.checkpointed`);
4. on start, the daemon restores the checkpoint, then :meth:`Durability.replay` feeds every
   record after its position back through the receivers' parse path, and only then
   reports ready.

A polling source keeps its own cursor in the checkpoint (its database is its log).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterable
from typing import Any

from ..config import SentinelConfig
from ..metrics import Metrics
from ..state.ingestlog import IngestLog
from ..state.wal import WalPosition
from ..types import SourceBatch

log = logging.getLogger("sentinel")


class Durability:
    """``log`` is None when ``server.wal.enabled`` is false or no source pushes."""

    def __init__(self, cfg: SentinelConfig, sources: Iterable[Any], restored: WalPosition | None,
                 metrics: Metrics | None = None):
        self.receivers = {s.name: s.receiver for s in sources if getattr(s, "receiver", None) is not None}
        self.metrics = metrics
        w = cfg.server.wal
        self.log: IngestLog | None = None
        self._replayed_to: WalPosition | None = None
        if w.enabled and self.receivers:
            d = w.dir if w.dir is not None else os.path.join(cfg.state.dir, "wal")  # None: not loaded from a file
            self.log = IngestLog(d, fsync=w.fsync, fsync_delay=w.fsync_delay, segment_bytes=w.segment_bytes,
                                 max_bytes=w.max_bytes, keep=cfg.state.keep, restored=restored)
            for r in self.receivers.values():
                r.log, r.retry_after = self.log, w.retry_after
        self._gauge()

    def _gauge(self) -> None:
        if self.metrics is not None and self.log is not None:
            self.metrics.wal_bytes.set(self.log.size_bytes)

    async def replay(self) -> int:
        """Hand every logged record after the restored checkpoint to its receiver, in log order."""
        if self.log is None:
            return 0
        t0 = time.perf_counter()
        locks = [r._order for r in self.receivers.values()]
        for lk in locks:  # no live write may slip in between replayed ones
            await lk.acquire()
        n = 0
        try:
            for pos, rec in self.log.replay():
                r = self.receivers.get(rec.source)
                if r is not None:
                    self.log.handed_on(rec.source, pos)
                    n += await r.replay([(pos, rec)])
                    self._replayed_to = pos
        finally:
            for lk in locks:
                lk.release()
        if n or self.log.undecodable:
            log.info("write-ahead log replayed", extra={"records": n, "undecodable": self.log.undecodable,
                                                         "after": list(self.log.restored),
                                                         "seconds": round(time.perf_counter() - t0, 2)})
        return n

    async def wait_scored(self, timeout: float = 30.0) -> bool:
        """After :meth:`replay`: wait (bounded) until the engine has scored every replayed record."""
        if self.log is None or self._replayed_to is None:
            return True
        deadline = time.monotonic() + timeout
        while self.log.covered < self._replayed_to:
            if time.monotonic() > deadline:  # e.g. a record whose samples were all filtered: nothing to score
                log.warning("write-ahead log replay: not every replayed record was reported scored in time",
                            extra={"covered": list(self.log.covered), "replayed_to": list(self._replayed_to)})
                return False
            await asyncio.sleep(0.02)
        return True

    def scored(self, batches: Iterable[SourceBatch]) -> None:
        """On the scoring thread, after the engine took ``batches``."""
        if self.log is None:
            return
        last: dict[str, tuple[int, int]] = {}
        for b in batches:
            if b.wal_position is not None:
                last[b.source] = b.wal_position
        for source, pos in last.items():  # per source: two push sources are scored in any order between them
            self.log.scored(WalPosition(*pos), source)

    def covered(self) -> WalPosition | None:
        """On the scoring thread, for the checkpoint snapshot."""
        return None if self.log is None else self.log.covered

    def checkpointed(self, pos: WalPosition | None) -> None:
        if self.log is not None and pos is not None:
            self.log.checkpointed(pos)
        self._gauge()

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
