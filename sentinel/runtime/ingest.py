"""The ingest queue: where every source's batches wait for the tick.

Bounded (``queues.ingest_max_batches``). When it is full the overflow policy
decides: ``block`` makes the source wait, ``drop_oldest`` drops the oldest waiting
batch, ``drop_newest`` drops the arriving one; dropped samples are counted in
``sentinel_queue_dropped_total{queue="ingest"}``. The tick takes what is waiting
(coalesced up to a sample budget) and marks it done once it is scored, so
:meth:`IngestQueue.join` returns when every accepted batch has been scored.
"""

from __future__ import annotations

import asyncio
import contextlib

from ..metrics import Metrics
from ..types import SourceBatch

COALESCE_SAMPLES = 200_000  # the most samples one tick takes at once (when more are waiting)


class IngestQueue:
    """``put`` is the ``emit`` every source is given; ``take``/``done`` are the tick's side."""

    def __init__(self, max_batches: int, overflow: str, metrics: Metrics):
        self.overflow = overflow
        self.metrics = metrics
        self._q: asyncio.Queue[SourceBatch] = asyncio.Queue(maxsize=max_batches)
        metrics.add_queue("ingest")

    def qsize(self) -> int:
        return self._q.qsize()

    def _depth(self) -> None:
        self.metrics.queue_depth.labels("ingest").set(self._q.qsize())

    async def put(self, batch: SourceBatch) -> None:
        """Queue ``batch``; when full, apply the overflow policy (only ``block`` waits)."""
        q = self._q
        if self.overflow == "block":
            await q.put(batch)
        elif q.full():
            if self.overflow == "drop_oldest":
                with contextlib.suppress(asyncio.QueueEmpty):
                    dropped = q.get_nowait()
                    q.task_done()
                    self.metrics.queue_dropped.labels("ingest").inc(len(dropped.samples))
                q.put_nowait(batch)
            else:
                self.metrics.queue_dropped.labels("ingest").inc(len(batch.samples))
        else:
            q.put_nowait(batch)
        self._depth()

    async def take(self, max_samples: int = COALESCE_SAMPLES) -> list[SourceBatch]:
        """Wait for a batch, then take what else is waiting, up to ``max_samples`` samples."""
        batch = await self._q.get()
        batches, n = [batch], len(batch.samples)
        while n < max_samples and not self._q.empty():
            b = self._q.get_nowait()
            batches.append(b)
            n += len(b.samples)
        self._depth()
        return batches

    def done(self, batches: list[SourceBatch]) -> None:
        """``batches`` (from :meth:`take`) are scored, or given up on."""
        for _ in batches:
            self._q.task_done()

    async def join(self) -> None:
        await self._q.join()

    def drain_nowait(self) -> list[SourceBatch]:
        """Everything waiting, without waiting (tests)."""
        out = []
        while not self._q.empty():
            out.append(self._q.get_nowait())
            self._q.task_done()
        self._depth()
        return out
