"""``sentinel simulate`` into PostgreSQL: create the table if needed and COPY the samples in."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from ...clients.postgres import detect_timescaledb, table_ident
from ...clients.postgres import one_line as _one_line
from ...config.source_postgres import PostgresSourceConfig
from ...errors import SourceError, SourceUnavailable
from ...types import Sample
from .cursor import TimeKind
from .sql import _short_hash, install_notify_trigger

# --------------------------------------------------------------------------- simulate


_PREPARED: set[tuple] = set()


async def write_samples(cfg: PostgresSourceConfig, samples: list[Sample]) -> None:
    """Insert ``samples`` into ``cfg.table`` (``sentinel simulate``), creating the table if missing.

    A new table gets ``time timestamptz``, one ``text`` column per key column (``key_columns``, or
    the samples' labels) and one ``double precision`` column per value column (``value_columns``,
    or the samples' fields); a hypertable when TimescaleDB is present. The NOTIFY trigger is
    installed when ``notify.install_trigger`` is set. Rows are written with COPY.
    """
    if cfg.query is not None:
        raise SourceError("write_samples needs a table; this postgres source is configured with `query`")
    if not samples:
        return
    keys = list(cfg.key_columns) or sorted({k for s in samples for k, _ in s.key.labels if k != "field"})
    values = list(cfg.value_columns) or list(dict.fromkeys(f for s in samples for f in s.fields))
    tbl = table_ident(cfg.table_schema, cfg.table)
    try:
        conn = await psycopg.AsyncConnection.connect(cfg.dsn, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as e:
        raise SourceUnavailable(f"cannot connect to PostgreSQL: {_one_line(e)}") from e
    async with conn:
        ready = (cfg.dsn, cfg.table_schema, cfg.table, cfg.notify.install_trigger and cfg.notify.channel)
        if ready not in _PREPARED:  # DDL once per process, not on every simulate tick
            ts_version = await detect_timescaledb(conn, cfg.timescaledb)
            for stmt in create_table_statements(cfg.table_schema, cfg.table, cfg.time_column, keys, values,
                                                timescaledb=ts_version is not None):
                await conn.execute(stmt)
            if cfg.notify.install_trigger:
                await install_notify_trigger(conn, cfg.table_schema, cfg.table, cfg.notify.channel)
            _PREPARED.add(ready)
        cur = await conn.execute(sql.SQL("SELECT * FROM {} LIMIT 0").format(tbl))
        tinfo = conn.adapters.types.get(next(c.type_code for c in cur.description or [] if c.name == cfg.time_column))
        tk = TimeKind.from_type(tinfo.name if tinfo else "timestamptz", cfg.epoch_unit)
        cols = [cfg.time_column, *keys, *values]
        copy = sql.SQL("COPY {} ({}) FROM STDIN").format(tbl, sql.SQL(", ").join(map(sql.Identifier, cols)))
        async with conn.cursor() as c, c.copy(copy) as cp:
            for s in samples:
                lab = s.key.label_dict()
                fv = dict(zip(s.fields, s.values, strict=True))
                row: list[Any] = [tk.to_db(tk.from_seconds(s.ts))]
                row += [lab.get(k) for k in keys]
                row += [None if (v := fv.get(f)) is None or math.isnan(v) else v for f in values]
                await cp.write_row(row)


def create_table_statements(schema: str | None, table: str, time_column: str, keys: Sequence[str],
                            values: Sequence[str], *, timescaledb: bool) -> list[sql.Composed]:
    """DDL for a samples table (idempotent); with TimescaleDB also ``create_hypertable``."""
    tbl = table_ident(schema, table)
    cols = [sql.SQL("{} timestamptz NOT NULL").format(sql.Identifier(time_column))]
    cols += [sql.SQL("{} text").format(sql.Identifier(k)) for k in keys]
    cols += [sql.SQL("{} double precision").format(sql.Identifier(v)) for v in values]
    out = [sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(tbl, sql.SQL(", ").join(cols))]
    if timescaledb:
        out.append(sql.SQL("SELECT create_hypertable({}, {}, if_not_exists => TRUE, migrate_data => TRUE)").format(
            sql.Literal(tbl.as_string(None)), sql.Literal(time_column)))
    idx_name = "sentinel_idx_" + _short_hash(f"{schema}.{table}.{time_column}")
    out.append(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({})").format(
        sql.Identifier(idx_name), tbl, sql.SQL(", ").join(map(sql.Identifier, [time_column, *keys]))))
    return out
