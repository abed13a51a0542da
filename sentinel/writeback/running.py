"""The running sink: what every score write-back shares (Telegraf's running_output).

A write-back plugin only does its I/O: :meth:`RunningSink._write` writes one batch (and
raises on failure), :meth:`RunningSink._prepare` turns records into what is written (once
per batch, so a retry repeats it exactly), :meth:`RunningSink._open` / ``_reset`` /
``_close`` manage its connection. This class adds, once for all of them:

* a bounded, thread-safe buffer: :meth:`submit` never blocks; past ``max_buffer`` the
  oldest (``drop_oldest``) or the arriving (``drop_newest``) records are dropped and
  counted in ``sentinel_queue_dropped_total{queue}``; its depth is ``sentinel_queue_depth{queue}``;
* batching: a batch is written every ``flush_interval`` or as soon as ``batch_size`` records wait;
* retry: a failed batch is retried whole, in order, with exponential backoff and full jitter;
* shutdown: :meth:`stop` is idempotent and flushes what is left for at most ``stop_timeout``
  seconds; what is still unwritten then is logged and counted as dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
from collections import deque
from typing import Any

from ..metrics import Metrics
from ..retry import backoff_delays
from ..types import ScoreRecord

log = logging.getLogger("sentinel.writeback")


class RunningSink:
    queue = "writeback"  # the queue label of this sink's metrics

    def __init__(self, metrics: Metrics, *, batch_size: int, flush_interval: float, max_buffer: int,
                 stop_timeout: float, overflow: str = "drop_oldest", rng: random.Random | None = None):
        self.metrics = metrics
        metrics.add_queue(self.queue)
        self.batch_size, self.flush_interval = batch_size, flush_interval
        self.max_buffer, self.stop_timeout, self.overflow = max_buffer, stop_timeout, overflow
        self._rng = rng
        self._buf: deque[ScoreRecord] = deque()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._done = asyncio.Event()
        self._started = False
        self._batch: tuple[int, Any] | None = None  # (records, prepared payload) being written
        self.written = 0  # records written
        self.dropped = 0  # records dropped (overflow, or unwritten at stop)

    # -- the plugin's part --------------------------------------------------------------------
    def _prepare(self, batch: list[ScoreRecord]) -> Any:
        return batch

    async def _write(self, payload: Any) -> None:
        raise NotImplementedError

    def _written(self, payload: Any) -> None:
        """A payload was written (a plugin may count more than records)."""

    async def _open(self) -> None:
        """Before the first batch (e.g. create the database)."""

    async def _reset(self) -> None:
        """After a failed batch (e.g. drop the connection)."""

    async def _close(self) -> None:
        """Once ``run`` ends."""

    # -- producer side (any thread) -------------------------------------------------------------
    def submit(self, records: list[ScoreRecord]) -> None:
        """Queue records; never blocks; past ``max_buffer`` records are dropped and counted."""
        if not records:
            return
        with self._lock:
            if self.overflow == "drop_newest":
                room = max(self.max_buffer - len(self._buf), 0)
                self._buf.extend(records[:room])
                over = len(records) - min(room, len(records))
            else:
                self._buf.extend(records)
                over = max(len(self._buf) - self.max_buffer, 0)
                for _ in range(over):
                    self._buf.popleft()
            depth = len(self._buf)
        if over:
            self.dropped += over
            self.metrics.queue_dropped.labels(self.queue).inc(over)
        self.metrics.queue_depth.labels(self.queue).set(depth)
        if depth >= self.batch_size and self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closing: the next stop flushes
                self._loop.call_soon_threadsafe(self._wake.set)

    def pending(self) -> int:
        with self._lock:
            return len(self._buf) + (self._batch[0] if self._batch else 0)

    def _peek(self, n: int) -> list[ScoreRecord]:
        with self._lock:
            return [self._buf[i] for i in range(min(n, len(self._buf)))]

    # -- writer side ------------------------------------------------------------------------------
    async def flush(self) -> None:
        """Write everything buffered now; raises on failure (the failed batch is kept, in order)."""
        while True:
            if self._batch is None:
                with self._lock:
                    batch = [self._buf.popleft() for _ in range(min(len(self._buf), self.batch_size))]
                if not batch:
                    return
                self._batch = (len(batch), self._prepare(batch))
            n, payload = self._batch
            await self._write(payload)
            self._written(payload)
            self.written += n
            self._batch = None
            self.metrics.queue_depth.labels(self.queue).set(self.pending())

    async def run(self) -> None:
        """Write batches until :meth:`stop`, retrying failures; then flush (bounded); never raises."""
        self._loop = asyncio.get_running_loop()
        self._started = True
        delays = backoff_delays(0.5, 30.0, rng=self._rng)
        try:
            with contextlib.suppress(Exception):
                await self._open()
            while not self._stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.flush_interval)
                self._wake.clear()
                try:
                    await self.flush()
                    delays = backoff_delays(0.5, 30.0, rng=self._rng)
                except Exception as e:
                    await self._reset()
                    d = next(delays)
                    log.warning("%s: %s; retrying in %.2fs", self.queue, " ".join(str(e).split()), d)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), d)
            await self._final_flush()
        finally:
            with contextlib.suppress(Exception):
                await self._close()
            self._done.set()

    async def _final_flush(self) -> None:
        if self.pending() == 0:
            return
        try:
            await asyncio.wait_for(self.flush(), self.stop_timeout)
        except Exception as e:
            left = self.pending()
            log.error("%s: stopping with %d records unwritten (%s)", self.queue, left, e)
            self.dropped += left
            self.metrics.queue_dropped.labels(self.queue).inc(left)

    async def stop(self) -> None:
        """Stop and flush (at most ``stop_timeout``); idempotent; returns once ``run`` has finished."""
        self._stopping.set()
        self._wake.set()
        if self._started:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._done.wait(), self.stop_timeout + 5.0)
