"""Push: line protocol arriving on ``/write`` (receiver mode), and InfluxDB 1.x subscriptions towards it."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ...clients.influxql import quote_ident, quote_str
from ...columns import without_measurement
from ...errors import SourceError, SourceUnavailable
from ...types import SourceBatch
from ..base import Emit
from ..receiver import Pushed
from .backfill import Backfill

log = logging.getLogger("sentinel.sources.influxdb")


class Subscription(Backfill):
    # ------------------------------------------------------------------ push: receiver
    async def _deliver(self, p: Pushed) -> bool:
        if self.cfg.mode == "subscription" and p.retention_policy not in ("", self.cfg.retention_policy):
            return True  # another retention policy of the same database: not ours
        kept = None if self._exclude is None else without_measurement(p.outcome.samples, self._exclude)
        if kept is not None:
            p.outcome.samples = kept
            if not p.outcome.samples and not p.outcome.rejected:
                return True  # only our own write-back: nothing to score
        try:
            await asyncio.wait_for(self._queue.put(p), timeout=10.0)
        except TimeoutError:
            return False
        return True

    async def _next_push(self, timeout: float) -> Pushed | None:
        if not self._queue.empty():
            return self._queue.get_nowait()
        stop = asyncio.ensure_future(self._stop.wait())
        get = asyncio.ensure_future(self._queue.get())
        try:
            done, _ = await asyncio.wait({stop, get}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not get.done():
                get.cancel()
        if get in done and not get.cancelled():
            return get.result()
        return None

    async def _emit_push(self, p: Pushed, emit: Emit) -> None:
        o = p.outcome
        if o.max_ts_ns > (self._t or -1):
            self._t = o.max_ts_ns
        if self.cfg.mode != "subscription":  # no catch-up, no overlap: the engine counts late points
            if o.samples or o.rejected:
                await emit(SourceBatch(self.name, o.samples, self.cursor, p.received_at, dict(o.rejected),
                                       wal_position=p.wal_position))
            return
        fresh = []
        for smp in o.samples:  # drop what a catch-up already handed over
            lt = self._emitted.get(smp.key)
            if lt is not None and smp.ts <= lt:
                self.stats["deduplicated"] += 1
                continue
            self._emitted[smp.key] = smp.ts
            fresh.append(smp)
        if fresh or o.rejected:
            await emit(SourceBatch(self.name, fresh, self.cursor, p.received_at, dict(o.rejected),
                                   wal_position=p.wal_position))

    async def _run_receiver(self, emit: Emit) -> None:
        self.connected = True
        while not self._stop.is_set():
            p = await self._next_push(1.0)
            if p is not None:
                await self._emit_push(p, emit)

    # ------------------------------------------------------------------ push: subscription
    def _destination(self) -> str:
        dest = self.cfg.subscription_destination
        if not dest:
            raise SourceError(f"{self.name}: subscription_destination is not set (the runtime sets it from "
                              "server.listen)")
        return dest.rstrip("/")

    async def ensure_subscription(self) -> None:
        """Create the subscription if missing (or pointing elsewhere); idempotent."""
        http = self._http()
        cfg = self.cfg
        dest = self._destination()
        res = await http.query("SHOW SUBSCRIPTIONS")
        existing: list[str] | None = None
        for r in res:
            for s in r.get("series", []) or []:
                if s.get("name") != cfg.database:
                    continue
                cols = s.get("columns", [])
                for row in s.get("values", []) or []:
                    rec = dict(zip(cols, row, strict=False))
                    if rec.get("retention_policy") == cfg.retention_policy and rec.get("name") == cfg.subscription_name:
                        existing = list(rec.get("destinations") or [])
        on = f"{quote_ident(cfg.database)}.{quote_ident(cfg.retention_policy)}"
        if existing is not None:
            if [d.rstrip("/") for d in existing] == [dest]:
                return
            await http.query(f"DROP SUBSCRIPTION {quote_ident(cfg.subscription_name)} ON {on}")
        await http.query(f"CREATE DATABASE {quote_ident(cfg.database)}")
        await http.query(f"CREATE SUBSCRIPTION {quote_ident(cfg.subscription_name)} ON {on} "
                         f"DESTINATIONS ALL {quote_str(dest)}")
        log.info("%s: created subscription %s on %s -> %s", self.name, cfg.subscription_name, on, dest)

    async def drop_subscription(self) -> None:
        cfg = self.cfg
        on = f"{quote_ident(cfg.database)}.{quote_ident(cfg.retention_policy)}"
        with contextlib.suppress(SourceError):
            await self._http().query(f"DROP SUBSCRIPTION {quote_ident(cfg.subscription_name)} ON {on}")

    async def _run_subscription(self, emit: Emit) -> None:
        """Backfill, then go live on pushes. A failure propagates (RunningSource retries with backoff);
        the next run starts with a backfill again."""
        need_backfill, live = True, False
        while not self._stop.is_set():
            if need_backfill:
                await self.ensure_subscription()
                live = await self._backfill(emit)
                need_backfill = False
                self.connected = True
            p = await self._next_push(self.cfg.poll_interval)
            if p is None:
                if not await self._http().ping():
                    raise SourceUnavailable(f"{self.cfg.url}: ping failed")
                # No push yet since the last catch-up: keep catching up by polling, so data
                # flows even if pushes never arrive (a subscription InfluxDB cannot deliver).
                need_backfill = not live
            elif live:
                await self._emit_push(p, emit)
            else:
                # First push after a backfill: writes that predate the subscription taking
                # effect are now surely in the database. Read them, then go live.
                self._hold(p)
                need_backfill = True

