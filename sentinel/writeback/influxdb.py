"""Score write-back to InfluxDB: one point per scored sample, batched.

Each :class:`~sentinel.types.ScoreRecord` becomes a point of ``write_back.measurement``
(default ``sentinel_score``) carrying the stream's own tags plus
``source_measurement=<its measurement>``, with fields ``score``, ``error``,
``threshold`` (floats), ``alert_state`` (integer: 0 ok, 1 pending, 2 firing, 3 resolved)
and ``ready`` (boolean), at the sample's own timestamp. A Grafana panel can then
query the raw series and ``sentinel_score`` with the same tag filter.

``submit`` never blocks and is thread-safe: records go to a bounded buffer (oldest
dropped and counted in ``sentinel_queue_dropped_total{queue="writeback_influxdb"}``);
``run`` writes batches of ``batch_size`` at least every ``flush_interval``, retrying a
failed batch with backoff while keeping it at the head of the buffer. ``stop`` is
idempotent and flushes for at most ``stop_timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
from collections import deque

import aiohttp

from ..clients.influxql import InfluxQLClient
from ..config.source_influxdb import InfluxDBSourceConfig
from ..errors import SourceError, SourceUnavailable
from ..lineprotocol import FieldValue, format_line
from ..metrics import Metrics
from ..retry import backoff_delays
from ..types import ScoreRecord

log = logging.getLogger(__name__)

QUEUE = "writeback_influxdb"


def records_to_lines(records: list[ScoreRecord], measurement: str = "sentinel_score",
                     source_tag: str = "source_measurement") -> list[str]:
    """Line protocol for score records (non-finite numbers are left out of the point)."""
    lines = []
    for r in records:
        fields: dict[str, FieldValue] = {}
        for name, v in (("score", r.score), ("error", r.error), ("threshold", r.threshold)):
            if math.isfinite(v):
                fields[name] = float(v)
        fields["alert_state"] = int(r.alert_state)
        fields["ready"] = bool(r.ready)
        tags = dict(r.key.labels)
        tags[source_tag] = r.key.measurement
        lines.append(format_line(measurement, sorted(tags.items()), fields, round(r.ts * 1e9)))
    return lines


class InfluxDBWriteBack:
    """Batched, bounded, non-blocking writer of ScoreRecords to InfluxDB (see module docstring).

    ``cfg`` is the InfluxDB source config; its ``write_back`` section configures this,
    and url/database/bucket/credentials default to the source's own.
    """

    def __init__(self, cfg: InfluxDBSourceConfig, *, metrics: Metrics):
        self.cfg = cfg
        self.wb = cfg.write_back
        self.metrics = metrics
        self._buf: deque[ScoreRecord] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._done: asyncio.Event | None = None
        self.written = 0
        self.dropped = 0

    # ------------------------------------------------------------------ producer side
    def submit(self, records: list[ScoreRecord]) -> None:
        """Queue records; never blocks; the oldest are dropped (and counted) past ``max_buffer``."""
        if not records or not self.wb.enabled:
            return
        with self._lock:
            self._buf.extend(records)
            over = len(self._buf) - self.wb.max_buffer
            for _ in range(max(0, over)):
                self._buf.popleft()
            depth = len(self._buf)
        if over > 0:
            self.dropped += over
            self.metrics.queue_dropped.labels(QUEUE).inc(over)
        self.metrics.queue_depth.labels(QUEUE).set(depth)
        if depth >= self.wb.batch_size:
            self._wake.set()

    def _peek(self, n: int) -> list[ScoreRecord]:
        with self._lock:
            return [self._buf[i] for i in range(min(n, len(self._buf)))]

    def _commit(self, batch: list[ScoreRecord]) -> None:
        """Remove a written batch from the head (unless overflow already pushed it out)."""
        with self._lock:
            for r in batch:
                if self._buf and self._buf[0] is r:
                    self._buf.popleft()
            self.metrics.queue_depth.labels(QUEUE).set(len(self._buf))

    # ------------------------------------------------------------------ writer side
    async def _write(self, http: InfluxQLClient, batch: list[ScoreRecord]) -> None:
        wb, cfg = self.wb, self.cfg
        lines = records_to_lines(batch, wb.measurement, wb.source_measurement_tag)
        if wb.api == "v2":
            await http.write(lines, db=wb.bucket or cfg.effective_bucket, api="v2", org=cfg.org)
        else:
            await http.write(lines, db=wb.database or cfg.database, rp=wb.retention_policy)

    async def flush(self, http: InfluxQLClient) -> None:
        """Write everything buffered now (raises on failure; the unwritten rest stays buffered)."""
        while True:
            batch = self._peek(self.wb.batch_size)
            if not batch:
                return
            await self._write(http, batch)
            self._commit(batch)
            self.written += len(batch)

    async def run(self) -> None:
        """Write batches until ``stop``; retries failures with backoff; never raises."""
        self._done = asyncio.Event()
        if not self.wb.enabled:
            self._done.set()
            return
        delays = None
        async with aiohttp.ClientSession() as session:
            http = InfluxQLClient(self.cfg, session, url=self.wb.url)
            http.timeout = aiohttp.ClientTimeout(total=self.wb.timeout)
            if self.wb.api == "v1":
                with contextlib.suppress(SourceError):
                    await http.query(f'CREATE DATABASE "{self.wb.database or self.cfg.database}"')
            try:
                while not self._stopping:
                    await asyncio.get_running_loop().run_in_executor(None, self._wake.wait, self.wb.flush_interval)
                    self._wake.clear()
                    try:
                        await self.flush(http)
                        delays = None
                    except (SourceError, SourceUnavailable) as e:
                        delays = delays or backoff_delays(0.5, 30.0)
                        d = next(delays)
                        log.warning("write-back: %s; retrying in %.1fs", e, d)
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._stopped_event(), d)
                # final flush, bounded
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.flush(http), self.wb.stop_timeout)
            finally:
                self._done.set()

    async def _stopped_event(self) -> None:
        while not self._stopping:
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        """Stop; flush what is buffered within ``stop_timeout``; safe to call twice."""
        self._stopping = True
        self._wake.set()
        if self._done is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._done.wait(), self.wb.stop_timeout + 1.0)
