"""End to end through the daemon against a real influxd 1.6.

Each test starts a real :class:`~sentinel.runtime.daemon.Daemon` (HTTP server on a free
loopback port, inline training, small model) on its own database of one module-scoped
influxd, and checks what an operator would see: streams trained from history at start,
scores, a spike's alert reaching a webhook receiver, score write-back rows in InfluxDB,
and ``sentinel simulate`` data in the database.

Time is deterministic: points carry explicit timestamps around ``T`` (a whole second
in the recent past) and the daemon's clock is a :class:`Clock` the test moves, so the
polling windows and the history range are exact.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from sentinel.cli import main as cli
from tests.integration.e2e_helpers import (
    NS,
    SPIKE,
    Clock,
    eventually,
    firing_alerts,
    http_json,
    ingested,
    running,
    small_config,
    stream_state,
    value,
)
from tests.servers.alertmanager import WebhookReceiver
from tests.servers.influxdb import InfluxServer, start_influxd, stop_influxd

pytestmark = pytest.mark.influxdb

HISTORY = 120  # samples per stream written before the daemon starts (min_history is 64)
STREAMS = 2


@pytest.fixture(scope="module")
def influx() -> InfluxServer:
    server = start_influxd()
    yield server
    stop_influxd(server)


def pump_lines(ks: range, streams: int = STREAMS, t0: int = 0, spike_at: dict[int, int] | None = None) -> list[str]:
    """Line protocol of samples ``ks`` (at ``t0 + k`` seconds) for pumps p0..p{streams-1}."""
    out = []
    for k in ks:
        for i in range(streams):
            v = SPIKE if (spike_at or {}).get(i) == k else value(k, i)
            out.append(f"pump,site=a,pump=p{i} temp={v!r} {(t0 + k) * NS}")
    return out


def influx_source(influx: InfluxServer, db: str, **kw) -> dict:
    return {"type": "influxdb", "name": "influx", "url": influx.url, "database": db, "lateness": 0,
            "poll_interval": 0.05, "backoff_initial": 0.05, "backoff_max": 0.2, **kw}


def new_db(influx: InfluxServer, db: str) -> int:
    """Create ``db``; return T, the timestamp (s) the history ends at."""
    influx.query(f'CREATE DATABASE "{db}"')
    return int(time.time()) - 3 * HISTORY


def test_poll_history_warmup_scores_and_alerts(influx: InfluxServer, tmp_path: Path) -> None:
    """poll_influxql: trained from history right after start, then a live spike fires a webhook alert."""
    db = "e2e_poll"
    T = new_db(influx, db)
    # history: samples 0..HISTORY-1 at T-HISTORY+1 .. T
    influx.write(db, pump_lines(range(HISTORY), t0=T - HISTORY + 1))
    clock = Clock(T + 0.5)

    async def main() -> None:
        rx = await WebhookReceiver().start()
        try:
            cfg = small_config(tmp_path, [influx_source(influx, db, mode="poll_influxql")], webhook_url=rx.url)
            async with running(cfg, clock=clock) as d:
                # Trained from history alone: no live sample has been ingested yet.
                await eventually(lambda: all(s["state"] == "ok" for s in d.streams()) and len(d.streams()) == STREAMS,
                                 "streams trained from history")
                assert ingested(d, "influx") == 0
                assert d.engine.model_version >= 1
                # live: 40 normal samples then a spike on p1, then 5 normal ones
                live = range(HISTORY, HISTORY + 46)
                spike_k = HISTORY + 40
                influx.write(db, pump_lines(live, t0=T - HISTORY + 1, spike_at={1: spike_k}))
                clock.now = T + 46.5
                await eventually(lambda: ingested(d, "influx") == STREAMS * 46, "live samples scored")
                await eventually(lambda: firing_alerts(rx.bodies()), "the spike's alert at the webhook")
                alerts = firing_alerts(rx.bodies())
                assert {a["labels"]["pump"] for a in alerts} == {"p1"}
                assert alerts[0]["labels"]["alertname"] == "SentinelAnomaly"
                assert alerts[0]["startsAt"].startswith(
                    time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(T + 40 + 1)))
                p0 = stream_state(d, "pump,pump=p0,site=a")
                assert p0 is not None and p0["state"] == "ok" and p0["alerts_total"] == 0
                # the HTTP API shows the same
                api = await asyncio.to_thread(http_json, f"{d.listen_url.rstrip('/')}/api/v1/streams")
                assert {s["stream"] for s in api["data"]} == {"pump,pump=p0,site=a", "pump,pump=p1,site=a"}
        finally:
            await rx.stop()

    asyncio.run(asyncio.wait_for(main(), 120))


def test_subscription_push_alert_and_write_back(influx: InfluxServer, tmp_path: Path) -> None:
    """subscription: influxd pushes writes to Sentinel's /write; scores are written back beside the data."""
    db = "e2e_sub"
    T = new_db(influx, db)
    influx.write(db, pump_lines(range(HISTORY), t0=T - HISTORY + 1))
    clock = Clock(T + 0.5)

    async def main() -> None:
        rx = await WebhookReceiver().start()
        try:
            src = influx_source(influx, db, mode="subscription", poll_interval=0.2,
                                subscription_name="e2e", remove_subscription_on_shutdown=True,
                                write_back={"enabled": True, "flush_interval": 0.05})
            cfg = small_config(tmp_path, [src], webhook_url=rx.url)
            async with running(cfg, clock=clock) as d:
                await eventually(lambda: len(d.streams()) == STREAMS and all(s["state"] == "ok" for s in d.streams()),
                                 "streams trained from history")
                subs = [v for r in influx.query("SHOW SUBSCRIPTIONS") for s in r.get("series") or []
                        if s["name"] == db for v in s.get("values") or []]
                assert [s[1] for s in subs] == ["e2e"] and subs[0][3] == [d.listen_url]
                spike_k = HISTORY + 30
                # one write per tick, as a live fleet would: each reaches Sentinel by push
                for k in range(HISTORY, HISTORY + 36):
                    await asyncio.to_thread(influx.write, db, pump_lines(range(k, k + 1), t0=T - HISTORY + 1,
                                                                         spike_at={0: spike_k}))
                await eventually(lambda: ingested(d, "influx") == STREAMS * 36, "pushed samples scored")
                await eventually(lambda: firing_alerts(rx.bodies()), "the spike's alert at the webhook")
                assert {a["labels"]["pump"] for a in firing_alerts(rx.bodies())} == {"p0"}
                # write-back: one sentinel_score point per scored sample, beside the raw data
                await eventually(lambda: influx.count(db, "sentinel_score", "score") == STREAMS * 36,
                                 "write-back rows")
            res = influx.query('SELECT score, threshold, alert_state, ready FROM sentinel_score '
                               'WHERE pump = \'p0\' GROUP BY *', db)
            (series,) = res[0]["series"]
            assert series["tags"] == {"pump": "p0", "site": "a", "source_measurement": "pump"}
            rows = {r[0] // NS: r[1:] for r in series["values"]}
            assert sorted(rows) == [T - HISTORY + 1 + k for k in range(HISTORY, HISTORY + 36)]
            spike = rows[T + 1 + 30]
            assert spike[0] >= 0.5 and spike[2] == 2 and spike[3] is True
            assert all(0.0 <= r[0] <= 1.0 for r in rows.values())
            assert max(r[0] for t, r in rows.items() if t < T + 31) < 0.5
            # no feedback: the written-back scores did not become streams of their own
            assert {s["stream"] for s in d.streams()} == {"pump,pump=p0,site=a", "pump,pump=p1,site=a"}
            # removed on clean shutdown as configured
            assert not [s for r in influx.query("SHOW SUBSCRIPTIONS") for s in r.get("series") or []
                        if s["name"] == db and s.get("values")]
        finally:
            await rx.stop()

    asyncio.run(asyncio.wait_for(main(), 120))


def test_simulate_cli_writes_the_fleet_then_the_daemon_warms_up_on_it(influx: InfluxServer, tmp_path: Path) -> None:
    """``sentinel simulate`` writes exactly what ``--stdout`` prints; a daemon then trains on it from history."""
    db = "e2e_simulate"
    end = float(int(time.time()) - 60)
    cfg_path = tmp_path / "sim.yaml"
    cfg_path.write_text(f"""
sources:
  - type: simulator
    name: fleet
    streams: 3
    interval: 10s
    fields: [temp, vibration]
    anomaly_rate: 0
    seed: 7
  - type: influxdb
    name: influx
    url: {influx.url}
    database: {db}
    mode: poll_influxql
""")
    runner = CliRunner()
    args = ["simulate", "--config", str(cfg_path), "--duration", "30m", "--end", str(end)]
    printed = runner.invoke(cli, [*args, "--stdout"])
    assert printed.exit_code == 0, printed.output
    lines = [ln for ln in printed.stdout.splitlines() if ln and not ln.startswith("simulate:")]
    assert len(lines) == 3 * 180
    influx.query(f'CREATE DATABASE "{db}"')
    wrote = runner.invoke(cli, args)
    assert wrote.exit_code == 0, wrote.output

    res = influx.query("SELECT temp, vibration FROM sensor GROUP BY *", db)
    series = res[0]["series"]
    assert len(series) == 3
    in_db = sorted((tuple(sorted(s["tags"].items())), r[0]) for s in series for r in s["values"])
    assert len(in_db) == len(lines) == len(set(in_db))
    expected_ts = sorted(int(ln.rsplit(" ", 1)[1]) for ln in lines)
    assert sorted(t for _, t in in_db) == expected_ts
    assert max(expected_ts) <= end * NS

    async def main() -> None:
        src = influx_source(influx, db, mode="poll_influxql")
        cfg = small_config(tmp_path, [src])
        async with running(cfg, clock=Clock(end + 0.5)) as d:
            await eventually(lambda: len(d.streams()) == 3 and all(s["state"] == "ok" for s in d.streams()),
                             "simulated streams trained from history")
            assert {tuple(s["fields"]) for s in d.streams()} == {("temp", "vibration")}

    asyncio.run(asyncio.wait_for(main(), 120))
