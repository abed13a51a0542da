"""Pure SQL builders of the PostgreSQL source (every identifier through :class:`psycopg.sql.Identifier`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import psycopg
from psycopg import sql

from ...clients.postgres import table_ident
from ...config.source_postgres import PostgresSourceConfig
from .cursor import TimeKind

# --------------------------------------------------------------------------- SQL (pure builders)


@dataclass(frozen=True, slots=True)
class Shape:
    """The detected shape of the source relation: what to select and how to type it."""

    time: TimeKind
    keys: tuple[str, ...]
    values: tuple[str, ...]
    bool_values: frozenset[str] = frozenset()


def relation(cfg: PostgresSourceConfig) -> sql.Composable:
    """The FROM item: the quoted table, or the custom query as a subquery."""
    if cfg.query is not None:
        return sql.SQL("({}) AS {}").format(sql.SQL(cfg.query), sql.Identifier("_sentinel_q"))
    return table_ident(cfg.table_schema, cfg.table)


def _key_expr(col: str) -> sql.Composable:
    return sql.SQL("COALESCE(CAST({} AS text), '') COLLATE \"C\"").format(sql.Identifier(col))


def _value_expr(col: str, is_bool: bool) -> sql.Composable:
    if is_bool:
        return sql.SQL("CAST(CAST({} AS integer) AS double precision)").format(sql.Identifier(col))
    return sql.SQL("CAST({} AS double precision)").format(sql.Identifier(col))


def _time_select(shape: Shape, col: str) -> sql.Composable:
    if shape.time.kind == "epoch_float":
        return sql.SQL("CAST({} AS double precision)").format(sql.Identifier(col))
    return sql.Identifier(col)


def poll_query(cfg: PostgresSourceConfig, shape: Shape, *, has_floor: bool, has_after: bool) -> sql.Composed:
    """One page of new rows: ``time > %(_s_floor)s`` and, past the first page, ``(time, key...) > after``.

    Columns: time, one text column per key, one float8 column per value.
    """
    t = sql.Identifier(cfg.time_column)
    keys = [_key_expr(k) for k in shape.keys]
    cols = [_time_select(shape, cfg.time_column), *keys,
            *(_value_expr(v, v in shape.bool_values) for v in shape.values)]
    where: list[sql.Composable] = [sql.SQL("{} IS NOT NULL").format(t)]
    if has_floor:
        where.append(sql.SQL("{} > %(_s_floor)s").format(t))
    if has_after:
        after_params = [sql.Placeholder(f"_s_ak{i}") for i in range(len(shape.keys))]
        where.append(sql.SQL("{} >= %(_s_at)s").format(t))
        where.append(sql.SQL("({}) > ({})").format(
            sql.SQL(", ").join([t, *keys]), sql.SQL(", ").join([sql.Placeholder("_s_at"), *after_params])))
    return sql.SQL("SELECT {cols} FROM {rel} WHERE {where} ORDER BY {order} LIMIT %(_s_limit)s").format(
        cols=sql.SQL(", ").join(cols), rel=relation(cfg), where=sql.SQL(" AND ").join(where),
        order=sql.SQL(", ").join([t, *keys]),
    )


def max_time_query(cfg: PostgresSourceConfig) -> sql.Composed:
    return sql.SQL("SELECT max({}) FROM {}").format(sql.Identifier(cfg.time_column), relation(cfg))


def describe_query(cfg: PostgresSourceConfig) -> sql.Composed:
    return sql.SQL("SELECT * FROM {} LIMIT 0").format(relation(cfg))


def bucket_expr(shape: Shape, col: str, timescaledb: bool) -> sql.Composable:
    """Bucket start in epoch seconds (float8): ``time_bucket`` on TimescaleDB, plain arithmetic otherwise.

    Parameters: ``%(_s_bucket)s`` (an interval for timestamps, a raw number for epochs) and
    ``%(_s_bucket_s)s`` (seconds, for the plain path on timestamps).
    """
    c = sql.Identifier(col)
    if shape.time.is_timestamp:
        if timescaledb:
            return sql.SQL("CAST(extract(epoch FROM time_bucket(%(_s_bucket)s, {})) AS double precision)").format(c)
        return sql.SQL(
            "CAST(floor(extract(epoch FROM {}) / %(_s_bucket_s)s) * %(_s_bucket_s)s AS double precision)").format(c)
    per_s = sql.Literal(shape.time.per_second)
    if timescaledb and shape.time.kind == "epoch_int":
        return sql.SQL("CAST(time_bucket(%(_s_bucket)s, {}) AS double precision) / {}").format(c, per_s)
    return sql.SQL("floor(CAST({} AS double precision) / %(_s_bucket)s) * %(_s_bucket)s / {}").format(c, per_s)


def history_query(cfg: PostgresSourceConfig, shape: Shape, *, filter_keys: bool, bucketed: bool,
                  timescaledb: bool) -> sql.Composed:
    """Rows (or bucket averages) with ``%(_s_since)s <= time < %(_s_until)s``, in (time, key) order.

    With ``filter_keys`` the key tuple must be in ``unnest(%(_s_kf0)s::text[], ...)``.
    Columns: time (raw, or bucket start in seconds when ``bucketed``), keys as text, values as float8.
    """
    t = sql.Identifier(cfg.time_column)
    keys = [_key_expr(k) for k in shape.keys]
    vals = [_value_expr(v, v in shape.bool_values) for v in shape.values]
    where: list[sql.Composable] = [sql.SQL("{} >= %(_s_since)s AND {} < %(_s_until)s").format(t, t)]
    if filter_keys and shape.keys:
        where.append(sql.SQL("({}) IN (SELECT * FROM unnest({}))").format(
            sql.SQL(", ").join(keys),
            sql.SQL(", ").join(sql.SQL("CAST({} AS text[])").format(sql.Placeholder(f"_s_kf{i}"))
                               for i in range(len(shape.keys)))))
    w = sql.SQL(" AND ").join(where)
    if not bucketed:
        return sql.SQL("SELECT {} FROM {} WHERE {} ORDER BY {}").format(
            sql.SQL(", ").join([_time_select(shape, cfg.time_column), *keys, *vals]), relation(cfg), w,
            sql.SQL(", ").join([t, *keys]))
    b = bucket_expr(shape, cfg.time_column, timescaledb)
    group = sql.SQL(", ").join([sql.SQL(str(i + 1)) for i in range(1 + len(keys))])
    return sql.SQL("SELECT {} FROM {} WHERE {} GROUP BY {} ORDER BY {}").format(
        sql.SQL(", ").join([b, *keys, *(sql.SQL("avg({})").format(v) for v in vals)]), relation(cfg), w,
        group, group)


def notify_trigger_statements(schema: str | None, table: str, channel: str) -> list[sql.Composed]:
    """Idempotent DDL: a generic notify function and a statement-level AFTER INSERT trigger on ``table``.

    The channel is passed as a trigger argument (a string literal), never spliced into the
    function body, so no channel name can escape the dollar-quoted body.
    """
    fn = sql.Identifier(schema, "sentinel_notify_insert") if schema else sql.Identifier("sentinel_notify_insert")
    trg = sql.Identifier("sentinel_notify_" + _short_hash(channel))
    tbl = table_ident(schema, table)
    return [
        sql.SQL(
            "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS "
            "$sentinel$ BEGIN PERFORM pg_notify(TG_ARGV[0], TG_TABLE_NAME); RETURN NULL; END $sentinel$"
        ).format(fn),
        sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(trg, tbl),
        sql.SQL("CREATE TRIGGER {} AFTER INSERT ON {} FOR EACH STATEMENT EXECUTE FUNCTION {}({})").format(
            trg, tbl, fn, sql.Literal(channel)),
    ]


def _short_hash(text: str) -> str:
    """A stable 12-hex-digit name suffix (identifiers are limited to 63 bytes)."""
    return hashlib.sha256(text.encode()).hexdigest()[:12]


async def install_notify_trigger(conn: psycopg.AsyncConnection, schema: str | None, table: str,
                                 channel: str) -> None:
    """Create (or replace) the NOTIFY trigger on ``table``; safe to run any number of times."""
    async with conn.transaction():
        for stmt in notify_trigger_statements(schema, table, channel):
            await conn.execute(stmt)
