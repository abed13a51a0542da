"""``sentinel run --role router``: parse, validate and publish; no engine, no state on disk.

* Push sources (InfluxDB ``receiver`` / ``subscription`` modes): their ``/write`` and
  ``/api/v2/write`` are mounted in every router; a body is answered 2xx only once JetStream has
  stored its samples (:class:`~.publisher.Publisher`), so any router may die at any time.
  A subscription-mode source is served as a plain receiver here (the database is not read back).
* Polling sources (InfluxDB polls, PostgreSQL, MQTT, the simulator) run in exactly one router:
  the holder of the KV lease ``lease.pollers``. Their cursors live in the KV (``cursor.<name>``),
  written after each batch is stored, so the next holder resumes where the last one stopped
  (a batch published but not yet recorded is published again; scorers drop the repeats).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry

from .. import __version__
from ..config import SentinelConfig
from ..lineprotocol import REASONS as LP_REASONS
from ..metrics import Metrics
from ..retry import backoff_delays
from ..runtime.factory import build_source
from ..sources.running import RunningSource
from ..sources.selector import BOUND_REASONS
from ..types import SourceBatch
from .js import Nats, connect, kv_get
from .lease import Lease
from .metrics import RouterMetrics
from .publisher import Publisher
from .status import cluster_route

log = logging.getLogger("sentinel")

PUSH_MODES = ("receiver", "subscription")


def is_push(sc: Any) -> bool:
    return sc.type == "influxdb" and sc.mode in PUSH_MODES


class Router:
    def __init__(self, cfg: SentinelConfig, *, registry: CollectorRegistry | None = None,
                 clock: Callable[[], float] = time.time, holder: str | None = None):
        self.cfg = cfg
        self.clock = clock
        self.metrics = Metrics(registry)
        self.metrics.add_reasons(LP_REASONS, BOUND_REASONS)
        self.rmetrics = RouterMetrics(self.metrics.registry)
        self.holder = holder or f"{socket.gethostname()}-{os.getpid()}"
        self.nats: Nats | None = None
        self.publisher: Publisher | None = None
        self.push: list[Any] = []
        self._pollers: list[RunningSource] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._server: Any = None
        self._started = False

    @property
    def listen_url(self) -> str:
        return "" if self._server is None else self._server.url

    async def start(self) -> None:
        from ..server import build_app, load_web_config, serve

        cfg = self.cfg
        self.nats = await connect(cfg.cluster, f"sentinel-router-{self.holder}")
        self.publisher = Publisher(self.nats, self.rmetrics)
        routes: list = [cluster_route(lambda: self.nats)]
        for sc in cfg.sources:
            if is_push(sc):
                plugin: Any = build_source(sc, cfg, self.metrics, None, clock=self.clock)
                plugin.receiver.deliver = self._deliver  # stored in JetStream before the 2xx
                routes.extend(plugin.http_routes())
                self.push.append(plugin)
        polled = [sc for sc in cfg.sources if not is_push(sc)]
        if polled:
            lease = Lease(self.nats.kv, "lease.pollers", self.holder, cfg.cluster.lease_ttl, self.clock)
            self._tasks.append(asyncio.create_task(lease.hold(lambda: self._poll(polled), self._stop),
                                                   name="poller-lease"))
        wc = load_web_config(cfg.server.web_config_file) if cfg.server.web_config_file else None
        app = build_app(self, self.metrics.registry, extra_routes=routes, web_config=wc, version=__version__,
                        client_max_size=cfg.server.max_body_bytes)
        self._server = await serve(app, cfg.server.listen, wc)
        self._started = True
        log.info("sentinel router started", extra={"listen": self.listen_url, "push": [p.name for p in self.push],
                                                   "polled": [s.name for s in polled],
                                                   "partitions": cfg.cluster.partitions})

    async def _deliver(self, pushed: Any) -> bool:
        assert self.publisher is not None
        for reason, n in pushed.outcome.rejected.items():
            self.metrics.samples_rejected.labels(reason).inc(n)
        return await self.publisher.publish(pushed.outcome.samples)

    # -- pollers, while this router holds the lease ---------------------------------------------
    async def _poll(self, polled: list[Any]) -> None:
        assert self.nats is not None
        self.rmetrics.lease_held.set(1)
        runs: list[RunningSource] = []
        try:
            for sc in polled:
                e = await kv_get(self.nats.kv, f"cursor.{sc.name}")
                resume = json.loads(e.value) if e is not None else None
                runs.append(RunningSource(build_source(sc, self.cfg, self.metrics, resume, clock=self.clock),
                                          self.metrics))
            self._pollers = runs
            await asyncio.gather(*(r.run(self._emit_polled) for r in runs))
        finally:
            for r in runs:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(r.stop(), 10)
            self._pollers = []
            self.rmetrics.lease_held.set(0)

    async def _emit_polled(self, batch: SourceBatch) -> None:
        """Publish (retrying with backoff until stored or stopped), then record the cursor."""
        assert self.publisher is not None and self.nats is not None
        for reason, n in (batch.rejected or {}).items():
            self.metrics.samples_rejected.labels(reason).inc(n)
        delays = backoff_delays(0.2, 10.0)
        while not await self.publisher.publish(batch.samples):
            if self._stop.is_set():
                raise asyncio.CancelledError
            await asyncio.sleep(next(delays))
        if batch.cursor is not None:
            with contextlib.suppress(Exception):
                await self.nats.kv.put(f"cursor.{batch.source}", json.dumps(batch.cursor).encode())

    # -- StatusProvider --------------------------------------------------------------------------
    def ready(self) -> tuple[bool, str]:
        if not self._started or self._stop.is_set():
            return False, "starting" if not self._started else "shutting down"
        if self.nats is None or not self.nats.nc.is_connected:
            return False, "not connected to NATS"
        return True, ""

    def state_counts(self) -> dict[str, int]:
        return {}

    def streams(self, state: str | None = None, limit: int | None = None) -> list[dict]:
        return []  # a router holds no streams: ask the scorers

    def stream_history(self, stream: str) -> dict | None:
        return None

    async def reload(self) -> tuple[bool, str]:
        return False, "a router does not reload its config; restart it (it holds no state)"

    async def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.close()
        if self.nats is not None:
            await self.nats.close()
        log.info("router stopped")
