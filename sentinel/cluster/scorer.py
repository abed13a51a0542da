"""``sentinel run --role scorer``: the daemon, fed by the partitions this scorer owns.

The hooks :class:`~sentinel.runtime.daemon.Daemon` calls when given a :class:`ScorerRole`:

* :meth:`resume` (instead of the local checkpoint): connect, register, work out N and the owned
  partitions, claim each (waiting for a previous owner to release it), load each partition's
  checkpoint from the object store and restore them into one engine; the source resumes each
  partition after its covered sequence;
* :meth:`sources`: the :class:`~.consumer.JetStreamSource` (instead of ``cfg.sources``);
* :meth:`checkpoint` (instead of the local file): snapshot on the engine thread, cut it per
  partition, write each to the object store with the sequence it covers, then ack up to it;
* :meth:`run` (a background task): heartbeat; when N changes, hand over the partitions this
  scorer lost (stop consuming, score what is queued, checkpoint, drop their streams, release);
  a scorer that *gains* partitions while running checkpoints and asks to be restarted
  (:attr:`exit_requested`), and loads them on its next start;
* :meth:`close`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

from ..config import SentinelConfig
from ..errors import CheckpointError
from ..metrics import Metrics
from . import state as pstate
from .consumer import NAME, JetStreamSource
from .js import Nats, connect, object_get, retrying
from .metrics import ScorerMetrics
from .models import ModelWatch
from .ownership import Membership, Owners
from .partitions import ordinal, owned, partition_of

log = logging.getLogger("sentinel")

EXIT_RESTART = 75  # EX_TEMPFAIL: gained partitions while running; restart to load them


def object_name(p: int) -> str:
    return f"p{p}.ckpt"


def scorer_index(cfg: SentinelConfig, hostname: str | None = None) -> int:
    if cfg.cluster.index is not None:
        return cfg.cluster.index
    o = ordinal(hostname if hostname is not None else socket.gethostname())
    return o if o is not None else 0


class ScorerRole:
    def __init__(self, cfg: SentinelConfig, metrics: Metrics, clock: Callable[[], float] = time.time,
                 hostname: str | None = None):
        self.cfg = cfg
        self.ccfg = cfg.cluster
        self.metrics = metrics
        self.smetrics = ScorerMetrics(metrics.registry)
        self.clock = clock
        self.index = scorer_index(cfg, hostname)
        self.nats: Nats | None = None
        self.membership: Membership | None = None
        self.owners: Owners | None = None
        self.source: JetStreamSource | None = None
        self.owned: list[int] = []
        self.n = 0
        self.exit_requested = asyncio.Event()
        self.models: ModelWatch | None = None
        self._lock = asyncio.Lock()  # one checkpoint or handover at a time
        self._written: dict[int, tuple[int, int]] = {}  # partition -> (covered, model version) last written

    def part_of(self, key: str) -> int:
        return partition_of(key, self.ccfg.partitions)

    # -- start ----------------------------------------------------------------------------------
    async def resume(self, new_engine: Callable[[], Any]) -> tuple[Any, dict[str, dict | None], bool]:
        c = self.ccfg
        self.nats = nats = await connect(c, f"sentinel-scorer-{self.index}")
        self.membership = Membership(nats.kv, self.index, ttl=c.lease_ttl, fixed_n=c.scorers, clock=self.clock)
        self.owners = Owners(nats.kv, self.membership)
        m, owners = self.membership, self.owners
        await retrying(m.heartbeat, "scorer registration")
        self.n = await retrying(m.n, "scorer count")
        self.owned = owned(self.index, self.n, c.partitions)
        t0 = time.perf_counter()
        await asyncio.gather(*(retrying(functools.partial(owners.claim, p, c.handover_timeout),
                                        f"claim of partition {p}", c.handover_timeout + 60) for p in self.owned))
        states = await asyncio.gather(*(retrying(functools.partial(self._load, p), f"checkpoint of partition {p}")
                                        for p in self.owned))
        covered = {p: 0 for p in self.owned}
        snaps = []
        for s in states:
            if s is not None:
                covered[s.partition] = s.covered
                self._written[s.partition] = (s.covered, int(s.meta.get("model_version", 0)))
                snaps.append((s.meta, s.tensors))
        engine = new_engine()
        if snaps:
            engine.restore(*pstate.merge(snaps))
        self.source = JetStreamSource(nats, covered, self.smetrics)
        self.smetrics.own(self.owned)
        self.models = ModelWatch(nats, self.smetrics, self.owned)
        loaded = any(s is not None for s in states)
        log.info("scorer resumed", extra={"index": self.index, "scorers": self.n, "partitions": len(self.owned),
                                          "streams": engine.n_streams, "from_checkpoints": len(snaps),
                                          "seconds": round(time.perf_counter() - t0, 3)})
        return engine, {NAME: {"p": {str(p): v for p, v in covered.items()}}}, loaded

    async def _load(self, p: int) -> pstate.PartitionState | None:
        assert self.nats is not None
        data = await object_get(self.nats.objects, object_name(p))
        if data is None:
            return None
        try:
            s = pstate.loads(data, f"{self.ccfg.state_bucket}/{object_name(p)}")
        except CheckpointError as e:
            log.error("partition checkpoint refused; the partition starts fresh from its oldest message",
                      extra={"partition": p, "error": str(e)})
            return None
        return s if s.partition == p else None

    def sources(self) -> list[Any]:
        assert self.source is not None
        return [self.source]

    # -- checkpoints ----------------------------------------------------------------------------
    async def _scored(self, daemon: Any, emitted: int, timeout: float = 60.0) -> None:
        """Until the tick has scored the first ``emitted`` batches of the source (bounded)."""
        deadline = time.monotonic() + timeout
        while int((daemon.tick.cursors.get(NAME) or {}).get("n", 0)) < emitted:
            if time.monotonic() > deadline:
                raise TimeoutError(f"handover: batches up to {emitted} not scored within {timeout}s")
            await asyncio.sleep(0.01)

    async def _snapshot(self, daemon: Any) -> tuple[pstate.Snap, dict[str, int]]:
        def snap() -> tuple[pstate.Snap, dict[str, int]]:  # on the engine thread: state and cursor agree
            meta, tensors = daemon.engine.snapshot()
            cur = dict((daemon.tick.cursors.get(NAME) or {}).get("p", {}))
            return (meta, {k: v.clone() for k, v in tensors.items()}), dict(cur)

        return await daemon.thread.call(snap)

    async def _write(self, parts: dict[int, pstate.Snap], cursor: dict[str, int], force: bool = False
                     ) -> dict[int, int]:
        assert self.nats is not None
        done: dict[int, int] = {}
        for p, (meta, tensors) in parts.items():
            covered = int(cursor.get(str(p), 0))
            sig = (covered, int(meta.get("model_version", 0)))
            if not force and self._written.get(p) == sig:
                continue  # nothing scored or trained in it since its last checkpoint
            t0 = time.perf_counter()
            blob = await asyncio.to_thread(pstate.dumps, pstate.PartitionState(p, covered, meta, tensors))
            await self.nats.objects.put(object_name(p), blob)
            self.smetrics.checkpoint_seconds.observe(time.perf_counter() - t0)
            self._written[p] = sig
            done[p] = covered
        return done

    async def checkpoint(self, daemon: Any) -> None:
        async with self._lock:
            snap, cursor = await self._snapshot(daemon)
            parts = await asyncio.to_thread(pstate.split, snap, self.part_of, list(self.owned))
            done = await self._write(parts, cursor)
            assert self.source is not None
            for p, seq in done.items():
                await self.source.ack_through(p, seq)
            self.metrics.checkpoint_last_success.set(self.clock())
            if done:
                log.info("partition checkpoints written", extra={"partitions": len(done),
                                                                 "streams": daemon.engine.n_streams})

    # -- membership and handover ----------------------------------------------------------------
    async def run(self, daemon: Any) -> None:
        assert self.membership is not None and self.models is not None
        period = min(1.0, self.ccfg.lease_ttl / 3)
        models = asyncio.create_task(self.models.run(daemon), name="model-watch")
        # The heartbeat has its own task: a handover (scoring what is queued, a checkpoint
        # write) can outlast lease_ttl, and a heartbeat stuck behind it made the other scorers
        # take this one's partitions while it still consumed them.
        beat = asyncio.create_task(self._heartbeats(period), name="scorer-heartbeat")
        try:
            while True:
                await asyncio.sleep(period)
                try:
                    n = await self.membership.n()
                except Exception as e:
                    log.warning("scorer membership: %s", e)
                    continue
                if n != self.n:
                    try:
                        await self._rebalance(daemon, n)
                    except Exception:
                        # A half-done handover cannot be retried in place (its consumers are
                        # stopped): exit so the restart loads the partitions it owns from their
                        # checkpoints and JetStream, instead of going on silently without them.
                        log.exception("handover failed; restarting to reload this scorer's partitions")
                        self.exit_requested.set()
                        return
        finally:
            for t in (models, beat):
                t.cancel()
            await asyncio.gather(models, beat, return_exceptions=True)

    async def _heartbeats(self, period: float) -> None:
        assert self.membership is not None
        while True:
            try:
                await self.membership.heartbeat()
            except Exception as e:
                log.warning("scorer heartbeat: %s", e)
            await asyncio.sleep(period)

    async def _rebalance(self, daemon: Any, n: int) -> None:
        want = set(owned(self.index, n, self.ccfg.partitions))
        lost = sorted(set(self.owned) - want)
        gained = sorted(want - set(self.owned))
        log.info("scorers changed", extra={"from": self.n, "to": n, "lost": lost, "gained": gained})
        self.n = n
        if lost:
            await self.handover(daemon, lost)
        if gained:
            log.warning("this scorer gained partitions while running; checkpointing and restarting to load them",
                        extra={"gained": gained})
            self.exit_requested.set()

    async def handover(self, daemon: Any, partitions: list[int]) -> None:
        """Stop consuming ``partitions``, score what is queued, checkpoint them, drop them, release them."""
        assert self.source is not None and self.owners is not None
        async with self._lock:
            t0 = time.perf_counter()
            last, emitted = {}, 0
            for p in partitions:
                last[str(p)], emitted = await self.source.release(p)
            await self._scored(daemon, emitted)
            snap, cursor = await self._snapshot(daemon)
            parts = await asyncio.to_thread(pstate.split, snap, self.part_of, partitions)
            done = await self._write(parts, {**cursor, **last}, force=True)
            drop = set(partitions)

            def remove() -> int:
                keys = [k for k in list(daemon.engine.index) if self.part_of(str(k)) in drop]
                for k in keys:
                    daemon.engine.remove_stream(k)
                return len(keys)

            removed = await daemon.thread.call(remove)
            for p in partitions:
                await self.owners.release(p, done[p])
                self.smetrics.disown(p)
            self.owned = [p for p in self.owned if p not in drop]
            self.smetrics.owned.set(len(self.owned))
            if self.models is not None:
                self.models.partitions = list(self.owned)
            log.info("partitions handed over", extra={"partitions": partitions, "streams": removed,
                                                      "seconds": round(time.perf_counter() - t0, 3)})

    async def close(self) -> None:
        if self.nats is not None:
            with contextlib.suppress(Exception):
                await self.nats.close()
