"""The PostgreSQL source against a real PostgreSQL: polling, typing, NOTIFY, hostile names, history, resume."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from prometheus_client import CollectorRegistry
from psycopg import sql

from sentinel.config.source_postgres import PostgresSourceConfig
from sentinel.metrics import Metrics
from sentinel.sources.base import Source
from sentinel.sources.timescale import PostgresSource, write_samples
from sentinel.types import Sample, SourceBatch, StreamKey
from tests.servers import postgres as pg_fixtures

# Fixtures: a module-scoped real server and a fresh database per test.
postgres_server = pg_fixtures.postgres_server
pg_dsn = pg_fixtures.pg_dsn

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def ts(i: float) -> datetime:
    return T0 + timedelta(seconds=i)


def sec(i: float) -> float:
    return T0.timestamp() + i


class Collector:
    """An ``emit`` that records batches; waits are bounded in time."""

    def __init__(self) -> None:
        self.batches: list[SourceBatch] = []
        self.arrivals: list[tuple[float, Sample]] = []

    async def __call__(self, batch: SourceBatch) -> None:
        now = time.perf_counter()
        self.batches.append(batch)
        self.arrivals.extend((now, s) for s in batch.samples)

    @property
    def samples(self) -> list[Sample]:
        return [s for b in self.batches for s in b.samples]

    async def wait_for(self, n: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.samples) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"got {len(self.samples)} samples, wanted {n}")
            await asyncio.sleep(0.02)


def execute(dsn: str, *stmts: str | sql.Composable) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        for s in stmts:
            c.execute(s)


def insert(dsn: str, q: str | sql.Composable, rows: list[tuple]) -> None:
    with psycopg.connect(dsn, autocommit=True) as c, c.cursor() as cur:
        cur.executemany(q, rows)


def make_source(dsn: str, resume: dict | None = None, **kw) -> PostgresSource:
    kw.setdefault("poll_interval", 0.1)
    kw.setdefault("connect_timeout", 2)
    kw.setdefault("backoff_initial", 0.05)
    kw.setdefault("backoff_max", 0.5)
    cfg = PostgresSourceConfig(dsn=dsn, **kw)
    return PostgresSource(cfg, metrics=Metrics(CollectorRegistry()), resume=resume)


async def running(src: PostgresSource, body: Callable[[Collector], Awaitable[None]]) -> Collector:
    col = Collector()
    task = asyncio.create_task(src.run(col))
    try:
        await body(col)
    finally:
        await asyncio.wait_for(src.stop(), 10)
        await asyncio.wait_for(task, 10)
    return col


def by_stream(samples: list[Sample]) -> dict[StreamKey, list[Sample]]:
    out: dict[StreamKey, list[Sample]] = {}
    for s in samples:
        out.setdefault(s.key, []).append(s)
    return out


PUMPS = """CREATE TABLE pumps (time timestamptz NOT NULL, site text, pump integer, temp double precision,
           vib numeric, running boolean, cnt bigint, note text)"""
INS = "INSERT INTO pumps VALUES (%s, %s, %s, %s, %s, %s, %s, 'x')"


def test_is_a_source(pg_dsn: str) -> None:
    assert isinstance(make_source(pg_dsn), Source)


def test_polling_end_to_end_typed_rows(pg_dsn: str) -> None:
    execute(pg_dsn, PUMPS)
    rows = [(ts(i), site, pump, 20.0 + i, 0.5 * i, i % 2 == 0, i) for i in range(5)
            for site, pump in (("a", 1), ("a", 2), ("b", 1))]
    rows.append((ts(5), "b", 1, None, None, None, None))  # NULLs -> NaN
    insert(pg_dsn, INS, rows)
    src = make_source(pg_dsn, table="pumps", key_columns=["site", "pump"], value_columns=["temp", "vib", "running", "cnt"],
                      start="earliest", notify={"enabled": False})

    async def body(col: Collector) -> None:
        await col.wait_for(16)
        assert src.connected
        insert(pg_dsn, INS, [(ts(10 + i), "a", 1, 1.0, 2, True, 3) for i in range(3)])
        await col.wait_for(19)
        polls = src.polls
        deadline = time.monotonic() + 5
        while src.polls < polls + 3 and time.monotonic() < deadline:  # a few idle polls re-read the lateness window
            await asyncio.sleep(0.05)

    col = asyncio.run(running(src, body))
    got = col.samples
    assert len(got) == 19, "every row once, nothing re-emitted by the overlapping lateness window"
    streams = by_stream(got)
    assert set(streams) == {StreamKey.of("pumps", site="a", pump="1"), StreamKey.of("pumps", site="a", pump="2"),
                            StreamKey.of("pumps", site="b", pump="1")}
    for ss in streams.values():
        assert [s.ts for s in ss] == sorted(s.ts for s in ss)
    first = streams[StreamKey.of("pumps", site="a", pump="2")][2]
    assert first.fields == ("temp", "vib", "running", "cnt")
    assert first.ts == sec(2)
    assert first.values == (22.0, 1.0, 1.0, 2.0)
    last_b = streams[StreamKey.of("pumps", site="b", pump="1")][-1]
    assert last_b.ts == sec(5) and all(math.isnan(v) for v in last_b.values)
    assert src.connected is False
    assert all(b.cursor and b.cursor["v"] == 1 for b in col.batches)


def test_start_latest_skips_existing_rows_and_defaults_value_columns(pg_dsn: str) -> None:
    execute(pg_dsn, PUMPS)
    insert(pg_dsn, INS, [(ts(i), "a", 1, float(i), i, True, i) for i in range(5)])
    src = make_source(pg_dsn, table="pumps", key_columns=["site", "pump"], notify={"enabled": False})

    async def body(col: Collector) -> None:
        deadline = time.monotonic() + 10
        while src.polls < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        insert(pg_dsn, INS, [(ts(100), "a", 1, 7.5, 1, False, 9)])
        await col.wait_for(1)

    col = asyncio.run(running(src, body))
    assert len(col.samples) == 1
    s = col.samples[0]
    assert s.ts == sec(100) and s.fields == ("temp", "vib", "running", "cnt") and s.values == (7.5, 1.0, 0.0, 9.0)


def test_epoch_ms_time_and_per_field_streams(pg_dsn: str) -> None:
    execute(pg_dsn, "CREATE TABLE m (ts_ms bigint, dev text, a real, b integer)")
    base = int(sec(0) * 1000)
    insert(pg_dsn, "INSERT INTO m VALUES (%s, %s, %s, %s)", [(base + 250 * i, "d1", i / 2, i) for i in range(4)])
    src = make_source(pg_dsn, table="m", time_column="ts_ms", epoch_unit="ms", key_columns=["dev"],
                      per_field_streams=True, start="earliest", measurement="machine", notify={"enabled": False})

    async def body(col: Collector) -> None:
        await col.wait_for(8)

    col = asyncio.run(running(src, body))
    streams = by_stream(col.samples)
    a = streams[StreamKey.of("machine", dev="d1", field="a")]
    b = streams[StreamKey.of("machine", dev="d1", field="b")]
    assert [s.ts for s in a] == [sec(0) + 0.25 * i for i in range(4)]
    assert [s.values for s in a] == [(i / 2,) for i in range(4)] and a[0].fields == ("a",)
    assert [s.values for s in b] == [(float(i),) for i in range(4)]


def test_custom_query_with_bound_parameters(pg_dsn: str) -> None:
    execute(pg_dsn, PUMPS)
    insert(pg_dsn, INS, [(ts(i), site, 1, float(i), i, True, i) for i in range(3) for site in ("a", "b")])
    src = make_source(pg_dsn, query="SELECT time, site, temp * 2 AS t2 FROM pumps WHERE site = %(site)s",
                      query_params={"site": "b'; DROP TABLE pumps; --"}, key_columns=["site"],
                      value_columns=["t2"], start="earliest", notify={"enabled": False}, name="q")
    src2 = make_source(pg_dsn, query="SELECT time, site, temp * 2 AS t2 FROM pumps WHERE site = %(site)s",
                       query_params={"site": "b"}, key_columns=["site"], value_columns=["t2"],
                       start="earliest", notify={"enabled": False}, name="q")

    async def idle(col: Collector) -> None:
        deadline = time.monotonic() + 10
        while src.polls < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    assert asyncio.run(running(src, idle)).samples == []

    async def body(col: Collector) -> None:
        await col.wait_for(3)

    col = asyncio.run(running(src2, body))
    assert [(str(s.key), s.values) for s in col.samples] == [("q,site=b", (2.0 * i,)) for i in range(3)]
    with psycopg.connect(pg_dsn) as c:
        assert c.execute("SELECT count(*) FROM pumps").fetchone()[0] == 6


def test_resume_from_cursor_no_gap_no_duplicate(pg_dsn: str) -> None:
    execute(pg_dsn, PUMPS)
    insert(pg_dsn, INS, [(ts(i), "a", p, float(i), i, True, i) for i in range(10) for p in (1, 2)])
    kw = dict(table="pumps", key_columns=["site", "pump"], value_columns=["temp"], start="earliest",
              notify={"enabled": False}, lateness=5, page_size=3)

    src = make_source(pg_dsn, **kw)

    async def body(col: Collector) -> None:
        await col.wait_for(20)

    col1 = asyncio.run(running(src, body))
    assert len(col1.batches) >= 7, "page_size=3 pages the catch-up"
    cursor = col1.batches[-1].cursor
    assert cursor is not None
    # While "down": a late row inside the lateness window, one beyond it (lost by design), and new rows.
    insert(pg_dsn, INS, [(ts(7.5), "a", 1, 75.0, 0, True, 0), (ts(2), "a", 3, 2.0, 0, True, 0)]
           + [(ts(10 + i), "a", p, 100.0 + i, 0, True, 0) for i in range(5) for p in (1, 2)])
    src2 = make_source(pg_dsn, resume=cursor, **kw)

    async def body2(col: Collector) -> None:
        await col.wait_for(11)
        polls = src2.polls
        deadline = time.monotonic() + 5
        while src2.polls < polls + 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    col2 = asyncio.run(running(src2, body2))
    got = [(s.ts, s.key.label_dict()["pump"]) for s in col2.samples]
    expected = [(sec(7.5), "1")] + [(sec(10 + i), p) for i in range(5) for p in ("1", "2")]
    assert got == expected
    first = {(s.ts, s.key) for s in col1.samples}
    assert not first & {(s.ts, s.key) for s in col2.samples}


def test_notify_wakes_the_source_within_milliseconds(pg_dsn: str) -> None:
    execute(pg_dsn, PUMPS)
    src = make_source(pg_dsn, table="pumps", key_columns=["site"], value_columns=["temp"], poll_interval=3600,
                      notify={"enabled": True, "channel": "pumps_new", "install_trigger": True})
    latencies: list[float] = []

    async def body(col: Collector) -> None:
        deadline = time.monotonic() + 10
        while src.polls < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for i in range(5):
            await asyncio.to_thread(insert, pg_dsn, INS, [(ts(i), "a", 1, float(i), 0, True, 0)])
            t_commit = time.perf_counter()  # the insert has committed (autocommit) when insert() returns
            await col.wait_for(i + 1)
            latencies.append(max(0.0, col.arrivals[-1][0] - t_commit))

    col = asyncio.run(running(src, body))
    # poll_interval is an hour: only the NOTIFY can have caused these polls.
    assert [s.values for s in col.samples] == [(float(i),) for i in range(5)]
    assert src.notifications >= 5
    latencies.sort()
    print(f"\nNOTIFY wake-up latency commit->emit: median {latencies[2] * 1000:.1f} ms, "
          f"max {latencies[-1] * 1000:.1f} ms over {len(latencies)} inserts")
    # Installing again is idempotent: still exactly one trigger.
    asyncio.run(running(make_source(pg_dsn, table="pumps", key_columns=["site"], value_columns=["temp"],
                                    notify={"channel": "pumps_new", "install_trigger": True}),
                        lambda col: asyncio.sleep(0.3)))
    with psycopg.connect(pg_dsn) as c:
        n = c.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'pumps'::regclass AND NOT tgisinternal")
        assert n.fetchone()[0] == 1


HOSTILE_TABLES = ['"; DROP TABLE victim; --', 'my "quoted" table', "Robert'); DROP TABLE victim;--"]


@pytest.mark.parametrize("table", HOSTILE_TABLES)
def test_hostile_table_and_column_names(pg_dsn: str, table: str) -> None:
    tcol, kcol, vcol = 'ti"me; --', 'a b"c', '"; DROP TABLE victim; --'
    execute(pg_dsn, "CREATE TABLE victim (x int)",
            sql.SQL("CREATE TABLE {} ({} timestamptz, {} text, {} double precision)").format(
                sql.Identifier(table), sql.Identifier(tcol), sql.Identifier(kcol), sql.Identifier(vcol)))
    cfg = dict(table=table, time_column=tcol, key_columns=[kcol], value_columns=[vcol], start="earliest",
               notify={"channel": '"; DROP TABLE victim; --', "install_trigger": True},
               history_bucket=10)
    samples = [Sample(StreamKey.of(table, {kcol: "k'1"}), sec(i), (vcol,), (float(i),)) for i in range(20)]
    asyncio.run(write_samples(PostgresSourceConfig(dsn=pg_dsn, **cfg), samples))
    src = make_source(pg_dsn, **cfg)

    async def body(col: Collector) -> None:
        await col.wait_for(20)
        hist = await src.history([StreamKey.of(table, {kcol: "k'1"})], sec(0), sec(20))
        assert [(s.ts, s.values) for s in hist] == [(sec(0), (4.5,)), (sec(10), (14.5,))]
        insert(pg_dsn, sql.SQL("INSERT INTO {} VALUES (%s, %s, %s)").format(sql.Identifier(table)),
               [(ts(30), "k'1", 30.0)])
        await col.wait_for(21)

    col = asyncio.run(running(src, body))
    assert [(s.key, s.ts, s.values) for s in col.samples] == [
        (StreamKey.of(table, {kcol: "k'1"}), sec(i), (float(i),)) for i in [*range(20), 30]]
    assert src.notifications >= 1
    with psycopg.connect(pg_dsn) as c:
        assert c.execute("SELECT to_regclass('victim') IS NOT NULL").fetchone()[0]


def test_history_for_warm_up(pg_dsn: str) -> None:
    execute(pg_dsn, PUMPS)
    insert(pg_dsn, INS, [(ts(i), site, p, float(i), i, i % 3 == 0, i) for i in range(120)
                         for site, p in (("a", 1), ("a", 2), ("b", 7))])
    src = make_source(pg_dsn, table="pumps", key_columns=["site", "pump"], value_columns=["temp", "running"],
                      page_size=50)
    ka, kb = StreamKey.of("pumps", site="a", pump="1"), StreamKey.of("pumps", site="b", pump="7")

    async def go() -> None:
        h = await src.history([ka, kb, StreamKey.of("other", site="a", pump="1")], sec(10), sec(70))
        assert {s.key for s in h} == {ka, kb}
        assert [s.ts for s in h if s.key == ka] == [sec(i) for i in range(10, 70)]
        assert [s.values for s in h if s.key == kb][:4] == [(10.0, 0.0), (11.0, 0.0), (12.0, 1.0), (13.0, 0.0)]
        assert len(await src.history(None, sec(0), sec(120))) == 360
        assert await src.history([], sec(0), sec(120)) == []
        bucketed = make_source(pg_dsn, table="pumps", key_columns=["site", "pump"], value_columns=["temp"],
                               history_bucket=60)
        hb = await bucketed.history([ka], sec(0), sec(120))
        assert [(s.ts, s.values) for s in hb] == [(sec(0), (29.5,)), (sec(60), (89.5,))]

    asyncio.run(go())


def test_write_samples_from_the_simulator_reads_back(pg_dsn: str) -> None:
    from sentinel.config.source_simulator import SimulatorSourceConfig
    from sentinel.sources.simulator import Fleet

    fleet = Fleet(SimulatorSourceConfig(streams=3, interval=1.0, history=60), start=sec(0))
    samples = fleet.samples(sec(0), sec(20))
    assert samples
    cfg = PostgresSourceConfig(dsn=pg_dsn, table="sim", value_columns=list(fleet.fields))
    asyncio.run(write_samples(cfg, samples))
    src = make_source(pg_dsn, table="sim", key_columns=cfg.key_columns or sorted(samples[0].key.label_dict()),
                      value_columns=list(fleet.fields), measurement=samples[0].key.measurement)

    async def go() -> list[Sample]:
        return await src.history(None, sec(0), sec(20))

    back = asyncio.run(go())
    assert len(back) == len(samples)
    assert {(s.key, s.ts) for s in back} == {(s.key, round(s.ts, 6)) for s in samples}
