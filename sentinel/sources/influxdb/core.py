"""The InfluxDB source's shared state and plumbing (the modes are in poll.py, subscription.py, backfill.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import aiohttp
from aiohttp import web

from ...clients.influxql import InfluxQLClient
from ...config.source_influxdb import InfluxDBSourceConfig
from ...metrics import Metrics
from ...types import Sample, SourceBatch, StreamKey
from ..base import Plugin
from ..receiver import LineProtocolReceiver, Pushed
from ..selector import StreamSelector
from .flux import FluxClient, flux_window
from .query import (
    _NS,
    influxql_window,
    merge_points,
    own_writeback_measurement,
    page_end,
    selection_from,
    series_from_influxql,
)


class InfluxDBCore(Plugin):
    """The state every InfluxDB mode shares: config, cursor, clients, the stream selector, the push queue."""

    def __init__(self, cfg: InfluxDBSourceConfig, *, metrics: Metrics, clock: Callable[[], float] = time.time,
                 resume: dict | None = None):
        super().__init__(cfg, metrics=metrics, clock=clock)
        self.selector = StreamSelector(selection_from(cfg), on_refused=lambda _k: metrics.streams_refused.inc())
        self._exclude = own_writeback_measurement(cfg)
        t = (resume or {}).get("t")
        self._t: int | None = int(t) if t is not None else None
        self._stop = asyncio.Event()
        self._done: asyncio.Event | None = None
        self.connected = cfg.mode == "receiver"  # set by the plugin; cleared by RunningSource on a failure
        self._session: aiohttp.ClientSession | None = None
        self._flux: FluxClient | None = None
        self._queue: asyncio.Queue[Pushed] = asyncio.Queue(maxsize=cfg.receiver.max_pending_batches)
        self.stats = {"deduplicated": 0, "push_buffer_dropped": 0, "backfill_rounds": 0, "pages": 0,
                      "unavailable": 0}
        self._buffer: list[Pushed] = []
        self._held = 0
        self._emitted: dict[StreamKey, float] = {}
        self.receiver: LineProtocolReceiver | None = None
        if cfg.mode in ("subscription", "receiver") and cfg.receiver.enabled:
            dbs = [cfg.database] if cfg.mode == "subscription" else list(cfg.receiver.databases)
            self.receiver = LineProtocolReceiver(cfg.receiver, self.selector, self._deliver, databases=dbs,
                                                 clock=clock)


    # ------------------------------------------------------------------ protocol
    @property
    def cursor(self) -> dict | None:
        return None if self._t is None else {"t": self._t}

    def http_routes(self) -> list[web.RouteDef]:
        """``POST /write`` and ``/api/v2/write`` for the subscription and receiver modes."""
        return self.receiver.routes() if self.receiver is not None else []

    async def history(self, keys: list[StreamKey] | None, since: float, until: float) -> list[Sample]:
        """Samples in ``[since, until)`` read from the database (paged); [] in receiver mode or if disabled."""
        if not self.cfg.history or self.cfg.mode == "receiver" or until <= since:
            return []
        want = set(keys) if keys is not None else None
        meas = sorted({k.measurement for k in keys}) if keys is not None else None
        if meas is not None and self.cfg.measurements:
            meas = [m for m in meas if m in self.cfg.measurements]
        if meas == []:
            return []
        t, upper = int(since * _NS) - 1, int(until * _NS) - 1
        out: list[Sample] = []
        for _ in range(1_000_000):
            samples, _rej, end, _cut, _newest = await self._page(t, upper, meas)
            out.extend(s for s in samples if want is None or s.key in want)
            if end >= upper or end <= t:
                break
            t = end
        out.sort(key=lambda s: s.ts)
        return out


    # ------------------------------------------------------------------ plumbing
    def _http(self) -> InfluxQLClient:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return InfluxQLClient(self.cfg, self._session)

    async def _close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._flux is not None:
            await self._flux.close()
            self._flux = None

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=max(0.0, seconds))

    @property
    def retry_floor(self) -> float:
        """RunningSource retries an error other than an outage no faster than this."""
        return self.cfg.poll_interval

    def _now_ns(self) -> int:
        return int(self.clock() * _NS)

    def _start_t(self) -> int:
        if self._t is None:
            self._t = self._now_ns() - int((self.cfg.lateness + self.cfg.start_from) * _NS)
        return self._t

    def _batch(self, samples: list[Sample], rejected: dict[str, int] | None = None) -> SourceBatch:
        return SourceBatch(self.name, samples, self.cursor, self.clock(), dict(rejected or {}))

    async def _page(self, after: int, upto: int, measurements: list[str] | None = None
                    ) -> tuple[list[Sample], dict[str, int], int, bool, int]:
        """One page of ``(after, upto]``: (samples, rejected, page end, page was cut, newest point's ns)."""
        n = self.cfg.page_size
        if self.cfg.mode == "poll_flux":
            if self._flux is None:
                self._flux = FluxClient(self.cfg)
            series = await self._flux.query(flux_window(self.cfg, after, upto, n, measurements))
        else:
            q = influxql_window(self.cfg, after, upto, n, measurements)
            series = series_from_influxql(await self._http().query(q, self.cfg.database))
        end = page_end(series, n, upto)
        samples: list[Sample] = []
        rejected: dict[str, int] = {}
        newest = after
        for ts, m, tags, fv in merge_points(series, end):
            if m != self._exclude:
                self.selector.add_point(m, tags, fv, ts, samples, rejected)
            newest = ts
        self.stats["pages"] += 1
        return samples, rejected, end, end < upto, newest

    async def _deliver(self, p: Pushed) -> bool:
        """A push from the receiver; the push modes handle it (:mod:`.subscription`)."""
        raise NotImplementedError
