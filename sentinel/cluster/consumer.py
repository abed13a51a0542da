"""The scorer's source: one durable pull consumer per owned partition, feeding the ingest queue.

Each partition's consumer is (re)created on start to deliver from the sequence after the
partition's checkpoint (``covered + 1``): the object store, not the consumer's ack state, is
the truth of what was scored. Messages at or below the partition's last emitted sequence are
dropped (a redelivery). One task per partition fetches and decodes into a bounded inbox; one
emitter drains whatever the inbox holds into one batch (so a tick scores many partitions at
once), whose cursor is ``{"p": {partition: last sequence emitted}, "n": batches emitted}`` for
every owned partition, taken under one lock with the ``emit``: the cursor of the last scored
batch says exactly what was scored. :meth:`ack_through` acks a partition up to a checkpoint's
sequence (``AckPolicy.ALL``: one ack covers all before it). :meth:`release` stops one
partition's consumer (a handover) and returns the last sequence emitted for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any

from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import FetchTimeoutError, NotFoundError

from ..errors import SourceUnavailable
from ..sources.base import Emit
from ..types import Sample, SourceBatch
from . import codec
from .js import Nats
from .metrics import ScorerMetrics
from .status import consumer_name

log = logging.getLogger("sentinel")

NAME = "jetstream"


class JetStreamSource:
    """A source plugin (:mod:`sentinel.sources.base`) over the partitions a scorer owns."""

    def __init__(self, nats: Nats, covered: dict[int, int], metrics: ScorerMetrics):
        self.name = NAME
        self.cfg = None
        self.nats = nats
        self.pos: dict[int, int] = dict(covered)  # partition -> last stream sequence emitted
        self.metrics = metrics
        self.connected = False
        self._lock = asyncio.Lock()
        self._tasks: dict[int, asyncio.Task] = {}
        self._subs: dict[int, Any] = {}
        self._unacked: dict[int, deque] = {p: deque() for p in covered}
        self._stop = asyncio.Event()
        self._emit: Emit | None = None
        self.undecodable = 0
        self.emitted = 0  # batches emitted; in every cursor as "n"
        self._inbox: asyncio.Queue[tuple[int, int, Any, list[Sample]]] = asyncio.Queue(maxsize=4 * len(covered) + 4)
        self._emitter: asyncio.Task | None = None

    @property
    def partitions(self) -> list[int]:
        return sorted(self.pos)

    async def history(self, keys: Any, since: float, until: float) -> list[Sample]:
        return []  # a partition's history travels in its checkpoint

    async def _subscribe(self, p: int) -> Any:
        js, cfg = self.nats.js, self.nats.cfg
        name = consumer_name(p)
        with contextlib.suppress(NotFoundError):
            await js.delete_consumer(cfg.stream, name)
        start = self.pos[p] + 1
        cc = ConsumerConfig(durable_name=name, filter_subject=self.nats.subject(p), ack_policy=AckPolicy.ALL,
                            ack_wait=cfg.ack_wait, max_ack_pending=-1, max_deliver=-1,
                            deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start)
        await js.add_consumer(cfg.stream, cc)
        return await js.pull_subscribe_bind(name, stream=cfg.stream)

    async def run(self, emit: Emit) -> None:
        self._emit = emit
        try:
            for p in self.partitions:
                if p not in self._subs:
                    self._subs[p] = await self._subscribe(p)
        except Exception as e:
            raise SourceUnavailable(f"jetstream: cannot create the partition consumers: {e}") from e
        self.connected = True
        if self._emitter is None or self._emitter.done():
            self._emitter = asyncio.create_task(self._emit_loop(), name="jetstream-emit")
        for p in self.partitions:
            if p not in self._tasks or self._tasks[p].done():
                self._tasks[p] = asyncio.create_task(self._follow(p), name=f"partition-{p}")
        await self._stop.wait()

    async def _follow(self, p: int) -> None:
        sub = self._subs[p]
        batch, linger = self.nats.cfg.fetch_batch, self.nats.cfg.fetch_linger
        lag = self.metrics.lag.labels(str(p))
        fetched = self.pos[p]  # the highest sequence handed to the inbox
        while not self._stop.is_set():
            try:
                msgs = await sub.fetch(batch, timeout=1.0)
            except (TimeoutError, FetchTimeoutError, NatsTimeout):
                continue
            except asyncio.CancelledError:
                raise
            except Exception as e:  # NATS down: the client reconnects; keep asking, bounded by the stop
                log.warning("partition %d: fetch failed: %s", p, e)
                await asyncio.sleep(0.5)
                continue
            samples: list[Sample] = []
            last = None
            for m in msgs:
                md = m.metadata
                seq = md.sequence.stream
                lag.set(md.num_pending)
                if seq <= fetched:
                    continue  # redelivered: already handed on
                try:
                    samples.extend(codec.decode(m.data))
                except (ValueError, KeyError, TypeError) as e:
                    self.undecodable += 1
                    log.error("partition %d: undecodable message %d skipped: %s", p, seq, e)
                last = (seq, m)
            if last is None:
                continue
            fetched = last[0]
            await self._inbox.put((p, last[0], last[1], samples))
            if len(msgs) < batch and linger > 0:
                await asyncio.sleep(linger)  # let a trickle accumulate: one pull instead of many

    async def _emit_loop(self, max_samples: int = 50_000) -> None:
        """Forever: everything the inbox holds, as one batch (a released partition's items are dropped)."""
        while True:
            items = [await self._inbox.get()]
            n = len(items[0][3])
            while n < max_samples and not self._inbox.empty():
                items.append(self._inbox.get_nowait())
                n += len(items[-1][3])
            async with self._lock:  # the cursor and the queue order agree
                samples: list[Sample] = []
                for p, seq, msg, ss in items:
                    if p not in self.pos or seq <= self.pos[p]:
                        continue  # released meanwhile: its next owner reads it again
                    self.pos[p] = seq
                    self._unacked[p].append((seq, msg))
                    samples.extend(ss)
                if not samples:
                    continue
                self.emitted += 1
                assert self._emit is not None
                await self._emit(SourceBatch(NAME, samples, cursor={"p": {str(k): v for k, v in self.pos.items()},
                                                                    "n": self.emitted}))

    async def ack_through(self, p: int, seq: int) -> None:
        """Ack partition ``p`` up to ``seq`` (its checkpoint's covered sequence)."""
        q = self._unacked.get(p)
        if not q:
            return
        last = None
        while q and q[0][0] <= seq:
            last = q.popleft()
        if last is not None:
            with contextlib.suppress(Exception):
                await last[1].ack()

    async def release(self, p: int) -> tuple[int, int]:
        """Stop consuming ``p`` (what it emitted stays queued): ``(last sequence emitted, batches emitted)``."""
        t = self._tasks.pop(p, None)
        if t is not None:
            t.cancel()
            await asyncio.gather(t, return_exceptions=True)
        sub = self._subs.pop(p, None)
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        async with self._lock:  # not in the middle of an emit; later inbox items of p are dropped
            self._unacked.pop(p, None)
            return self.pos.pop(p), self.emitted

    async def stop(self) -> None:
        self._stop.set()
        tasks = [*self._tasks.values(), *([self._emitter] if self._emitter is not None else [])]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._emitter = None
        self._tasks.clear()
        for sub in self._subs.values():
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()
        self.connected = False
