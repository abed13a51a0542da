"""InfluxDB source against a real influxd 1.6: polling, subscription push, resume, history, write.

Every test uses its own database on one module-scoped server; points carry explicit
timestamps in the recent past so the windows are deterministic.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from sentinel.config.source_influxdb import InfluxDBSourceConfig
from sentinel.metrics import Metrics
from sentinel.sources.influxdb import InfluxDBSource, write_samples
from sentinel.types import Sample, SourceBatch, StreamKey
from tests.servers._proc import free_port
from tests.servers.influxdb import InfluxServer, start_influxd, stop_influxd

pytestmark = pytest.mark.influxdb

NS = 1_000_000_000


@pytest.fixture(scope="module")
def influx() -> InfluxServer:
    server = start_influxd()
    yield server
    stop_influxd(server)


def lines_for(streams: int, start_s: int, count: int, meas: str = "pump") -> list[str]:
    return [f"{meas},site=s{i % 2},pump=p{i} temp={20 + k * 0.1 + i},vib={k}i {(start_s + k) * NS}"
            for k in range(count) for i in range(streams)]


class Collector:
    def __init__(self) -> None:
        self.batches: list[SourceBatch] = []

    async def __call__(self, batch: SourceBatch) -> None:
        self.batches.append(batch)

    @property
    def samples(self) -> list[Sample]:
        return [s for b in self.batches for s in b.samples]

    def ids(self) -> Counter:
        return Counter((str(s.key), s.ts) for s in self.samples)

    async def wait_for(self, n: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.samples) < n and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert len(self.samples) >= n, f"got {len(self.samples)} of {n} samples"


def assert_ordered(samples: list[Sample]) -> None:
    last: dict[StreamKey, float] = {}
    for s in samples:
        assert s.ts > last.get(s.key, -1.0), f"{s.key} out of order at {s.ts}"
        last[s.key] = s.ts


def cfg_for(influx: InfluxServer, db: str, **kw) -> InfluxDBSourceConfig:
    base = dict(url=influx.url, database=db, poll_interval=0.05, lateness=0, page_size=25,
                backoff_initial=0.05, backoff_max=0.2, start_from=3600)
    base.update(kw)
    return InfluxDBSourceConfig(**base)


def test_poll_influxql_end_to_end_and_resume(influx: InfluxServer) -> None:
    db = "poll_e2e"
    influx.query(f'CREATE DATABASE "{db}"')
    now = int(time.time())
    clock = [now - 500.0]  # the source reads up to clock() - lateness; moved by the test
    influx.write(db, lines_for(3, now - 600, 60))

    async def main() -> None:
        cfg = cfg_for(influx, db)
        src = InfluxDBSource(cfg, metrics=Metrics(CollectorRegistry()), clock=lambda: clock[0])
        got = Collector()
        task = asyncio.create_task(src.run(got))
        await got.wait_for(180)
        influx.write(db, lines_for(3, now - 480, 10))
        clock[0] = now - 450.0
        await got.wait_for(210)
        await asyncio.sleep(0.2)
        await src.stop()
        await task
        assert src.stats["pages"] > 3  # 60 rows per series at page_size 25: paged
        assert len(got.samples) == 210 and max(got.ids().values()) == 1
        assert_ordered(got.samples)
        s0 = next(s for s in got.samples if s.key == StreamKey.of("pump", site="s0", pump="p0"))
        assert s0.fields == ("temp", "vib") and s0.values == (20.0, 0.0)
        cursor = got.batches[-1].cursor
        assert cursor == {"t": (now - 450) * NS}

        # A new source resumed from the last cursor sees exactly what came after it.
        influx.write(db, lines_for(3, now - 450, 6))  # the first is at the cursor: later than `lateness`, not read
        clock[0] = now - 400.0
        again = Collector()
        src2 = InfluxDBSource(cfg, metrics=Metrics(CollectorRegistry()), resume=cursor, clock=lambda: clock[0])
        task = asyncio.create_task(src2.run(again))
        await again.wait_for(15)
        await asyncio.sleep(0.2)
        await src2.stop()
        await task
        assert len(again.samples) == 15
        assert min(s.ts for s in again.samples) == now - 449

    asyncio.run(asyncio.wait_for(main(), 60))


def test_poll_selection_per_field_tags_and_max_streams(influx: InfluxServer) -> None:
    db = "poll_select"
    influx.query(f'CREATE DATABASE "{db}"')
    now = int(time.time())
    influx.write(db, [*lines_for(4, now - 100, 5), f"other v=1 {(now - 100) * NS}"])
    registry = CollectorRegistry()

    async def main() -> list[Sample]:
        cfg = cfg_for(influx, db, measurements=["pump"], tags={"site": ["s0"]}, fields=["temp"],
                      stream_per="field", max_streams=1)
        src = InfluxDBSource(cfg, metrics=Metrics(registry))
        got = Collector()
        assert await src.poll_once(got) is False
        return got.samples, got.batches

    samples, batches = asyncio.run(asyncio.wait_for(main(), 30))
    keys = {s.key for s in samples}
    assert keys == {StreamKey.of("pump", site="s0", pump="p0", field="temp")}
    assert len(samples) == 5
    assert sum(b.rejected.get("max_streams", 0) for b in batches) == 5  # pump p2 (site s0) refused
    assert registry.get_sample_value("sentinel_streams_refused_total") == 1


async def serve(routes: list[web.RouteDef]) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


def subscriptions(influx: InfluxServer, db: str) -> list[list]:
    out = []
    for res in influx.query("SHOW SUBSCRIPTIONS"):
        for s in res.get("series", []) or []:
            if s["name"] == db:
                out.extend(s.get("values") or [])
    return out


def test_subscription_push_backfill_and_restart(influx: InfluxServer) -> None:
    db = "sub_e2e"
    influx.query(f'CREATE DATABASE "{db}"')
    now = int(time.time())
    influx.write(db, lines_for(2, now - 500, 20))  # history before Sentinel starts: backfilled

    async def main() -> None:
        port = free_port()
        cfg = cfg_for(influx, db, mode="subscription", subscription_destination=f"http://127.0.0.1:{port}",
                      poll_interval=0.2)
        src = InfluxDBSource(cfg, metrics=Metrics(CollectorRegistry()))
        app = web.Application()
        app.add_routes(src.http_routes())
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        got = Collector()
        task = asyncio.create_task(src.run(got))
        await got.wait_for(40)
        assert len(subscriptions(influx, db)) == 1
        # live writes arrive by push (plus the one backfill round the first push triggers)
        for k in range(10):
            await asyncio.to_thread(influx.write, db, lines_for(2, now - 400 + k, 1))
        await got.wait_for(60)
        deadline = time.monotonic() + 10
        while src.stats["backfill_rounds"] < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for k in range(10, 20):
            await asyncio.to_thread(influx.write, db, lines_for(2, now - 400 + k, 1))
        await got.wait_for(80)
        await asyncio.sleep(0.3)
        await src.stop()
        await task
        assert len(got.samples) == 80 and max(got.ids().values()) == 1
        assert_ordered(got.samples)
        cursor = got.batches[-1].cursor
        assert cursor == {"t": (now - 381) * NS}

        # Sentinel down: influxd's pushes fail; the restarted source backfills them from its cursor.
        await runner.cleanup()
        influx.write(db, lines_for(2, now - 300, 7))
        src2 = InfluxDBSource(cfg.model_copy(update={"remove_subscription_on_shutdown": True}),
                              metrics=Metrics(CollectorRegistry()), resume=cursor)
        runner2 = web.AppRunner(web.Application())
        runner2.app.add_routes(src2.http_routes())
        await runner2.setup()
        await web.TCPSite(runner2, "127.0.0.1", port).start()
        again = Collector()
        task = asyncio.create_task(src2.run(again))
        await again.wait_for(14)
        await asyncio.to_thread(influx.write, db, lines_for(2, now - 200, 1))
        await again.wait_for(16)
        await asyncio.sleep(0.3)
        await src2.stop()
        await task
        await runner2.cleanup()
        assert len(again.samples) == 16 and max(again.ids().values()) == 1
        assert min(s.ts for s in again.samples) == now - 300
        assert subscriptions(influx, db) == []  # removed on clean shutdown as configured

    asyncio.run(asyncio.wait_for(main(), 90))


def test_history_warmup_reads_the_database(influx: InfluxServer) -> None:
    db = "history"
    influx.query(f'CREATE DATABASE "{db}"')
    now = int(time.time())
    influx.write(db, lines_for(3, now - 1000, 120))

    async def main() -> tuple[list[Sample], list[Sample], list[Sample]]:
        src = InfluxDBSource(cfg_for(influx, db, page_size=50), metrics=Metrics(CollectorRegistry()))
        everything = await src.history(None, now - 1000, now)
        key = StreamKey.of("pump", site="s1", pump="p1")
        one = await src.history([key], now - 990, now - 940)
        # a fresh stream gets its history before any live point: it can be trained at once
        got = Collector()
        src2 = InfluxDBSource(cfg_for(influx, db, start_from=0), metrics=Metrics(CollectorRegistry()))
        warm = await src2.history([key], time.time() - 3600, time.time())
        await src2.poll_once(got)
        await src.stop()
        await src2.stop()
        assert got.samples == []  # start_from=0: nothing new to follow, but history was served
        return everything, one, warm

    everything, one, warm = asyncio.run(asyncio.wait_for(main(), 30))
    assert len(everything) == 360 and sorted(s.ts for s in everything) == [s.ts for s in everything]
    assert [s.ts for s in one] == [float(now - 990 + k) for k in range(50)]
    assert all(s.key == StreamKey.of("pump", site="s1", pump="p1") for s in one)
    assert len(warm) == 120


def test_write_samples_roundtrip(influx: InfluxServer) -> None:
    cfg = InfluxDBSourceConfig(url=influx.url, database="simulated")
    now = int(time.time())
    key = StreamKey.of("sensor", site="a", sensor="x1")
    samples = [Sample(key, float(now - 50 + k), ("temp", "vibration"), (1.0 + k, float("nan") if k % 2 else 2.0))
               for k in range(50)]
    asyncio.run(write_samples(cfg, samples))
    assert influx.count("simulated", "sensor", "temp") == 50
    assert influx.count("simulated", "sensor", "vibration") == 25

    async def main() -> list[Sample]:
        src = InfluxDBSource(cfg.model_copy(update={"fields": ["temp", "vibration"]}),
                             metrics=Metrics(CollectorRegistry()))
        out = await src.history(None, now - 100, now + 1)
        await src.stop()
        return out

    back = asyncio.run(main())
    assert [s.ts for s in back] == [s.ts for s in samples]
    assert back[1].values[0] == 2.0 and back[1].values[1] != back[1].values[1]  # NaN stays missing


def test_simulated_fleet_written_and_read_back(influx: InfluxServer) -> None:
    from sentinel.config.source_simulator import SimulatorSourceConfig
    from sentinel.sources import simulator as sim

    t0 = float(int(time.time()) - 600)
    fleet = sim.Fleet(SimulatorSourceConfig(streams=3, interval=10.0), start=t0)
    samples = fleet.samples(t0, t0 + 100)
    cfg = InfluxDBSourceConfig(url=influx.url, database="fleet")
    asyncio.run(write_samples(cfg, samples))

    async def main() -> list[Sample]:
        src = InfluxDBSource(cfg, metrics=Metrics(CollectorRegistry()))
        out = await src.history(None, t0 - 1, t0 + 101)
        await src.stop()
        return out

    back = asyncio.run(main())
    assert len(back) == len(samples) > 0
    assert {s.key for s in back} == {s.key for s in samples}
