"""Write-back of scores, thresholds and alert transitions into PostgreSQL / TimescaleDB.

Two tables (created on request, hypertables when TimescaleDB is present), made for
Grafana's PostgreSQL data source:

* ``scores_table``: one row per scored sample — ``time, stream, measurement, labels (jsonb),
  score, error, threshold, alert_state (0 ok, 1 pending, 2 firing, 3 resolved), ready,
  "values" float8[], fields text[], expected float8[], "lower" float8[], "upper" float8[]``: the
  last four are the expected value and band per field (in the order of ``fields``, the model's),
  NULL before the stream is scored; a table from an older Sentinel gains them on start.
* ``transitions_table``: one row each time a stream's alert state changes — ``time, stream,
  measurement, labels, from_state, to_state, state (text), score, error, threshold``.

Buffering, batching, retry and shutdown are :class:`~sentinel.writeback.running.RunningSink`'s
(records past ``max_buffer`` are dropped, the newest first, counted under
``queue="writeback_postgres"``); each batch is written here in one transaction (COPY), and a
failed batch is retried whole, never split or reordered.
"""

from __future__ import annotations

import contextlib
import logging
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from ..clients.postgres import detect_timescaledb, table_ident
from ..config.source_postgres import PostgresSourceConfig, PostgresWriteBackConfig
from ..metrics import Metrics
from ..types import AlertState, ScoreRecord
from .running import RunningSink

log = logging.getLogger(__name__)

QUEUE = "writeback_postgres"
_STATE_NAMES = {int(s): s.name.lower() for s in AlertState}


def scores_ddl(schema: str | None, table: str) -> sql.Composed:
    return sql.SQL(
        "CREATE TABLE IF NOT EXISTS {} ("
        "{} timestamptz NOT NULL, stream text NOT NULL, measurement text NOT NULL, labels jsonb NOT NULL, "
        "score double precision, error double precision, threshold double precision, "
        "alert_state smallint NOT NULL, ready boolean NOT NULL, "
        "\"values\" double precision[], " + BAND_COLUMNS + ")"
    ).format(table_ident(schema, table), sql.Identifier("time"))


BAND_COLUMNS = "fields text[], expected double precision[], \"lower\" double precision[], \"upper\" double precision[]"


def band_columns_ddl(schema: str | None, table: str) -> sql.Composed:
    """The expected-band columns, added to a scores table an older Sentinel created (idempotent)."""
    cols = [c.strip() for c in BAND_COLUMNS.split(", ")]
    return sql.SQL("ALTER TABLE {} " + ", ".join("ADD COLUMN IF NOT EXISTS " + c for c in cols)).format(
        table_ident(schema, table))


def transitions_ddl(schema: str | None, table: str) -> sql.Composed:
    return sql.SQL(
        "CREATE TABLE IF NOT EXISTS {} ("
        "{} timestamptz NOT NULL, stream text NOT NULL, measurement text NOT NULL, labels jsonb NOT NULL, "
        "from_state smallint NOT NULL, to_state smallint NOT NULL, state text NOT NULL, "
        "score double precision, error double precision, threshold double precision)"
    ).format(table_ident(schema, table), sql.Identifier("time"))


def index_ddl(schema: str | None, table: str) -> sql.Composed:
    """An index for Grafana's typical ``WHERE stream = ... AND time BETWEEN ...``."""
    import hashlib

    name = "sentinel_wb_" + hashlib.sha256(f"{schema}.{table}".encode()).hexdigest()[:12]
    return sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (stream, {})").format(
        sql.Identifier(name), table_ident(schema, table), sql.Identifier("time"))


def hypertable_sql(schema: str | None, table: str, chunk_seconds: float) -> sql.Composed:
    """TimescaleDB only: turn the table into a hypertable on ``time`` (idempotent)."""
    return sql.SQL(
        "SELECT create_hypertable({}, 'time', chunk_time_interval => {}::interval, if_not_exists => TRUE)"
    ).format(sql.Literal(table_ident(schema, table).as_string(None)), sql.Literal(f"{chunk_seconds} seconds"))


def create_statements(cfg: PostgresWriteBackConfig, *, timescaledb: bool) -> list[sql.Composed]:
    out: list[sql.Composed] = []
    for table, ddl in ((cfg.scores_table, scores_ddl), (cfg.transitions_table, transitions_ddl)):
        out.append(ddl(cfg.table_schema, table))
        if table == cfg.scores_table:
            out.append(band_columns_ddl(cfg.table_schema, table))
        if timescaledb:
            out.append(hypertable_sql(cfg.table_schema, table, cfg.chunk_time_interval))
        out.append(index_ddl(cfg.table_schema, table))
    return out


def _ts(t: float) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=t)


class PostgresWriteBack(RunningSink):
    """Writes :class:`ScoreRecord` s (and the alert transitions among them) in batches, one COPY each."""

    queue = QUEUE

    def __init__(self, cfg: PostgresWriteBackConfig | PostgresSourceConfig, *, metrics: Metrics,
                 dsn: str | None = None, rng: random.Random | None = None):
        if isinstance(cfg, PostgresSourceConfig):  # the source's config: its write_back section and dsn
            dsn = dsn or cfg.dsn
            cfg = cfg.write_back
        super().__init__(metrics, batch_size=cfg.batch_size, flush_interval=cfg.flush_interval,
                         max_buffer=cfg.max_buffer, stop_timeout=cfg.stop_timeout, overflow="drop_newest", rng=rng)
        self.cfg = cfg
        found = cfg.dsn or dsn
        if not found:
            raise ValueError("postgres write-back needs a dsn (write_back.dsn or the source's dsn)")
        self.dsn: str = found
        self._states: dict[Any, int] = {}
        self._conn: psycopg.AsyncConnection | None = None
        self._created = False
        self.timescaledb: str | None = None
        self.transitions_written = 0

    def _prepare(self, batch: list[ScoreRecord]) -> tuple[list[ScoreRecord], list[tuple]]:
        """The batch plus the alert transitions it contains (computed once, so retries repeat it exactly)."""
        transitions = []
        for r in batch:
            prev = self._states.get(r.key)
            if (prev is None and r.alert_state != AlertState.OK) or (prev is not None and prev != r.alert_state):
                transitions.append((r, AlertState.OK if prev is None else prev))
            self._states[r.key] = r.alert_state
        return batch, transitions

    def _written(self, payload: tuple[list[ScoreRecord], list[tuple]]) -> None:
        self.transitions_written += len(payload[1])

    async def _reset(self) -> None:
        await self._drop_conn()

    async def _close(self) -> None:
        await self._drop_conn()

    async def _connect(self) -> psycopg.AsyncConnection:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(self.dsn, connect_timeout=10)
            if not self._created:
                await self._create_tables(self._conn)
        return self._conn

    async def _create_tables(self, conn: psycopg.AsyncConnection) -> None:
        self.timescaledb = await detect_timescaledb(conn, self.cfg.timescaledb)
        if self.cfg.create_tables:
            async with conn.transaction():
                for stmt in create_statements(self.cfg, timescaledb=self.timescaledb is not None):
                    await conn.execute(stmt)
        await conn.commit()
        self._created = True
        log.info("postgres write-back: tables ready (%s)",
                 f"hypertables, TimescaleDB {self.timescaledb}" if self.timescaledb else "plain PostgreSQL")

    async def _drop_conn(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _write(self, payload: tuple[list[ScoreRecord], list[tuple]]) -> None:
        batch, transitions = payload
        conn = await self._connect()
        schema = self.cfg.table_schema
        cols_s = ["time", "stream", "measurement", "labels", "score", "error", "threshold", "alert_state",
                  "ready", "values", "fields", "expected", "lower", "upper"]
        cols_t = ["time", "stream", "measurement", "labels", "from_state", "to_state", "state", "score",
                  "error", "threshold"]
        async with conn.transaction(), conn.cursor() as cur:
            async with cur.copy(_copy_sql(schema, self.cfg.scores_table, cols_s)) as cp:
                for r in batch:
                    await cp.write_row((_ts(r.ts), str(r.key), r.key.measurement, Jsonb(r.key.label_dict()),
                                        r.score, r.error, r.threshold, int(r.alert_state), bool(r.ready),
                                        list(r.values), *_band(r)))
            if transitions:
                async with cur.copy(_copy_sql(schema, self.cfg.transitions_table, cols_t)) as cp:
                    for r, prev in transitions:
                        await cp.write_row((_ts(r.ts), str(r.key), r.key.measurement, Jsonb(r.key.label_dict()),
                                            int(prev), int(r.alert_state),
                                            _STATE_NAMES.get(int(r.alert_state), str(r.alert_state)),
                                            r.score, r.error, r.threshold))


def _band(r: ScoreRecord) -> tuple[Any, ...]:
    """``fields, expected, lower, upper`` of a record (NULLs before the stream is scored)."""
    if not r.band_fields:
        return (None, None, None, None)
    return (list(r.band_fields), list(r.expected), list(r.lower), list(r.upper))


def _copy_sql(schema: str | None, table: str, cols: list[str]) -> sql.Composed:
    return sql.SQL("COPY {} ({}) FROM STDIN").format(
        table_ident(schema, table), sql.SQL(", ").join(map(sql.Identifier, cols)))


__all__ = ["PostgresWriteBack", "create_statements", "hypertable_sql"]
