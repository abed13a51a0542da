"""TimescaleDB / PostgreSQL source: ``(time, key)`` cursor polling, LISTEN/NOTIFY wake-up, history.

How it follows a table (or a custom query wrapped as a subquery):

* **Cursor.** Each poll selects rows with ``time > floor`` ordered by ``(time, key...)`` in
  pages of ``page_size`` (keyset paging on ``(time, key...)``). ``floor`` trails the newest
  emitted time by ``lateness``; the ``(time, key)`` pairs emitted above ``floor`` are kept in
  the cursor (bounded by ``max_seen``), so rows re-read inside the lateness window are not
  emitted twice, even after a restart from a checkpointed cursor. A row older than ``floor``
  when it commits is never read (that is what ``lateness`` bounds).
* **Push wake-up.** A dedicated connection ``LISTEN``s on ``notify.channel``; a notification
  wakes the poll loop at once, otherwise it polls every ``poll_interval``. The trigger that
  ``NOTIFY``s (statement-level, AFTER INSERT) is installed on request by
  :func:`install_notify_trigger`.
* **TimescaleDB.** Detected at connect (``pg_extension``), logged, never required. When present,
  history downsampling uses ``time_bucket``; otherwise plain SQL does the same bucketing.
  Time bounds are always bound with the column's own type, so hypertable chunk exclusion
  applies at plan time.
* **Safety.** Every identifier goes through :class:`psycopg.sql.Identifier`; every value is a
  bound parameter. A table or column name can never inject SQL.
* **Outages.** Connection loss (including a server restart) is retried with full-jitter
  backoff; on reconnect the source LISTENs again *before* catching up from its cursor, so no
  notification and no row is missed, and the cursor's seen-set prevents duplicates.

Row typing: the time column may be ``timestamptz``, ``timestamp`` (read as UTC) or a numeric
epoch (``epoch_unit``); value columns numeric/float/int/bool (bool -> 1.0/0.0); NULL -> NaN.
Key columns are read as text (NULL -> ``""``) and become the stream's labels.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import hashlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from ..config.source_postgres import PostgresNotifyConfig, PostgresSourceConfig
from ..errors import SourceError, SourceUnavailable
from ..metrics import Metrics
from ..types import Sample, SourceBatch, StreamKey
from .base import Emit

log = logging.getLogger(__name__)

CURSOR_VERSION = 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
_INT_TYPES = {"int2", "int4", "int8", "smallint", "integer", "bigint"}
_FLOAT_TYPES = {"float4", "float8", "numeric", "real", "double precision"}
_TIMESTAMP_TYPES = {"timestamptz": "timestamptz", "timestamp": "timestamp"}
# Errors that mean "the server is gone or unreachable right now": retried with backoff.
_TRANSIENT = (psycopg.OperationalError, psycopg.InterfaceError, OSError, SourceUnavailable)

Raw = int | float  # a time in the column's canonical units (µs for timestamps, the epoch unit otherwise)


# --------------------------------------------------------------------------- time typing


@dataclass(frozen=True, slots=True)
class TimeKind:
    """How the time column is stored and converted.

    ``kind`` is ``timestamptz``/``timestamp`` (canonical raw value: integer µs since the epoch, UTC)
    or ``epoch_int``/``epoch_float`` (canonical raw value: the column's own number).
    ``per_second`` converts raw units to seconds.
    """

    kind: Literal["timestamptz", "timestamp", "epoch_int", "epoch_float"]
    per_second: int

    @classmethod
    def from_type(cls, type_name: str, epoch_unit: str) -> TimeKind:
        if type_name in _TIMESTAMP_TYPES:
            return cls(_TIMESTAMP_TYPES[type_name], 1_000_000)  # type: ignore[arg-type]
        if type_name in _INT_TYPES:
            return cls("epoch_int", _PER_SECOND[epoch_unit])
        if type_name in _FLOAT_TYPES:
            return cls("epoch_float", _PER_SECOND[epoch_unit])
        raise SourceError(f"time column has type {type_name!r}; expected timestamptz, timestamp or a numeric epoch")

    @property
    def is_timestamp(self) -> bool:
        return self.kind in ("timestamptz", "timestamp")

    def from_db(self, v: Any) -> Raw:
        """A value as read from the database -> canonical raw value."""
        if isinstance(v, datetime):
            if v.tzinfo is None:
                v = v.replace(tzinfo=UTC)
            return (v - _EPOCH) // _US
        if self.kind == "epoch_int":
            return int(v)
        return float(v)

    def to_db(self, raw: Raw) -> Any:
        """Canonical raw value -> a parameter of the column's own type (keeps chunk exclusion)."""
        if self.kind == "timestamptz":
            return _EPOCH + timedelta(microseconds=int(raw))
        if self.kind == "timestamp":
            return (_EPOCH + timedelta(microseconds=int(raw))).replace(tzinfo=None)
        return raw

    def seconds(self, raw: Raw) -> float:
        return raw / self.per_second

    def from_seconds(self, s: float) -> Raw:
        v = s * self.per_second
        return v if self.kind == "epoch_float" else math.floor(v)

    def span(self, seconds: float) -> Raw:
        v = seconds * self.per_second
        return v if self.kind == "epoch_float" else math.ceil(v)


# --------------------------------------------------------------------------- cursor


class Cursor:
    """Where the source is: every row with ``time <= floor`` or ``(time, key)`` in ``seen`` is done.

    Pure data, JSON-able through :meth:`to_dict` / :meth:`from_dict`.

    >>> c = Cursor(lateness=5, max_seen=100)
    >>> c.is_new(10, ("a",)), c.mark(10, ("a",)), c.is_new(10, ("a",))
    (True, None, False)
    >>> c.advance(); c.floor, c.is_new(5, ("z",)), c.is_new(6, ("z",))
    (5, False, True)
    """

    def __init__(self, lateness: Raw, max_seen: int, floor: Raw | None = None,
                 seen: Iterable[tuple[Raw, tuple[str, ...]]] = (), last: Raw | None = None):
        self.lateness = lateness
        self.max_seen = max_seen
        self.floor = floor
        self.last = last
        self._by_time: dict[Raw, set[tuple[str, ...]]] = {}
        self._times: list[Raw] = []  # sorted keys of _by_time
        self._count = 0
        for t, k in seen:
            self.mark(t, tuple(k))

    def __len__(self) -> int:
        return self._count

    def is_new(self, t: Raw, key: tuple[str, ...]) -> bool:
        if self.floor is not None and t <= self.floor:
            return False
        keys = self._by_time.get(t)
        return keys is None or key not in keys

    def mark(self, t: Raw, key: tuple[str, ...]) -> None:
        keys = self._by_time.get(t)
        if keys is None:
            keys = self._by_time[t] = set()
            bisect.insort(self._times, t)
        if key not in keys:
            keys.add(key)
            self._count += 1
        if self.last is None or t > self.last:
            self.last = t

    def advance(self) -> None:
        """Raise ``floor`` to ``last - lateness``, forget what is at or below it, respect ``max_seen``."""
        if self.last is not None:
            lo = self.last - self.lateness
            if self.floor is None or lo > self.floor:
                self.floor = lo
        if self.floor is not None:
            self._drop_through(self.floor)
        while self._count > self.max_seen and self._times:
            # Out of memory for the window: rows at or below the oldest remembered time are declared done.
            self.floor = self._times[0] if self.floor is None else max(self.floor, self._times[0])
            self._drop_through(self.floor)

    def _drop_through(self, t: Raw) -> None:
        while self._times and self._times[0] <= t:
            self._count -= len(self._by_time.pop(self._times.pop(0)))

    def to_dict(self) -> dict:
        seen = [[t, list(k)] for t in self._times for k in sorted(self._by_time[t])]
        return {"v": CURSOR_VERSION, "floor": self.floor, "last": self.last, "seen": seen}

    @classmethod
    def from_dict(cls, d: dict, lateness: Raw, max_seen: int) -> Cursor:
        if d.get("v") != CURSOR_VERSION:
            raise SourceError(f"postgres cursor has version {d.get('v')!r}, expected {CURSOR_VERSION}")
        seen = [(t, tuple(str(x) for x in k)) for t, k in d.get("seen", [])]
        c = cls(lateness, max_seen, floor=d.get("floor"), seen=seen, last=d.get("last"))
        c.advance()
        return c


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


def table_ident(schema: str | None, table: str) -> sql.Identifier:
    return sql.Identifier(schema, table) if schema else sql.Identifier(table)


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


TIMESCALEDB_QUERY = "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"


async def detect_timescaledb(conn: psycopg.AsyncConnection, mode: str = "auto") -> str | None:
    """The installed TimescaleDB version, or None (absent, or ``mode == "off"``)."""
    if mode == "off":
        return None
    cur = await conn.execute(TIMESCALEDB_QUERY)
    row = await cur.fetchone()
    return str(row[0]) if row else None


async def install_notify_trigger(conn: psycopg.AsyncConnection, schema: str | None, table: str,
                                 channel: str) -> None:
    """Create (or replace) the NOTIFY trigger on ``table``; safe to run any number of times."""
    async with conn.transaction():
        for stmt in notify_trigger_statements(schema, table, channel):
            await conn.execute(stmt)


# --------------------------------------------------------------------------- the source


class PostgresSource:
    """Follows one PostgreSQL/TimescaleDB table or query; implements :class:`~sentinel.sources.base.Source`."""

    def __init__(self, cfg: PostgresSourceConfig, *, metrics: Metrics, clock: Callable[[], float] = time.time,
                 resume: dict | None = None):
        self.cfg = cfg
        self.name = cfg.name
        self._metrics = metrics
        self._clock = clock
        self._resume = resume
        self._cursor: Cursor | None = None
        self._shape: Shape | None = None
        self.timescaledb: str | None = None  # version when detected
        self._pool: AsyncConnectionPool | None = None
        self._listen_conn: psycopg.AsyncConnection | None = None
        self._listener: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._running = False
        self._done = asyncio.Event()
        self._done.set()
        self.connected = False  # set once connected; cleared by RunningSource when a run fails
        self.polls = 0  # completed polls (for tests and logs)
        self.notifications = 0

    # -- contract

    @property
    def cursor(self) -> dict | None:
        return self._cursor.to_dict() if self._cursor is not None else self._resume

    async def run(self, emit: Emit) -> None:
        """Poll (woken by NOTIFY) and emit batches until :meth:`stop`.

        A lost connection ends the run with :class:`SourceUnavailable`, a failed query
        (missing table, permission) with :class:`SourceError`; RunningSource runs it again
        after a backoff, and the cursor makes the next run continue where this one stopped.
        """
        if self._stop.is_set():
            return
        self._running = True
        self._done.clear()
        try:
            await self._open()
            self.connected = True
            await self._follow(emit)
        except _TRANSIENT as e:
            if not self._stop.is_set():
                raise SourceUnavailable(f"postgres source {self.name}: connection lost ({_one_line(e)})") from e
        except SourceError:
            raise
        except psycopg.Error as e:
            if not self._stop.is_set():
                raise SourceError(f"postgres source {self.name}: query failed: {_one_line(e)}") from e
        finally:
            if self._stop.is_set():
                self.connected = False
            await self._close()
            self._running = False
            self._done.set()

    async def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._listener is not None:
            self._listener.cancel()
        await self._done.wait()
        await self._close()

    async def history(self, keys: list[StreamKey] | None, since: float, until: float) -> list[Sample]:
        """Samples in ``[since, until)`` (epoch seconds), downsampled to ``history_bucket`` when set."""
        if keys is not None and not keys:
            return []
        try:
            async with self._connection() as conn:
                shape = self._shape or await self._describe(conn)
                ts = self.timescaledb if self._shape is not None else await detect_timescaledb(conn, self.cfg.timescaledb)
                return await self._history(conn, shape, ts is not None, keys, since, until)
        except _TRANSIENT as e:
            raise SourceUnavailable(f"postgres source {self.name}: history: {_one_line(e)}") from e
        except psycopg.Error as e:
            raise SourceError(f"postgres source {self.name}: history: {_one_line(e)}") from e

    # -- connection management

    def _conn_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"autocommit": True, "connect_timeout": max(1, round(self.cfg.connect_timeout))}
        if self.cfg.statement_timeout > 0:
            kw["options"] = f"-c statement_timeout={round(self.cfg.statement_timeout * 1000)}"
        return kw

    @contextlib.asynccontextmanager
    async def _connection(self):
        if self._pool is not None and not self._pool.closed:
            async with self._pool.connection(timeout=self.cfg.connect_timeout) as conn:
                yield conn
            return
        conn = await psycopg.AsyncConnection.connect(self.cfg.dsn, **self._conn_kwargs())
        try:
            yield conn
        finally:
            await conn.close()

    async def _open(self) -> None:
        pool = AsyncConnectionPool(
            self.cfg.dsn, min_size=self.cfg.pool_min, max_size=self.cfg.pool_max, open=False,
            kwargs=self._conn_kwargs(), check=AsyncConnectionPool.check_connection,
            timeout=self.cfg.connect_timeout, reconnect_timeout=max(self.cfg.connect_timeout, 1.0),
            name=f"sentinel-{self.name}",
        )
        self._pool = pool
        await pool.open(wait=self.cfg.pool_min > 0, timeout=self.cfg.connect_timeout)
        async with pool.connection() as conn:
            self.timescaledb = await detect_timescaledb(conn, self.cfg.timescaledb)
            log.info("postgres source %s: %s", self.name,
                     f"TimescaleDB {self.timescaledb} detected" if self.timescaledb else
                     "plain PostgreSQL (TimescaleDB not present or disabled)")
            self._shape = await self._describe(conn)
            if self.cfg.notify.install_trigger and self.cfg.query is None:
                await install_notify_trigger(conn, self.cfg.table_schema, self.cfg.table, self.cfg.notify.channel)
            if self._cursor is None:
                self._cursor = await self._initial_cursor(conn, self._shape)
        # LISTEN before catching up, so a row inserted during catch-up still wakes us.
        if self.cfg.notify.enabled:
            await self._start_listener(self.cfg.notify)

    async def _start_listener(self, ncfg: PostgresNotifyConfig) -> None:
        conn = await psycopg.AsyncConnection.connect(self.cfg.dsn, **self._conn_kwargs())
        self._listen_conn = conn
        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(ncfg.channel)))
        self._listener = asyncio.create_task(self._listen(conn), name=f"sentinel-{self.name}-listen")

    async def _listen(self, conn: psycopg.AsyncConnection) -> None:
        try:
            async for _ in conn.notifies():
                self.notifications += 1
                self._wake.set()
        finally:
            self._wake.set()  # a dead LISTEN connection wakes the poll loop, which then reconnects

    async def _close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(BaseException):
                await listener
        conn, self._listen_conn = self._listen_conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()
        pool, self._pool = self._pool, None
        if pool is not None:
            with contextlib.suppress(Exception):
                await pool.close(timeout=1.0)

    # -- shape and cursor

    async def _describe(self, conn: psycopg.AsyncConnection) -> Shape:
        cur = conn.cursor()
        await cur.execute(describe_query(self.cfg), self.cfg.query_params or None)
        types: dict[str, str] = {}
        for col in cur.description or []:
            info = conn.adapters.types.get(col.type_code)
            types[col.name] = info.name if info is not None else str(col.type_code)
        cfg = self.cfg
        missing = [c for c in [cfg.time_column, *cfg.key_columns, *cfg.value_columns] if c not in types]
        if missing:
            raise SourceError(f"postgres source {self.name}: columns not found: {missing}; have {sorted(types)}")
        tk = TimeKind.from_type(types[cfg.time_column], cfg.epoch_unit)
        numeric = _INT_TYPES | _FLOAT_TYPES | {"bool"}
        values = list(cfg.value_columns) or [
            c for c, ty in types.items() if ty in numeric and c != cfg.time_column and c not in cfg.key_columns]
        bad = {c: types[c] for c in values if types[c] not in numeric}
        if bad:
            raise SourceError(f"postgres source {self.name}: value columns must be numeric or bool, got {bad}")
        if not values:
            raise SourceError(f"postgres source {self.name}: no numeric value columns found")
        return Shape(tk, tuple(cfg.key_columns), tuple(values),
                     frozenset(c for c in values if types[c] == "bool"))

    async def _initial_cursor(self, conn: psycopg.AsyncConnection, shape: Shape) -> Cursor:
        late = shape.time.span(self.cfg.lateness)
        if self._resume:
            return Cursor.from_dict(self._resume, late, self.cfg.max_seen)
        floor = None
        if self.cfg.start == "latest":
            cur = await conn.execute(max_time_query(self.cfg), self.cfg.query_params or None)
            row = await cur.fetchone()
            if row and row[0] is not None:
                floor = shape.time.from_db(row[0])
        return Cursor(late, self.cfg.max_seen, floor=floor)

    # -- polling

    async def _follow(self, emit: Emit) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            await self.poll_once(emit)
            if self._listener is not None and self._listener.done():
                exc = None if self._listener.cancelled() else self._listener.exception()
                raise SourceUnavailable(f"LISTEN connection ended: {exc}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.cfg.poll_interval)

    async def poll_once(self, emit: Emit) -> int:
        """Read every new row now, emitting one batch per page; returns the samples emitted."""
        assert self._shape is not None and self._cursor is not None and self._pool is not None
        shape, cursor = self._shape, self._cursor
        emitted = 0
        after: tuple[Raw, tuple[str, ...]] | None = None
        while not self._stop.is_set():
            params: dict[str, Any] = dict(self.cfg.query_params)
            params["_s_limit"] = self.cfg.page_size
            if cursor.floor is not None:
                params["_s_floor"] = shape.time.to_db(cursor.floor)
            if after is not None:
                params["_s_at"] = shape.time.to_db(after[0])
                params.update({f"_s_ak{i}": k for i, k in enumerate(after[1])})
            q = poll_query(self.cfg, shape, has_floor=cursor.floor is not None, has_after=after is not None)
            async with self._pool.connection() as conn:
                cur = await conn.execute(q, params)
                rows = await cur.fetchall()
            samples, dup = self._rows_to_samples(rows, shape, cursor)
            if rows:
                last = rows[-1]
                after = (shape.time.from_db(last[0]), tuple(last[1:1 + len(shape.keys)]))
            cursor.advance()
            if samples or dup:
                await emit(SourceBatch(source=self.name, samples=samples, cursor=cursor.to_dict(),
                                       received_at=self._clock(), rejected={"duplicate": dup} if dup else {}))
                emitted += len(samples)
            if len(rows) < self.cfg.page_size:
                break
        self.polls += 1
        return emitted

    def _rows_to_samples(self, rows: Sequence[Sequence[Any]], shape: Shape,
                         cursor: Cursor) -> tuple[list[Sample], int]:
        out: list[Sample] = []
        dup = 0
        nk = len(shape.keys)
        prev: tuple[Raw, tuple[str, ...]] | None = None
        for row in rows:
            t = shape.time.from_db(row[0])
            key = tuple(row[1:1 + nk])
            if (t, key) == prev:
                dup += 1  # the same (time, key) twice in the table
                continue
            prev = (t, key)
            if not cursor.is_new(t, key):
                continue  # re-read inside the lateness window: already emitted
            cursor.mark(t, key)
            out.extend(self._make_samples(shape.time.seconds(t), key, row[1 + nk:], shape))
        return out, dup

    def _make_samples(self, ts: float, key: tuple[str, ...], raw_values: Sequence[Any],
                      shape: Shape) -> list[Sample]:
        labels = dict(zip(shape.keys, key, strict=True))
        values = tuple(float("nan") if v is None else float(v) for v in raw_values)
        meas = self.cfg.stream_measurement
        if not self.cfg.per_field_streams:
            return [Sample(StreamKey.of(meas, labels), ts, shape.values, values)]
        return [Sample(StreamKey.of(meas, {**labels, "field": f}), ts, (f,), (v,))
                for f, v in zip(shape.values, values, strict=True)]

    # -- history

    async def _history(self, conn: psycopg.AsyncConnection, shape: Shape, timescaledb: bool,
                       keys: list[StreamKey] | None, since: float, until: float) -> list[Sample]:
        cfg = self.cfg
        wanted: set[StreamKey] | None = None
        params: dict[str, Any] = dict(cfg.query_params)
        params["_s_since"] = shape.time.to_db(shape.time.from_seconds(since))
        params["_s_until"] = shape.time.to_db(shape.time.from_seconds(until))
        if keys is not None:
            wanted = set(keys)
            tuples = sorted({tuple(k.label_dict().get(c, "") for c in shape.keys)
                             for k in keys if k.measurement == cfg.stream_measurement})
            if not tuples:
                return []
            for i in range(len(shape.keys)):
                params[f"_s_kf{i}"] = [t[i] for t in tuples]
        bucketed = cfg.history_bucket > 0
        if bucketed:
            if shape.time.is_timestamp:
                params["_s_bucket"] = timedelta(seconds=cfg.history_bucket)
                params["_s_bucket_s"] = cfg.history_bucket
            else:
                params["_s_bucket"] = shape.time.span(cfg.history_bucket)
        q = history_query(cfg, shape, filter_keys=keys is not None, bucketed=bucketed, timescaledb=timescaledb)
        out: list[Sample] = []
        nk = len(shape.keys)
        async with conn.transaction(), conn.cursor(name=f"sentinel_history_{id(self)}") as cur:
            await cur.execute(q, params)
            while True:
                rows = await cur.fetchmany(self.cfg.page_size)
                if not rows:
                    break
                for row in rows:
                    ts = float(row[0]) if bucketed else shape.time.seconds(shape.time.from_db(row[0]))
                    for s in self._make_samples(ts, tuple(row[1:1 + nk]), row[1 + nk:], shape):
                        if wanted is None or s.key in wanted:
                            out.append(s)
        return out


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


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


__all__ = [
    "Cursor",
    "PostgresSource",
    "Shape",
    "TimeKind",
    "create_table_statements",
    "detect_timescaledb",
    "history_query",
    "install_notify_trigger",
    "notify_trigger_statements",
    "poll_query",
    "write_samples",
]
