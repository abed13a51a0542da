"""A real influxd stopped and restarted mid-stream: the source loses and duplicates nothing.

A writer thread writes two streams point by point (retrying while the server is down)
and the server is restarted after the 20th point. The source's clock is the writer's
progress, so "now" is deterministic and no point is ever late.
"""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.error
from collections import Counter

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from sentinel.config.source_influxdb import InfluxDBSourceConfig
from sentinel.metrics import Metrics
from sentinel.sources.influxdb import InfluxDBSource
from sentinel.sources.running import RunningSource
from sentinel.types import SourceBatch
from tests.servers._proc import free_port
from tests.servers.influxdb import InfluxServer, start_influxd, stop_influxd

pytestmark = pytest.mark.influxdb

NS = 10**9
POINTS = 60
RESTART_AT = 20


@pytest.fixture
def influx() -> InfluxServer:
    server = start_influxd()
    yield server
    stop_influxd(server)


def writer(influx: InfluxServer, db: str, base: int, clock: list[float], done: threading.Event) -> None:
    try:
        for k in range(POINTS):
            if k == RESTART_AT:
                influx.stop()
                threading.Timer(0.6, influx.start).start()
            lines = [f"pump,pump=p{i} temp={k}.5 {(base + k) * NS}" for i in range(2)]
            for _ in range(400):  # bounded retry while the server is down
                try:
                    influx.write(db, lines)
                    break
                except (urllib.error.URLError, OSError):
                    time.sleep(0.025)
            else:
                raise AssertionError("influxd did not come back")
            clock[0] = float(base + k)
            time.sleep(0.01)
    finally:
        done.set()


async def follow(src: InfluxDBSource, got: list[SourceBatch], total: int, timeout: float = 40.0) -> None:
    async def emit(b: SourceBatch) -> None:
        got.append(b)

    running = RunningSource(src, Metrics(CollectorRegistry()))  # the runtime's retry with backoff
    task = asyncio.create_task(running.run(emit))
    deadline = time.monotonic() + timeout
    while sum(len(b.samples) for b in got) < total and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # anything extra (a duplicate) would show up now
    await running.stop()
    await task


def check(got: list[SourceBatch]) -> None:
    ids = Counter((str(s.key), s.ts) for b in got for s in b.samples)
    assert len(ids) == 2 * POINTS, f"missing {2 * POINTS - len(ids)} samples"
    assert max(ids.values()) == 1, "duplicated samples"


def test_poll_survives_a_server_restart(influx: InfluxServer) -> None:
    db = "outage_poll"
    influx.query(f'CREATE DATABASE "{db}"')
    base = int(time.time()) - 3600
    clock = [float(base - 1)]
    cfg = InfluxDBSourceConfig(url=influx.url, database=db, lateness=0, poll_interval=0.02, backoff_initial=0.05,
                               backoff_max=0.2)
    src = InfluxDBSource(cfg, metrics=Metrics(CollectorRegistry()), clock=lambda: clock[0],
                         resume={"t": (base - 1) * NS})
    done = threading.Event()
    t = threading.Thread(target=writer, args=(influx, db, base, clock, done), daemon=True)
    got: list[SourceBatch] = []
    t.start()
    asyncio.run(follow(src, got, 2 * POINTS))
    t.join(timeout=30)
    check(got)
    assert got[-1].cursor == {"t": (base + POINTS - 1) * NS}


def test_subscription_survives_a_server_restart(influx: InfluxServer) -> None:
    db = "outage_sub"
    influx.query(f'CREATE DATABASE "{db}"')
    base = int(time.time()) - 3600
    clock = [float(base - 1)]
    port = free_port()
    cfg = InfluxDBSourceConfig(mode="subscription", url=influx.url, database=db, poll_interval=0.1,
                               backoff_initial=0.05, backoff_max=0.2, subscription_destination=f"http://127.0.0.1:{port}")
    src = InfluxDBSource(cfg, metrics=Metrics(CollectorRegistry()), clock=lambda: clock[0],
                         resume={"t": (base - 1) * NS})
    got: list[SourceBatch] = []

    async def main() -> None:
        app = web.Application()
        app.add_routes(src.http_routes())
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        done = threading.Event()
        t = threading.Thread(target=writer, args=(influx, db, base, clock, done), daemon=True)
        t.start()
        await follow(src, got, 2 * POINTS)
        await asyncio.to_thread(t.join, 30)
        await runner.cleanup()

    asyncio.run(main())
    check(got)
    assert src.stats["backfill_rounds"] >= 2
