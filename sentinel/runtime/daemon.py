"""``sentinel run``: the daemon. It builds the runtime's parts, starts them, and stops them in order.

::

    sources ──emit──▶ IngestQueue ──take──▶ Tick (engine thread) ──▶ notifier (outbox) ──▶ sinks
                      (ingest.py)           (tick.py)             └─▶ write-backs
    TrainingScheduler (scheduler.py): due → worker process → apply, on the engine thread
    Checkpointer (checkpointer.py): state copied in chunks between ticks, atomic write off the engine thread
    HistoryWarmup (warmup.py), Status (status.py, read by the HTTP server), reloaders (reload.py)

Shutdown order (:meth:`Daemon.stop`), each step idempotent:
 1. stop the sources: no new batches;
 2. drain the ingest queue through the tick, so every accepted sample is scored;
 3. stop the tick, the trainer scheduler and its worker (a job in flight is dropped: re-issued after restart);
 4. write the final checkpoint (cursors and the write-ahead log position now match what was scored);
 5. stop write-backs and the notifier: they flush within their bounds, the outbox keeps the rest;
 6. close the HTTP server last, so /-/healthy answers until the end; then the write-ahead log.

Start order: restore the newest good checkpoint, build the parts, serve HTTP (writes are
logged and queued from now on), start the loops and sources, replay the write-ahead log
after the checkpoint's position through the receivers (:mod:`.durable`), and only then
report ready. The train, checkpoint and gauge loops are supervised: one that dies is
logged, counted (``sentinel_task_restarts_total``) and started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from .. import __version__
from ..alerts.notifier import Notifier
from ..config import ConfigError, SentinelConfig, load_config, override
from ..feedback.service import FeedbackService
from ..feedback.silences import SilenceReader
from ..lineprotocol import REASONS as LP_REASONS
from ..metrics import Metrics
from ..model.train import resolve_device
from ..sources.parsepool import ParsePool, start_pool
from ..sources.running import RunningSource
from ..sources.selector import BOUND_REASONS
from ..state.wal import WalPosition
from ..types import StreamKey
from .checkpointer import Checkpointer
from .durable import Durability
from .engine import REJECT_REASONS, Engine
from .engine.training import tick_floors
from .engine_thread import EngineThread
from .factory import build_source, build_writeback
from .ingest import IngestQueue
from .reload import Reloader, SectionReloader, ServerReloader, reload_all
from .scheduler import TrainingScheduler
from .shard import Shard, parse_shard
from .status import Status
from .tick import Tick, run_ticks
from .trainer import BackgroundTrainer
from .warmup import HistoryWarmup

log = logging.getLogger("sentinel")


class Daemon:
    """The running service. ``start()`` brings it up, ``stop()`` drains and checkpoints."""

    def __init__(self, cfg: SentinelConfig, *, config_path: str | None = None,
                 registry: CollectorRegistry | None = None, clock: Callable[[], float] = time.time,
                 shard: str | None = None, inline_training: bool = False,
                 overrides: list[tuple[str, Any, str]] | None = None, cluster: Any = None):
        self.cfg = cfg
        self.cluster = cluster  # --role scorer: sentinel.cluster.scorer.ScorerRole (state and input on JetStream)
        self.config_path = config_path
        self.overrides = list(overrides or [])  # (key, value, option): command-line settings, kept at reload
        self.clock = clock
        self.metrics = Metrics(registry)
        self.shard = Shard(parse_shard(shard))
        self.device = "cuda" if cfg.model.device == "cuda" else "cpu"  # scoring device
        self.train_device = str(resolve_device(cfg.model.device))
        self.engine = Engine(cfg, device=self.device)
        self.thread = EngineThread()
        self.trainer = BackgroundTrainer(self.train_device, cfg.train.threads, inline=inline_training)
        self.checkpointer = Checkpointer(cfg.state, self.metrics, clock)
        self.status = Status(lambda: self.engine, self.ready)
        self.feedback = FeedbackService(lambda: self.engine, self.thread.call, self.metrics, clock)
        self.queue = IngestQueue(cfg.queues.ingest_max_batches, cfg.queues.ingest_overflow, self.metrics)
        self.checkpoint_loaded = False
        self.sources: list[RunningSource] = []
        self.writebacks: list[Any] = []
        self.notifier: Notifier | None = None
        self.tick: Tick | None = None
        self.warmup: HistoryWarmup | None = None
        self.scheduler: TrainingScheduler | None = None
        self.durable: Durability | None = None  # the write-ahead log of pushed writes
        self.parse_pool: ParsePool | None = None  # server.ingest_workers
        self._tasks: dict[str, asyncio.Task] = {}
        self._source_tasks: list[asyncio.Task] = []
        self._server: Any = None
        self._started = False  # /-/ready answers 503 "starting" until history is loaded and loops run
        self._stopping = False
        self._stop_lock = asyncio.Lock()
        self.metrics.add_stream_collector(  # rendered from the engine's arrays on each scrape (band included)
            columns=lambda: self.engine.stream_columns(self.cfg.metrics.per_stream))
        self.metrics.add_reasons(REJECT_REASONS, LP_REASONS, BOUND_REASONS)  # exported as 0 from the start

    # -- lifecycle -----------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.cfg
        if self.cluster is not None:  # partition checkpoints from the object store
            self.engine, cursors, self.checkpoint_loaded = await self.cluster.resume(
                lambda: Engine(self.cfg, device=self.device))
        else:
            self.engine, cursors, self.checkpoint_loaded = self.checkpointer.resume(
                self.engine, lambda: Engine(self.cfg, device=self.device))
        external = cfg.server.external_url or f"http://{cfg.server.listen}/"
        self.notifier = Notifier(cfg.sinks, self.metrics, external_url=external, clock=self.clock)
        for plugin in self.cluster.sources() if self.cluster is not None else []:
            self.sources.append(RunningSource(plugin, self.metrics))
        for sc in cfg.sources if self.cluster is None else []:
            plugin = build_source(sc, cfg, self.metrics, cursors.get(sc.name), clock=self.clock)
            self.sources.append(RunningSource(plugin, self.metrics))
            wb = build_writeback(sc, self.metrics)
            if wb is not None:
                self.writebacks.append(wb)
        self.durable = Durability(cfg, [s.plugin for s in self.sources], self.checkpointer.restored_wal,
                                  self.metrics)
        self.parse_pool = await start_pool(cfg.server.ingest_workers, [s.plugin for s in self.sources],
                                           lambda: self.metrics.task_restarts.labels("ingest-worker").inc())
        if self.parse_pool is not None:
            self.metrics.task_restarts.labels("ingest-worker")  # exported as 0 from the start
        self.tick = Tick(self.engine, self.metrics, shard=self.shard, notifier=self.notifier,
                         writebacks=self.writebacks, clock=self.clock, cursors=cursors, durable=self.durable)
        self.warmup = HistoryWarmup(self.engine, self.thread.call, self.shard, cfg.streams.history_lookback,
                                    self.clock)
        self.scheduler = scheduler = TrainingScheduler(self.engine, metrics=self.metrics, clock=self.clock, device=self.train_device,
                                      trainer=self.trainer, call=self.thread.call,
                                      gate=self.checkpointer.weights_free)
        await self._start_server()
        if not self.checkpoint_loaded:
            await self.warmup.fresh_start(self.sources)
        self._spawn("notifier", self.notifier.run())
        for wb in self.writebacks:
            self._spawn(f"writeback-{type(wb).__name__}", wb.run())
        # the tick is never held: a checkpoint copies the state in chunks between ticks
        self._spawn("tick", run_ticks(self.queue, self.tick, self.thread.call_now, self._new_streams))
        self._spawn("train", self._supervised("train", scheduler.run))
        self._spawn("checkpoint", self._supervised("checkpoint", lambda: self.checkpointer.run(self.checkpoint)))
        self._spawn("gauges", self._supervised("gauges", self._gauge_loop))
        silences = SilenceReader(cfg.sinks.alertmanagers, self.feedback, self.thread.call, lambda: self.engine,
                                 self.clock)
        self._spawn("silences", self._supervised("silences", silences.run))
        for src in self.sources:
            self._source_tasks.append(asyncio.create_task(src.run(self.queue.put), name=f"source-{src.name}"))
        if self.cluster is not None:
            self._source_tasks.append(asyncio.create_task(self.cluster.run(self), name="cluster"))
        # acknowledged writes after the checkpoint: scored before ready, as if they had just arrived
        if await self.durable.replay():
            await self.durable.wait_scored()
        self._started = True
        log.info("sentinel started", extra={"listen": self.listen_url, "sources": [s.name for s in self.sources],
                                            "streams": self.engine.n_streams, "train_device": self.train_device,
                                            "resumed": self.checkpoint_loaded})

    def _spawn(self, name: str, coro: Any) -> None:
        self._tasks[name] = asyncio.create_task(coro, name=name)

    async def _supervised(self, name: str, loop_fn: Callable[[], Any]) -> None:
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

    @property
    def training_inflight(self) -> int:
        return self.scheduler.inflight if self.scheduler is not None else 0

    @property
    def listen_url(self) -> str:
        return "" if self._server is None else self._server.url

    async def _start_server(self) -> None:
        from ..server import build_app, load_web_config, serve

        routes: list = []
        route_auth: dict = {}  # a receiver's own token / user passes beside the web users (D11)
        for src in self.sources:
            routes.extend(src.http_routes())
            receiver = getattr(src.plugin, "receiver", None)
            if receiver is not None and hasattr(receiver, "route_auth"):
                route_auth.update(receiver.route_auth())
        routes.extend(self.feedback.routes())
        wc = load_web_config(self.cfg.server.web_config_file) if self.cfg.server.web_config_file else None
        app = build_app(self, self.metrics.registry, extra_routes=routes, web_config=wc, version=__version__,
                        status_page_streams=self.cfg.server.status_page_streams,
                        client_max_size=self.cfg.server.max_body_bytes, open_probes=self.cfg.server.open_probes,
                        route_auth=route_auth)
        self._server = await serve(app, self.cfg.server.listen, wc)

    def _new_streams(self, source: str, firsts: dict[StreamKey, float]) -> None:
        assert self.warmup is not None
        if not self._stopping:
            self.warmup.new_streams(next((s for s in self.sources if s.name == source), None), firsts)

    async def checkpoint(self) -> Path | None:
        assert self.tick is not None
        if self.cluster is not None:
            await self.cluster.checkpoint(self)
            return None
        tick, durable = self.tick, self.durable

        def start() -> tuple[WalPosition | None, dict[str, dict | None]]:  # on the engine thread
            return (durable.covered() if durable is not None else None), dict(tick.cursors)

        path, covered = await self.checkpointer.save(self.thread, self.engine, start)
        if durable is not None:  # segments no kept checkpoint needs go
            await asyncio.to_thread(durable.checkpointed, covered)
        return path

    async def _gauge_loop(self) -> None:
        while True:
            for k, v in self.engine.state_counts().items():
                self.metrics.streams.labels(k).set(v)
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
        return self.status.state_counts()

    def streams(self, state: str | None = None, limit: int | None = None) -> list[dict]:
        return self.status.streams(state, limit)

    def stream_history(self, stream: str) -> dict | None:
        return self.status.stream_history(stream)

    def feedback_list(self) -> list[dict]:
        return self.feedback.entries()

    # -- reload ----------------------------------------------------------------------------------
    def reloaders(self) -> list[Reloader]:
        """One per config section; see :mod:`sentinel.runtime.reload` for what each applies."""
        def engine(running: SentinelConfig) -> None:
            self.engine.reconfigure(running.model_copy(update={
                k: getattr(self.engine.cfg, k) for k in ("server", "sources", "streams", "model", "state", "queues",
                                                         "fields")}))
            tick_floors(self.engine)  # alerts.resolve_for_ticks / for_ticks on the running streams (reconfigure sets it
            # only with a false-alert budget)

        def sinks(running: SentinelConfig) -> list[str]:
            return self.notifier.apply_config(running.sinks) if self.notifier is not None else []

        def level(running: SentinelConfig) -> None:
            logging.getLogger().setLevel(running.logging.level.upper())

        state = "every stream's fitted threshold state has the running value; start fresh to change it"
        return [
            SectionReloader("train", live=[f"train.{k}" for k in type(self.cfg.train).model_fields if k != "threads"],
                            on_apply=engine),
            SectionReloader("detect", live=["detect.threshold.risk", "detect.score_decades"],
                            refuse={f"detect.threshold.{k}": state for k in ("method", "depth", "max_peaks")},
                            on_apply=engine),
            SectionReloader("alerts", live=["alerts"], on_apply=engine),
            SectionReloader("sinks", live=["sinks.webhooks", "sinks.alertmanagers", "sinks.log_alerts"],
                            on_apply=sinks),
            SectionReloader("metrics", live=["metrics"]),
            SectionReloader("logging", live=["logging.level"], on_apply=level),
            ServerReloader(self._server),
            *(SectionReloader(n) for n in ("sources", "streams", "model", "state", "queues", "fields", "cluster")),
        ]

    async def reload(self) -> tuple[bool, str]:
        """Validate the whole file, then apply what can change live; keep the old config on error."""
        if not self.config_path:
            return False, "no config file to reload"
        try:
            new = load_config(self.config_path)
            for key, value, option in self.overrides:  # --listen / --web.config.file outrank the file
                new = override(new, key, value, option)
        except ConfigError as e:
            self.metrics.config_last_reload_successful.set(0)
            log.error("reload failed, keeping the old config", extra={"error": str(e)})
            return False, str(e)
        out = await self.thread.call(reload_all, self.reloaders(), self.cfg, new)
        self.metrics.config_last_reload_successful.set(1 if out.ok else 0)
        if not out.ok:
            log.error(out.message)
            return False, out.message
        self.cfg = out.config
        (log.warning if out.change.restart else log.info)(out.message)
        return True, out.message

    # -- shutdown ----------------------------------------------------------------------------------
    async def stop(self) -> None:
        async with self._stop_lock:
            if self._stopping:
                return
            self._stopping = True
            log.info("shutting down: stopping sources")
            # 1. sources (and the history fetches of new streams)
            for src in self.sources:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(src.stop(), timeout=10)
            for t in self._source_tasks:
                t.cancel()
            await asyncio.gather(*self._source_tasks, return_exceptions=True)
            if self.warmup is not None:
                await self.warmup.close()
            # 2. drain
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.queue.join(), timeout=30)
            # 3. tick, trainer scheduler, checkpoint and gauge loops; the training worker
            for name in ("tick", "train", "checkpoint", "gauges", "silences"):
                if name in self._tasks:
                    self._tasks[name].cancel()
            self.trainer.shutdown()
            # 4. final checkpoint
            if self.tick is not None:
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
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
            # 6. HTTP server last
            if self._server is not None:
                await self._server.close()
            if self.parse_pool is not None:  # after the server: no write waits on a worker any more
                await self.parse_pool.close()
            self.thread.shutdown()
            if self.durable is not None:
                self.durable.close()
            if self.cluster is not None:
                await self.cluster.close()
            log.info("stopped")
