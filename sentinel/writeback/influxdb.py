"""Score write-back to InfluxDB: one point per scored sample, batched.

Each :class:`~sentinel.types.ScoreRecord` becomes a point of ``write_back.measurement``
(default ``sentinel_score``) carrying the stream's own tags plus
``source_measurement=<its measurement>``, with fields ``score``, ``error``,
``threshold`` (floats), ``alert_state`` (integer: 0 ok, 1 pending, 2 firing, 3 resolved),
``ready`` (boolean) and, once the stream is scored, per field ``expected_<field>``,
``lower_<field>`` and ``upper_<field>`` (the expected value and band in the field's own units),
at the sample's own timestamp. A Grafana panel can then
query the raw series and ``sentinel_score`` with the same tag filter.

Buffering, batching, retry and shutdown are :class:`~sentinel.writeback.running.RunningSink`'s
(the oldest records are dropped past ``max_buffer``, counted under
``queue="writeback_influxdb"``); this module only writes a batch.
"""

from __future__ import annotations

import contextlib
import logging
import math

import aiohttp

from ..clients.influxql import InfluxQLClient
from ..config.source_influxdb import InfluxDBSourceConfig
from ..errors import SourceError
from ..lineprotocol import FieldValue, format_line
from ..metrics import Metrics
from ..types import ScoreRecord
from .running import RunningSink

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
        for kind, vals in (("expected", r.expected), ("lower", r.lower), ("upper", r.upper)):
            for f, v in zip(r.band_fields, vals, strict=False):
                if math.isfinite(v):
                    fields[f"{kind}_{f}"] = float(v)
        tags = dict(r.key.labels)
        tags[source_tag] = r.key.measurement
        lines.append(format_line(measurement, sorted(tags.items()), fields, round(r.ts * 1e9)))
    return lines


class InfluxDBWriteBack(RunningSink):
    """Batched, bounded, non-blocking writer of ScoreRecords to InfluxDB (see module docstring).

    ``cfg`` is the InfluxDB source config; its ``write_back`` section configures this,
    and url/database/bucket/credentials default to the source's own.
    """

    queue = QUEUE

    def __init__(self, cfg: InfluxDBSourceConfig, *, metrics: Metrics):
        wb = cfg.write_back
        super().__init__(metrics, batch_size=wb.batch_size, flush_interval=wb.flush_interval,
                         max_buffer=wb.max_buffer, stop_timeout=wb.stop_timeout, overflow="drop_oldest")
        self.cfg = cfg
        self.wb = wb
        self._session: aiohttp.ClientSession | None = None
        self._http: InfluxQLClient | None = None

    def submit(self, records: list[ScoreRecord]) -> None:
        if self.wb.enabled:
            super().submit(records)

    async def run(self) -> None:
        if self.wb.enabled:
            await super().run()

    async def _open(self) -> None:
        self._session = aiohttp.ClientSession()
        self._http = InfluxQLClient(self.cfg, self._session, url=self.wb.url)
        self._http.timeout = aiohttp.ClientTimeout(total=self.wb.timeout)
        if self.wb.api == "v1":
            with contextlib.suppress(SourceError):
                await self._http.query(f'CREATE DATABASE "{self.wb.database or self.cfg.database}"')

    async def _write(self, payload: list[ScoreRecord]) -> None:
        wb, cfg, http = self.wb, self.cfg, self._http
        assert http is not None
        lines = records_to_lines(payload, wb.measurement, wb.source_measurement_tag)
        if wb.api == "v2":
            await http.write(lines, db=wb.bucket or cfg.effective_bucket, api="v2", org=cfg.org)
        else:
            await http.write(lines, db=wb.database or cfg.database, rp=wb.retention_policy)

    async def _close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
