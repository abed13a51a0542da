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
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from ...clients.postgres import detect_timescaledb
from ...clients.postgres import one_line as _one_line
from ...config.source_postgres import PostgresNotifyConfig, PostgresSourceConfig
from ...errors import SourceError, SourceUnavailable
from ...metrics import Metrics
from ...types import Sample, SourceBatch, StreamKey
from ..base import Emit, Plugin
from .cursor import _FLOAT_TYPES, _INT_TYPES, Cursor, Raw, TimeKind
from .sql import Shape, describe_query, history_query, install_notify_trigger, max_time_query, poll_query

log = logging.getLogger("sentinel.sources.timescale")

# Errors that mean "the server is gone or unreachable right now": retried with backoff.
_TRANSIENT = (psycopg.OperationalError, psycopg.InterfaceError, OSError, SourceUnavailable)

# --------------------------------------------------------------------------- the source


class PostgresSource(Plugin):
    """Follows one PostgreSQL/TimescaleDB table or query; implements :class:`~sentinel.sources.base.Source`."""

    def __init__(self, cfg: PostgresSourceConfig, *, metrics: Metrics, clock: Callable[[], float] = time.time,
                 resume: dict | None = None):
        super().__init__(cfg, metrics=metrics, clock=clock)
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
                                       received_at=self.clock(), rejected={"duplicate": dup} if dup else {}))
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
