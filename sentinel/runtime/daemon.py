"""``sentinel run``: the daemon, wiring sources -> engine -> alerts/sinks, with its HTTP server.

Components and the queues between them::

    sources --emit--> ingest queue (bounded, overflow policy + counter) --> scoring loop
    scoring loop (one thread, owns the engine) --> notifier.submit (durable outbox)
                                                --> write-backs (bounded buffers)
    training loop --> worker process --> result applied on the scoring thread
    checkpoint loop --> snapshot on the scoring thread --> atomic file write off it

Ingest never waits on scoring (the queue decouples them; ``block`` makes a source
wait only when the queue is full), scoring never waits on a sink (``submit`` only
appends to disk or a bounded buffer).

Shutdown order (:meth:`Daemon.stop`), each step idempotent:
 1. stop the sources: no new batches;
 2. drain the ingest queue through the scoring loop, so every accepted sample is scored;
 3. stop the training loop and its worker (a job in flight is dropped: it is re-issued after restart);
 4. write the final checkpoint (cursors now match what was scored);
 5. stop write-backs and the notifier: they flush within their bounds, the outbox keeps the rest;
 6. close the HTTP server last, so /-/healthy answers until the end.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import hashlib
import logging
import math
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from prometheus_client import CollectorRegistry

from .. import __version__, failpoints
from ..alerts.notifier import Notifier
from ..config import ConfigError, SentinelConfig, load_config
from ..metrics import Metrics
from ..model.train import resolve_device
from ..sources.lineprotocol import BOUND_REASONS
from ..state import checkpoint as ckpt
from ..state.wal import WalPosition
from ..types import AlertEvent, Sample, ScoreRecord, SourceBatch, StreamKey
from .durable import Durability
from .engine import FIRING, PENDING, REJECT_REASONS, Engine
from .factory import build_source, build_writeback
from .logs import setup_logging
from .trainer import BackgroundTrainer

log = logging.getLogger("sentinel")

STATE_NAMES = {0: "ok", 1: "pending", 2: "firing", 3: "ok"}


def parse_shard(shard: str | None) -> tuple[int, int] | None:
    if not shard:
        return None
    try:
        i, n = (int(x) for x in shard.split("/"))
    except ValueError:
        raise ConfigError(f"--shard: expected I/N, got {shard!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ConfigError(f"--shard: need 0 <= I < N, got {shard!r}")
    return i, n


def owner(key: StreamKey, n: int) -> int:
    """Rendezvous (highest random weight) hashing: the shard that owns ``key`` among ``n``."""
    k = str(key).encode()
    best, arg = -1, 0
    for i in range(n):
        w = int.from_bytes(hashlib.blake2b(k + b"\x00" + str(i).encode(), digest_size=8).digest(), "big")
        if w > best:
            best, arg = w, i
    return arg


class Daemon:
    """The running service. ``start()`` brings it up, ``stop()`` drains and checkpoints."""

    def __init__(self, cfg: SentinelConfig, *, config_path: str | None = None,
                 registry: CollectorRegistry | None = None, clock: Callable[[], float] = time.time,
                 shard: str | None = None, inline_training: bool = False):
        self.cfg = cfg
        self.config_path = config_path
        self.clock = clock
        self.metrics = Metrics(registry)
        self.shard = parse_shard(shard)
        self.device = "cuda" if cfg.model.device == "cuda" else "cpu"  # scoring device
        self.train_device = str(resolve_device(cfg.model.device))
        self.engine = Engine(cfg, device=self.device)
        self.cursors: dict[str, dict | None] = {}
        self.checkpoint_loaded = False
        self.durable: Durability | None = None  # the write-ahead log of pushed writes (start())
        self._restored_wal: WalPosition | None = None
        self._score_pool = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="sentinel-score")
        self._trainer = BackgroundTrainer(self.engine.settings, self.train_device, cfg.train.threads,
                                          inline=inline_training)
        self._queue: asyncio.Queue[SourceBatch] | None = None
        self._tasks: list[asyncio.Task] = []
        self._source_tasks: list[asyncio.Task] = []
        self._stopping = False
        self._server: Any = None
        self._training_inflight = 0
        self.sources: list[Any] = []
        self.writebacks: list[Any] = []
        self.notifier: Notifier | None = None
        self._stop_lock: asyncio.Lock | None = None
        self._started = False  # /-/ready answers 503 "starting" until history is loaded and loops run
        # streams first seen live, per source, with their first timestamp: their history is fetched
        self._new_streams: list[tuple[str, dict[StreamKey, float]]] = []
        self._history_tasks: set[asyncio.Task] = set()
        self.metrics.add_stream_collector(lambda: self.engine.stream_rows(self.cfg.metrics.per_stream))
        for r in ("success", "rejected", "failure"):
            self.metrics.retrain.labels(r)
        for r in (*REJECT_REASONS, *BOUND_REASONS):  # exported as 0 from the start: rate() sees every reason
            self.metrics.samples_rejected.labels(r)
        for s in ("warming", "ready", "ok", "pending", "firing"):
            self.metrics.streams.labels(s).set(0)

    # -- lifecycle -----------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.cfg
        self._stop_lock = asyncio.Lock()
        self._queue = asyncio.Queue(maxsize=cfg.queues.ingest_max_batches)
        self._load_checkpoint()
        external = cfg.server.external_url or f"http://{cfg.server.listen}/"
        self.notifier = Notifier(cfg.sinks, self.metrics, external_url=external, clock=self.clock)
        for sc in cfg.sources:
            src = build_source(sc, cfg, self.metrics, self.cursors.get(sc.name), clock=self.clock)
            self.sources.append(src)
            self.metrics.source_up.labels(src.name).set(0)
            wb = build_writeback(sc, self.metrics)
            if wb is not None:
                self.writebacks.append(wb)
        self.durable = Durability(cfg, self.sources, self._restored_wal, self.metrics)
        await self._start_server()
        if not self.checkpoint_loaded:
            await self._warm_from_history()
        self._tasks.append(asyncio.create_task(self.notifier.run(), name="notifier"))
        for wb in self.writebacks:
            self._tasks.append(asyncio.create_task(wb.run(), name=f"writeback-{type(wb).__name__}"))
        self._tasks.append(asyncio.create_task(self._score_loop(), name="score"))
        for name, loop_fn in (("train", self._train_loop), ("checkpoint", self._checkpoint_loop),
                              ("gauges", self._gauge_loop)):
            self._tasks.append(asyncio.create_task(self._supervised(name, loop_fn), name=name))
        for src in self.sources:
            self._source_tasks.append(asyncio.create_task(self._run_source(src), name=f"source-{src.name}"))
        # acknowledged writes after the checkpoint: scored before ready, as if they had just arrived
        if await self.durable.replay():
            await asyncio.wait_for(self._queue.join(), timeout=600)
        self._started = True
        log.info("sentinel started", extra={"listen": self.listen_url, "sources": [s.name for s in self.sources],
                                            "streams": self.engine.n_streams, "train_device": self.train_device,
                                            "resumed": self.checkpoint_loaded})

    @property
    def listen_url(self) -> str:
        if self._server is None:
            return ""
        return self._server.url

    async def _start_server(self) -> None:
        from ..server import build_app, load_web_config, serve

        routes: list = []
        for src in self.sources:
            fn = getattr(src, "http_routes", None)
            if fn is not None:
                routes.extend(fn())
        wc = load_web_config(self.cfg.server.web_config_file) if self.cfg.server.web_config_file else None
        app = build_app(self, self.metrics.registry, extra_routes=routes, web_config=wc, version=__version__,
                        status_page_streams=self.cfg.server.status_page_streams,
                        client_max_size=self.cfg.server.max_body_bytes)
        self._server = await serve(app, self.cfg.server.listen, wc)

    async def _run_source(self, src: Any) -> None:
        try:
            await src.run(self._emit)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("source failed", extra={"source": src.name})
            self.metrics.source_up.labels(src.name).set(0)

    async def _emit(self, batch: SourceBatch) -> None:
        """Sources hand batches here; the overflow policy applies when the queue is full."""
        assert self._queue is not None
        policy = self.cfg.queues.ingest_overflow
        if policy == "block":
            await self._queue.put(batch)
        elif self._queue.full():
            if policy == "drop_oldest":
                with contextlib.suppress(asyncio.QueueEmpty):
                    dropped = self._queue.get_nowait()
                    self.metrics.queue_dropped.labels("ingest").inc(len(dropped.samples))
                self._queue.put_nowait(batch)
            else:
                self.metrics.queue_dropped.labels("ingest").inc(len(batch.samples))
        else:
            self._queue.put_nowait(batch)
        self.metrics.queue_depth.labels("ingest").set(self._queue.qsize())

    async def _warm_from_history(self) -> None:
        """Fresh start: read each source's recent history so streams that have it score at once."""
        lookback = self.cfg.streams.history_lookback
        if lookback <= 0:
            return
        now = self.clock()
        for src in self.sources:
            t0 = time.perf_counter()
            try:
                samples = await src.history(None, now - lookback, now)
            except Exception as e:  # history is an optimisation; the stream warms from live data instead
                log.warning("history unavailable, streams warm up from live data",
                            extra={"source": src.name, "error": str(e)})
                continue
            if self.shard is not None:
                samples = [s for s in samples if owner(s.key, self.shard[1]) == self.shard[0]]
            loop = asyncio.get_running_loop()
            taken = await loop.run_in_executor(self._score_pool, self.engine.load_history, samples)
            self.engine.created.clear()  # these streams got their history just now
            log.info("history loaded", extra={"source": src.name, "samples": taken,
                                              "streams": self.engine.n_streams,
                                              "seconds": round(time.perf_counter() - t0, 2)})

    # -- scoring ---------------------------------------------------------------------
    async def _score_loop(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._queue.get()
            batches = [batch]
            n = len(batch.samples)
            while n < 200_000 and not self._queue.empty():  # coalesce what is waiting
                b = self._queue.get_nowait()
                batches.append(b)
                n += len(b.samples)
            self.metrics.queue_depth.labels("ingest").set(self._queue.qsize())
            try:
                events = await loop.run_in_executor(self._score_pool, self._score, batches)
            except Exception:
                log.exception("scoring failed; batch skipped")
                events = []
            finally:
                for _ in batches:
                    self._queue.task_done()
            for ev in events:
                self._log_event(ev)
            while self._new_streams:
                name, firsts = self._new_streams.pop(0)
                self._fetch_history(name, firsts)

    def _fetch_history(self, source_name: str, firsts: dict[StreamKey, float]) -> None:
        """Streams first seen live: read their history before their first sample, in the background."""
        src = next((s for s in self.sources if s.name == source_name), None)
        lookback = self.cfg.streams.history_lookback
        if src is None or lookback <= 0 or self._stopping:
            return

        async def fetch() -> None:
            until = min(firsts.values())
            try:
                samples = await src.history(list(firsts), until - lookback, until)
            except Exception as e:  # an optimisation only: the streams warm up from live data instead
                log.info("no history for new streams", extra={"source": source_name, "error": str(e)})
                return
            if not samples:
                return
            loop = asyncio.get_running_loop()
            taken = await loop.run_in_executor(self._score_pool, self.engine.load_history, samples, False)
            log.info("history loaded for new streams", extra={"source": source_name, "streams": len(firsts),
                                                              "samples": taken})

        task = asyncio.create_task(fetch(), name=f"history-{source_name}")
        self._history_tasks.add(task)
        task.add_done_callback(self._history_tasks.discard)

    def _score(self, batches: list[SourceBatch]) -> list[AlertEvent]:
        """Runs on the scoring thread: the only code that mutates the engine."""
        t0 = time.perf_counter()
        samples: list[Sample] = []
        spans: list[tuple[str, int, int]] = []  # (source, first, end) of each batch's samples
        for b in batches:
            ss = b.samples
            if self.shard is not None:
                i, n = self.shard
                ss = [s for s in ss if owner(s.key, n) == i]
            spans.append((b.source, len(samples), len(samples) + len(ss)))
            samples.extend(ss)
            for reason, cnt in (b.rejected or {}).items():
                self.metrics.samples_rejected.labels(reason).inc(cnt)
        out = self.engine.process(samples) if samples else None
        if failpoints.ARMED:
            failpoints.hit("engine.tick")
        if self.durable is not None:
            self.durable.scored(batches)
        now = self.clock()
        for b in batches:  # the cursor of the last scored batch is what a restart resumes from
            if b.cursor is not None:
                self.cursors[b.source] = b.cursor
        if out is None:
            return []
        if self.engine.created:
            new = set(self.engine.created)
            self.engine.created.clear()
            for src_name, a, e in spans:
                firsts: dict[StreamKey, float] = {}
                for smp in samples[a:e]:
                    if smp.key in new and smp.key not in firsts:
                        firsts[smp.key] = smp.ts
                if firsts:
                    self._new_streams.append((src_name, firsts))
        rej: dict[str, int] = {}
        for r in out.rejected:
            if r is not None:
                rej[r] = rej.get(r, 0) + 1
        for r, c in rej.items():
            self.metrics.samples_rejected.labels(r).inc(c)
        for src, a, e in spans:  # ingested = accepted for scoring; rejects are counted by reason above
            self.metrics.samples_ingested.labels(src).inc(sum(1 for r in out.rejected[a:e] if r is None))
        newest = max((s.ts for s in samples), default=now)
        for b in batches:
            self.metrics.ingest_lag_seconds.labels(b.source).set(max(0.0, now - newest))
        self.metrics.score_batch_seconds.observe(time.perf_counter() - t0)
        if out.events:
            assert self.notifier is not None
            self.notifier.submit(out.events)
            for ev in out.events:
                self.metrics.alert_transitions.labels(ev.status).inc()
        if self.writebacks:
            recs = [ScoreRecord(s.key, s.ts, s.values, float(out.score[i]), float(out.error[i]),
                                float(out.threshold[i]), int(out.state[i]), bool(out.ready[i]))
                    for i, s in enumerate(samples) if out.rejected[i] is None]
            for wb in self.writebacks:
                wb.submit(recs)
        return out.events

    def _log_event(self, ev: AlertEvent) -> None:
        top = ",".join(f"{f}={s:.2f}" for f, s in ev.top_fields[:3])
        log.warning(f"alert {ev.status}: {ev.key}", extra={
            "alert": ev.status, "stream": str(ev.key), "score": round(ev.score, 4),
            "threshold": round(ev.threshold, 4) if math.isfinite(ev.threshold) else None,
            "error": round(ev.error, 4), "severity": ev.severity, "top_fields": top,
            "starts_at": ev.starts_at})

    # -- training ------------------------------------------------------------------------
    async def _train_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(1.0)
            if self._training_inflight:
                continue
            jobs = await loop.run_in_executor(self._score_pool, self.engine.due_training, self.clock())
            for job in jobs:
                self._training_inflight += 1
                t0 = time.perf_counter()
                n = len(job.seeds)
                log.info("training started", extra={"streams": n, "device": self.train_device,
                                                    "retrain": bool(job.has_champion is not None and job.has_champion.any())})
                try:
                    res = await asyncio.wrap_future(self._trainer.submit(job))
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("training failed")
                    self.metrics.retrain.labels("failure").inc(n)
                    await loop.run_in_executor(self._score_pool, self._release_job, job)
                    continue
                finally:
                    self._training_inflight -= 1
                counts = await loop.run_in_executor(self._score_pool, self.engine.apply_training, job, res,
                                                    self.clock())
                dur = time.perf_counter() - t0
                self.metrics.retrain_duration_seconds.observe(dur)
                for r, c in counts.items():
                    self.metrics.retrain.labels(r).inc(c)
                self.metrics.model_version.set(self.engine.model_version)
                log.info("training done", extra={"streams": n, "accepted": counts["success"],
                                                 "rejected": counts["rejected"], "epochs": res.epochs,
                                                 "seconds": round(dur, 2), "model_version": self.engine.model_version})

    def _release_job(self, job: Any) -> None:
        g = self.engine.groups[job.tag["F"]]
        g.a["training"][np.asarray(job.tag["slots"])] = False

    # -- checkpoints -----------------------------------------------------------------------
    def _load_checkpoint(self) -> None:
        """The newest checkpoint that loads and fits; refused ones are moved aside (older ones tried next)."""
        d = Path(self.cfg.state.dir)

        def apply(c: ckpt.Checkpoint) -> None:
            eng = Engine(self.cfg, device=self.device)  # a fresh engine per try: no half-restored state
            eng.restore(c.meta, c.tensors)
            self.engine = eng

        r = ckpt.restore(d, apply, on_bad=self.cfg.state.on_bad_checkpoint)
        c = r.checkpoint
        if c is None:
            self.engine = Engine(self.cfg, device=self.device)
            if r.refused:
                log.error("every checkpoint refused; starting fresh", extra={"dir": str(d)})
            else:
                log.info("no checkpoint, starting fresh", extra={"dir": str(d)})
            return
        self._restored_wal = c.wal_position
        self.cursors = dict(c.meta.get("cursors", {}))
        self.checkpoint_loaded = True
        self.metrics.model_version.set(self.engine.model_version)
        log.info("resumed from checkpoint", extra={"path": str(c.path), "streams": self.engine.n_streams,
                                                   "model_version": self.engine.model_version})

    def _snapshot(self) -> tuple[dict, dict[str, torch.Tensor]]:
        meta, tensors = self.engine.snapshot()
        meta["cursors"] = dict(self.cursors)
        meta["saved_at"] = self.clock()
        wal = self.durable.covered() if self.durable is not None else None
        if wal is not None:
            meta[ckpt.WAL_KEY] = wal.to_json()
        return meta, {k: v.clone() for k, v in tensors.items()}

    async def checkpoint(self) -> Path:
        loop = asyncio.get_running_loop()
        meta, tensors = await loop.run_in_executor(self._score_pool, self._snapshot)
        path = await asyncio.to_thread(ckpt.save, self.cfg.state.dir, meta, tensors, self.cfg.state.keep)
        self.metrics.checkpoint_last_success.set(self.clock())
        if self.durable is not None:  # segments no kept checkpoint needs go
            await asyncio.to_thread(self.durable.checkpointed, WalPosition.from_json(meta.get(ckpt.WAL_KEY)))
        log.info("checkpoint written", extra={"path": str(path), "streams": self.engine.n_streams})
        return path

    async def _checkpoint_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.state.checkpoint_interval)
            try:
                await self.checkpoint()
            except Exception:
                log.exception("checkpoint failed")

    async def _supervised(self, name: str, loop_fn: Any) -> None:
        """Run a background loop; if it dies, say so, count it and start it again (never silently gone)."""
        while True:
            try:
                await loop_fn()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background task died; restarting it", extra={"task": name})
                self.metrics.task_restarts.labels(name).inc()
                await asyncio.sleep(1.0)

    async def _gauge_loop(self) -> None:
        while True:
            counts = self.engine.state_counts()
            for k, v in counts.items():
                self.metrics.streams.labels(k).set(v)
            for src in self.sources:
                self.metrics.source_up.labels(src.name).set(1 if src.connected else 0)
            await asyncio.sleep(1.0)

    # -- StatusProvider (read by the HTTP server) ----------------------------------------------
    def ready(self) -> tuple[bool, str]:
        if self._stopping:
            return False, "shutting down"
        if not self._started:
            return False, "starting: loading the checkpoint or the sources' history"
        down = [s.name for s in self.sources if not s.connected]
        if down:
            return False, f"sources not connected: {', '.join(down)}"
        return True, ""

    def state_counts(self) -> dict[str, int]:
        c = self.engine.state_counts()
        return {"firing": c["firing"], "pending": c["pending"], "warming": c["warming"], "ok": c["ok"]}

    def _stream_dict(self, g: Any, slot: int, key: StreamKey) -> dict:
        a = g.a
        st = int(g.alerts.a["state"][slot])
        state = STATE_NAMES[st] if a["ready"][slot] else "warming"
        last = float(a["last_ts"][slot])
        return {"stream": str(key), "measurement": key.measurement, "labels": dict(key.labels), "state": state,
                "score": float(a["score"][slot]), "error": float(a["error"][slot]),
                "threshold": float(a["threshold"][slot]), "model_version": int(a["version"][slot]),
                "last_ts": last if math.isfinite(last) else None, "fields": list(g.fields[slot]),
                "alerts_total": int(g.alerts.a["fired"][slot])}

    def streams(self, state: str | None = None, limit: int | None = None) -> list[dict]:
        out = []
        for g, slot, key in self.engine.iter_streams():
            d = self._stream_dict(g, slot, key)
            if state is None or d["state"] == state:
                out.append(d)
        order = {"firing": 0, "pending": 1, "warming": 2, "ok": 3}
        out.sort(key=lambda d: (order[d["state"]], -d["score"]))
        return out[:limit] if limit is not None else out

    def stream_history(self, stream: str) -> dict | None:
        try:
            key = StreamKey.parse(stream)
        except Exception:
            return None
        loc = self.engine.index.get(key)
        if loc is None:
            return None
        g = self.engine.groups[loc[0]]
        slot = loc[1]
        n = min(int(g.a["hist_n"][slot]), g.chart)
        ts, v, _fl = g.history(np.array([slot]), last=n)
        cp = (int(g.a["hist_n"][slot]) - n + np.arange(n)) % g.chart
        score = g.a["ch_score"][slot, cp]
        thr = g.a["ch_thr"][slot, cp]
        st = g.a["ch_state"][slot, cp]
        spans: list[list[float | None]] = []
        start = None
        for i in range(n):
            if st[i] == FIRING and start is None:
                start = float(ts[0, i])
            elif st[i] != FIRING and start is not None:
                spans.append([start, float(ts[0, i])])
                start = None
        if start is not None:
            spans.append([start, None])
        return {"ts": ts[0].tolist(), "values": v[0].tolist(), "fields": list(g.fields[slot]),
                "score": score.tolist(), "threshold": thr.tolist(), "error": g.a["ch_err"][slot, cp].tolist(),
                "alert_spans": spans,
                "pending": bool((st == PENDING).any())}

    async def reload(self) -> tuple[bool, str]:
        """Validate the whole file, then apply what can change live; keep the old config on error."""
        if not self.config_path:
            return False, "no config file to reload"
        try:
            new = load_config(self.config_path)
        except ConfigError as e:
            self.metrics.config_last_reload_successful.set(0)
            log.error("reload failed, keeping the old config", extra={"error": str(e)})
            return False, str(e)
        restart_needed = [name for name in ("server", "sources", "model", "streams", "state", "sinks", "fields")
                          if getattr(new, name) != getattr(self.cfg, name)]
        from ..alerts.state import AlertRules

        a = new.alerts
        rules = AlertRules(a.enter, a.exit, a.for_, a.resolve_for, a.cooldown, a.flap_window, a.flap_max, a.flap_hold)

        def apply() -> None:
            for g in self.engine.groups.values():
                g.alerts.rules = rules
                th = new.detect.threshold
                g.thr.risk = th.risk
            self.engine.cfg.alerts = new.alerts
            self.engine.cfg.detect = new.detect
            self.engine.cfg.train = new.train
            self.engine.cfg.metrics = new.metrics
            self.engine.cfg.logging = new.logging

        await asyncio.get_running_loop().run_in_executor(self._score_pool, apply)
        logging.getLogger().setLevel(new.logging.level.upper())
        self.metrics.config_last_reload_successful.set(1)
        msg = "config reloaded"
        if restart_needed:
            msg += f"; changes to {', '.join(restart_needed)} take effect after a restart"
        log.info(msg)
        return True, msg

    # -- shutdown ----------------------------------------------------------------------------------
    async def stop(self) -> None:
        assert self._stop_lock is not None
        async with self._stop_lock:
            if self._stopping:
                return
            self._stopping = True
            log.info("shutting down: stopping sources")
            # 1. sources
            for src in self.sources:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(src.stop(), timeout=10)
            for t in [*self._source_tasks, *self._history_tasks]:
                t.cancel()
            await asyncio.gather(*self._source_tasks, *self._history_tasks, return_exceptions=True)
            # 2. drain
            if self._queue is not None:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._queue.join(), timeout=30)
            # 3. background loops and training
            for t in self._tasks:
                if t.get_name() in ("score", "train", "checkpoint", "gauges"):
                    t.cancel()
            self._trainer.shutdown()
            # 4. final checkpoint
            try:
                await self.checkpoint()
            except Exception:
                log.exception("final checkpoint failed")
            # 5. write-backs and notifier flush within their bounds
            for wb in self.writebacks:
                with contextlib.suppress(Exception):
                    await wb.stop()
            if self.notifier is not None:
                with contextlib.suppress(Exception):
                    await self.notifier.stop()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            # 6. HTTP server last
            if self._server is not None:
                await self._server.close()
            self._score_pool.shutdown(wait=True)
            if self.durable is not None:
                self.durable.close()
            log.info("stopped")


async def _amain(cfg: SentinelConfig, config_path: str | None, shard: str | None) -> int:
    d = Daemon(cfg, config_path=config_path, shard=shard)
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
    await stop.wait()
    await d.stop()
    return 0


def main(cfg: SentinelConfig, config_path: str | None = None, shard: str | None = None) -> int:
    setup_logging(cfg.logging.level, cfg.logging.format)
    torch.set_num_threads(cfg.model.score_threads)
    return asyncio.run(_amain(cfg, config_path, shard))
