"""Write-back of scores and alert transitions into a real PostgreSQL."""

from __future__ import annotations

import asyncio
import math
import threading
import time

import psycopg
import pytest
from prometheus_client import CollectorRegistry

from sentinel.config.source_postgres import PostgresSourceConfig, PostgresWriteBackConfig
from sentinel.metrics import Metrics
from sentinel.types import AlertState, ScoreRecord, StreamKey
from sentinel.writeback.postgres import PostgresWriteBack
from tests.servers import postgres as pg_fixtures

# Fixtures: a module-scoped real server and a fresh database per test.
postgres_server = pg_fixtures.postgres_server
pg_dsn = pg_fixtures.pg_dsn

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]

T0 = 1_714_564_800.0


def rec(key: StreamKey, i: int, state: AlertState, score: float = 0.1) -> ScoreRecord:
    band = {} if i == 0 else {"band_fields": ("a", "b"), "expected": (i + 0.5, math.nan),
                              "lower": (i - 1.0, math.nan), "upper": (i + 2.0, math.nan)}
    return ScoreRecord(key=key, ts=T0 + i, values=(float(i), math.nan), score=score, error=score * 2,
                       threshold=0.7, alert_state=int(state), ready=i > 0, **band)


async def _run(wb: PostgresWriteBack, body) -> None:
    task = asyncio.create_task(wb.run())
    try:
        await body()
    finally:
        await asyncio.wait_for(wb.stop(), 15)
        await asyncio.wait_for(task, 15)
    await wb.stop()  # idempotent


def test_scores_and_transitions_are_written(pg_dsn: str) -> None:
    src_cfg = PostgresSourceConfig(dsn=pg_dsn, write_back={"enabled": True, "scores_table": 'score "table"',
                                                           "flush_interval": 0.05, "batch_size": 7})
    registry = CollectorRegistry()
    wb = PostgresWriteBack(src_cfg, metrics=Metrics(registry))  # the source config: its dsn is used
    k1, k2 = StreamKey.of("pump", site="a", id="1"), StreamKey.of("pump", site="b", id="2")
    states = [AlertState.OK, AlertState.PENDING, AlertState.FIRING, AlertState.FIRING, AlertState.RESOLVED,
              AlertState.OK]

    async def body() -> None:
        # submitted from another thread, as the engine may do
        th = threading.Thread(target=lambda: [wb.submit([rec(k1, i, s, 0.1 * i), rec(k2, i, AlertState.OK)])
                                              for i, s in enumerate(states)])
        th.start()
        th.join(10)
        deadline = time.monotonic() + 10
        while wb.written < 12 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    asyncio.run(_run(wb, body))
    assert wb.written == 12 and wb.pending() == 0
    with psycopg.connect(pg_dsn) as c:
        rows = c.execute('SELECT extract(epoch FROM time), stream, labels, score, alert_state, ready, "values" '
                         'FROM "score ""table""" WHERE stream = %s ORDER BY time', (str(k1),)).fetchall()
        assert [r[4] for r in rows] == [int(s) for s in states]
        assert float(rows[2][0]) == T0 + 2 and rows[2][2] == {"site": "a", "id": "1"}
        assert rows[2][3] == pytest.approx(0.2) and rows[2][5] is True
        assert rows[2][6][0] == 2.0 and math.isnan(rows[2][6][1])
        band = c.execute('SELECT fields, expected, "lower", "upper" FROM "score ""table""" WHERE stream = %s '
                         'ORDER BY time', (str(k1),)).fetchall()
        assert band[0] == (None, None, None, None)  # not scored yet
        assert band[2][0] == ["a", "b"] and band[2][1][0] == 2.5 and band[2][2][0] == 1.0 and band[2][3][0] == 4.0
        assert math.isnan(band[2][1][1])
        tr = c.execute("SELECT extract(epoch FROM time), stream, from_state, to_state, state "
                       "FROM sentinel_alert_transitions ORDER BY time").fetchall()
        assert [(float(t) - T0, s, a, b, n) for t, s, a, b, n in tr] == [
            (1.0, str(k1), 0, 1, "pending"), (2.0, str(k1), 1, 2, "firing"), (4.0, str(k1), 2, 3, "resolved"),
            (5.0, str(k1), 3, 0, "ok")]
    assert registry.get_sample_value("sentinel_queue_depth", {"queue": "writeback_postgres"}) == 0


def test_a_scores_table_from_before_the_band_gains_its_columns(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn) as c:  # the table as an older Sentinel created it
        c.execute('CREATE TABLE sentinel_scores (time timestamptz NOT NULL, stream text NOT NULL, '
                  'measurement text NOT NULL, labels jsonb NOT NULL, score double precision, '
                  'error double precision, threshold double precision, alert_state smallint NOT NULL, '
                  'ready boolean NOT NULL, "values" double precision[])')
    wb = PostgresWriteBack(PostgresWriteBackConfig(enabled=True, flush_interval=0.05), metrics=Metrics(CollectorRegistry()),
                           dsn=pg_dsn)
    k = StreamKey.of("pump", site="a")

    async def body() -> None:
        wb.submit([rec(k, 0, AlertState.OK), rec(k, 1, AlertState.OK)])
        deadline = time.monotonic() + 10
        while wb.written < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    asyncio.run(_run(wb, body))
    with psycopg.connect(pg_dsn) as c:
        rows = c.execute('SELECT fields, "upper" FROM sentinel_scores ORDER BY time').fetchall()
    assert rows[0] == (None, None) and rows[1][0] == ["a", "b"] and rows[1][1][0] == 3.0


def test_overflow_is_counted_and_stop_flushes(pg_dsn: str) -> None:
    cfg = PostgresWriteBackConfig(enabled=True, dsn=pg_dsn, max_buffer=5, flush_interval=3600)
    registry = CollectorRegistry()
    wb = PostgresWriteBack(cfg, metrics=Metrics(registry))
    k = StreamKey.of("pump", id="x")
    wb.submit([rec(k, i, AlertState.OK) for i in range(8)])
    assert registry.get_sample_value("sentinel_queue_dropped_total", {"queue": "writeback_postgres"}) == 3

    async def body() -> None:
        await asyncio.sleep(0)  # flush_interval is an hour: only stop() writes

    asyncio.run(_run(wb, body))
    with psycopg.connect(pg_dsn) as c:
        assert c.execute("SELECT count(*) FROM sentinel_scores").fetchone()[0] == 5


def test_database_down_keeps_records_and_stop_is_bounded() -> None:
    from tests.servers._proc import free_port

    cfg = PostgresWriteBackConfig(enabled=True, dsn=f"postgresql://postgres@127.0.0.1:{free_port()}/x",
                                  flush_interval=0.05, stop_timeout=0.5)
    registry = CollectorRegistry()
    wb = PostgresWriteBack(cfg, metrics=Metrics(registry))
    wb.submit([rec(StreamKey.of("p"), i, AlertState.OK) for i in range(3)])

    async def body() -> None:
        await asyncio.sleep(0.3)

    asyncio.run(_run(wb, body))
    assert wb.written == 0
    assert registry.get_sample_value("sentinel_queue_dropped_total", {"queue": "writeback_postgres"}) == 3
