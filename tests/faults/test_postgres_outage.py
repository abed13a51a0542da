"""PostgreSQL outages: a server restart mid-stream and a server that is down at start.

Nothing may be lost or duplicated: every committed row is emitted exactly once.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from prometheus_client import CollectorRegistry

from sentinel.config.source_postgres import PostgresSourceConfig
from sentinel.metrics import Metrics
from sentinel.sources.running import RunningSource
from sentinel.sources.timescale import PostgresSource
from sentinel.types import SourceBatch
from tests.servers.postgres import PgServer, start_server

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(180)]

T0 = datetime(2024, 5, 1, tzinfo=UTC)


@pytest.fixture
def server() -> Iterator[PgServer]:
    s = start_server()
    try:
        yield s
    finally:
        s.cleanup()


def _setup(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE TABLE m (time timestamptz NOT NULL, dev text NOT NULL, v double precision, "
                  "PRIMARY KEY (time, dev))")


class Writer(threading.Thread):
    """Inserts rows one at a time, retrying each until committed, for a bounded number of rows and time."""

    def __init__(self, dsn: str, n: int, pause: float = 0.005):
        super().__init__(daemon=True)
        self.dsn, self.n, self.pause = dsn, n, pause
        self.committed: list[tuple[float, str]] = []
        self.retries = 0
        self.deadline = time.monotonic() + 60

    def run(self) -> None:
        conn = None
        i = 0
        while i < self.n and time.monotonic() < self.deadline:
            t = T0 + timedelta(milliseconds=10 * i)
            dev = f"d{i % 3}"
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=2)
                conn.execute("INSERT INTO m VALUES (%s, %s, %s) ON CONFLICT DO NOTHING", (t, dev, float(i)))
                self.committed.append((t.timestamp(), dev))
                i += 1
                time.sleep(self.pause)
            except psycopg.OperationalError:
                self.retries += 1
                conn = None
                time.sleep(0.05)
        if conn is not None:
            conn.close()


def _source(dsn: str, metrics: Metrics) -> PostgresSource:
    cfg = PostgresSourceConfig(dsn=dsn, table="m", key_columns=["dev"], value_columns=["v"], start="earliest",
                               poll_interval=0.2, lateness=5, connect_timeout=1, backoff_initial=0.05,
                               backoff_max=0.3, notify={"channel": "m_rows", "install_trigger": True})
    return PostgresSource(cfg, metrics=metrics)


async def _collect_until(src: PostgresSource, got: list[SourceBatch], n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while sum(len(b.samples) for b in got) < n and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


def test_server_restart_mid_stream_loses_and_duplicates_nothing(server: PgServer) -> None:
    dsn = server.create_database()
    _setup(dsn)
    metrics = Metrics(CollectorRegistry())
    src = _source(dsn, metrics)
    got: list[SourceBatch] = []
    n = 400

    async def emit(b: SourceBatch) -> None:
        got.append(b)

    running = RunningSource(src, metrics)  # the runtime's retry with backoff and the source_up gauge

    async def go() -> dict:
        task = asyncio.create_task(running.run(emit))
        writer = Writer(dsn, n)
        writer.start()
        seen_down = False
        try:
            deadline = time.monotonic() + 30
            while len(writer.committed) < n // 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            await asyncio.to_thread(server.stop)
            await asyncio.sleep(0.8)
            deadline = time.monotonic() + 10
            while running.connected and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            seen_down = not running.connected
            await asyncio.to_thread(server.start)
            await asyncio.to_thread(writer.join, 90)
            await _collect_until(src, got, len(writer.committed), 30)
            return {"writer": writer, "seen_down": seen_down, "up": running.connected}
        finally:
            await asyncio.wait_for(running.stop(), 10)
            await asyncio.wait_for(task, 10)

    r = asyncio.run(go())
    writer = r["writer"]
    assert len(writer.committed) == n, "the writer finished"
    assert r["seen_down"] and r["up"], "the source noticed the outage and reconnected"
    emitted = [(s.ts, s.key.label_dict()["dev"]) for b in got for s in b.samples]
    assert len(emitted) == len(set(emitted)), "no duplicates"
    assert sorted(emitted) == sorted(writer.committed), "nothing lost"
    assert metrics.registry.get_sample_value("sentinel_source_up", {"source": "postgres"}) == 0.0  # stopped
    print(f"\nrestart mid-stream: {n} rows, writer retries {writer.retries}, batches {len(got)}")


def test_server_down_at_start_then_catch_up(server: PgServer) -> None:
    dsn = server.create_database()
    _setup(dsn)
    with psycopg.connect(dsn, autocommit=True) as c, c.cursor() as cur:
        cur.executemany("INSERT INTO m VALUES (%s, %s, %s)",
                      [(T0 + timedelta(seconds=i), "d", float(i)) for i in range(50)])
    server.stop()
    src = _source(dsn, Metrics(CollectorRegistry()))
    got: list[SourceBatch] = []

    async def emit(b: SourceBatch) -> None:
        got.append(b)

    running = RunningSource(src, Metrics(CollectorRegistry()))

    async def go() -> None:
        task = asyncio.create_task(running.run(emit))
        try:
            await asyncio.sleep(0.5)
            assert not running.connected and not got
            await asyncio.to_thread(server.start)
            await _collect_until(src, got, 50, 30)
        finally:
            await asyncio.wait_for(running.stop(), 10)
            await asyncio.wait_for(task, 10)

    asyncio.run(go())
    assert [s.values[0] for b in got for s in b.samples] == [float(i) for i in range(50)]
