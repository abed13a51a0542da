"""End to end through the daemon against a real PostgreSQL 15.

* In process (:class:`~sentinel.runtime.daemon.Daemon`, inline training): streams are
  trained from the table's history right after start; live rows reach the daemon by
  ``LISTEN/NOTIFY`` alone (the poll interval is an hour); a spike fires an alert at a
  webhook receiver; scores and alert transitions are written back to their tables.
* As a process (``sentinel run``): SIGTERM drains and checkpoints; rows inserted while it
  is down and after it restarts are all scored exactly once. The write-back table holds
  one row per source row, and the samples ingested by both runs add up to the rows.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
import yaml

from tests.integration.e2e_helpers import (
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
from tests.servers import postgres as pg_fixtures
from tests.servers._proc import free_port, wait_until
from tests.servers.alertmanager import WebhookReceiver

postgres_server = pg_fixtures.postgres_server
pg_dsn = pg_fixtures.pg_dsn

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(240)]

HISTORY = 120
PUMPS = ("p0", "p1")


def setup_table(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE TABLE pumps (time timestamptz NOT NULL, site text, pump text, temp double precision)")


def insert_ticks(dsn: str, t0: int, ks: range, spike: tuple[str, int] | None = None, per_tick: bool = False) -> None:
    """Rows of samples ``ks`` (at ``t0 + k`` s) for every pump; one INSERT per tick when ``per_tick``."""
    rows = [(datetime.fromtimestamp(t0 + k, UTC), "a", p, SPIKE if spike == (p, k) else value(k, i))
            for k in ks for i, p in enumerate(PUMPS)]
    q = "INSERT INTO pumps (time, site, pump, temp) VALUES (%s, %s, %s, %s)"
    with psycopg.connect(dsn, autocommit=True) as c, c.cursor() as cur:
        if per_tick:
            for j in range(0, len(rows), len(PUMPS)):
                cur.executemany(q, rows[j:j + len(PUMPS)])
        else:
            cur.executemany(q, rows)


def pg_source(dsn: str, **kw) -> dict:
    return {"type": "postgres", "name": "pg", "dsn": dsn, "table": "pumps", "key_columns": ["site", "pump"],
            "value_columns": ["temp"], "poll_interval": 3600, "connect_timeout": 5, "backoff_initial": 0.05,
            "backoff_max": 0.5, "notify": {"enabled": True, "channel": "pumps_new", "install_trigger": True}, **kw}


def test_notify_wakeup_history_warmup_alert_and_write_back(pg_dsn: str, tmp_path: Path) -> None:
    setup_table(pg_dsn)
    T = int(time.time()) - 3 * HISTORY
    t0 = T - HISTORY + 1
    insert_ticks(pg_dsn, t0, range(HISTORY))
    clock = Clock(T + 0.5)
    live = range(HISTORY, HISTORY + 36)
    spike_k = HISTORY + 30

    async def main() -> None:
        rx = await WebhookReceiver().start()
        try:
            src = pg_source(pg_dsn, write_back={"enabled": True, "flush_interval": 0.05})
            cfg = small_config(tmp_path, [src], webhook_url=rx.url)
            async with running(cfg, clock=clock) as d:
                await eventually(lambda: len(d.streams()) == 2 and all(s["state"] == "ok" for s in d.streams()),
                                 "streams trained from the table's history")
                assert ingested(d, "pg") == 0  # trained before any live row
                await eventually(lambda: d.sources[0].connected, "source connected")
                polls = d.sources[0].plugin.polls
                # poll_interval is an hour: only NOTIFY can make the source read these rows
                await asyncio.to_thread(insert_ticks, pg_dsn, t0, live, ("p1", spike_k), True)
                await eventually(lambda: ingested(d, "pg") == 2 * len(live), "live rows scored")
                assert d.sources[0].plugin.notifications >= 1 and d.sources[0].plugin.polls > polls
                await eventually(lambda: firing_alerts(rx.bodies()), "the spike's alert at the webhook")
                assert {a["labels"]["pump"] for a in firing_alerts(rx.bodies())} == {"p1"}
                p0 = stream_state(d, "pumps,pump=p0,site=a")
                assert p0 is not None and p0["alerts_total"] == 0
            # stop() flushed the write-back
            with psycopg.connect(pg_dsn) as c:
                rows = c.execute("SELECT stream, extract(epoch FROM time)::bigint, score, alert_state, ready "
                                 "FROM sentinel_scores ORDER BY stream, time").fetchall()
                trans = c.execute("SELECT stream, to_state FROM sentinel_alert_transitions "
                                  "ORDER BY time").fetchall()
            assert len(rows) == 2 * len(live)
            by = {(r[0], r[1]): r[2:] for r in rows}
            assert len(by) == len(rows)  # nothing scored twice
            assert {t for _, t in by} == {t0 + k for k in live}
            spike = by[("pumps,pump=p1,site=a", t0 + spike_k)]
            assert spike[0] >= 0.5 and spike[1] == 2 and spike[2] is True
            assert all(0.0 <= r[2] <= 1.0 for r in rows)
            assert ("pumps,pump=p1,site=a", 2) in trans  # to firing
            assert not any(s == "pumps,pump=p0,site=a" for s, _ in trans)
        finally:
            await rx.stop()

    asyncio.run(asyncio.wait_for(main(), 180))


# ----------------------------------------------------------------------------- SIGTERM and restart


class SentinelProcess:
    """``sentinel run`` as a child process on a free loopback port."""

    def __init__(self, config: Path, port: int, log: Path):
        self.config, self.port, self.log = config, port, log
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "sentinel.cli", "run", "--config", str(self.config)],
                                         stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            wait_until(self._ready, timeout=90, interval=0.1, what="sentinel /-/ready")
        except TimeoutError:
            self.terminate()
            raise AssertionError(f"sentinel did not become ready:\n{self.log.read_text()[-3000:]}") from None

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"sentinel exited ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}")
        with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
            return r.status == 200

    def metric(self, name: str, labels: str = "") -> float:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as r:
            text = r.read().decode()
        m = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
        return float(m.group(1)) if m else 0.0

    def streams(self) -> list[dict]:
        return http_json(f"{self.url}/api/v1/streams")["data"]

    def terminate(self) -> int:
        """SIGTERM; returns the exit code (bounded wait, then kill)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            return -9


def test_sigterm_and_restart_resume_from_the_checkpointed_cursor(pg_dsn: str, tmp_path: Path) -> None:
    setup_table(pg_dsn)
    T = int(time.time()) - 3 * HISTORY
    t0 = T - HISTORY + 1
    insert_ticks(pg_dsn, t0, range(HISTORY))  # history: read at the first start only
    port = free_port()
    cfg = small_config(tmp_path, [pg_source(pg_dsn, write_back={"enabled": True, "flush_interval": 0.05})],
                       server={"listen": f"127.0.0.1:{port}"}, logging={"level": "info", "format": "text"},
                       train={"threads": 1})
    cfg_path = tmp_path / "sentinel.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg.model_dump(mode="json", by_alias=True)))
    ing = 'sentinel_samples_ingested_total'
    lbl = '{source="pg"}'
    proc = SentinelProcess(cfg_path, port, tmp_path / "sentinel.log")
    total_ingested = 0.0
    try:
        # run 1: warm up from history, score 30 ticks, SIGTERM
        proc.start()
        wait_until(lambda: len(proc.streams()) == 2 and all(s["state"] == "ok" for s in proc.streams()),
                   timeout=90, what="streams trained from history")
        insert_ticks(pg_dsn, t0, range(HISTORY, HISTORY + 30), per_tick=True)
        wait_until(lambda: proc.metric(ing, lbl) == 60, timeout=30, what="run 1 scored 60 samples")
        total_ingested += proc.metric(ing, lbl)
        assert proc.terminate() == 0
        assert "checkpoint written" in proc.log.read_text()

        # down: 20 ticks arrive
        insert_ticks(pg_dsn, t0, range(HISTORY + 30, HISTORY + 50))

        # run 2: resumes from the checkpoint (models too), catches up, follows NOTIFY
        proc.start()
        first = proc.streams()
        assert {s["state"] for s in first} <= {"ok", "pending", "firing"} and len(first) == 2
        wait_until(lambda: proc.metric(ing, lbl) == 40, timeout=30, what="run 2 caught up 40 samples")
        insert_ticks(pg_dsn, t0, range(HISTORY + 50, HISTORY + 60), per_tick=True)
        wait_until(lambda: proc.metric(ing, lbl) == 60, timeout=30, what="run 2 followed 20 more samples")
        time.sleep(0.3)
        total_ingested += proc.metric(ing, lbl)
        assert proc.terminate() == 0
    finally:
        if proc.proc is not None and proc.proc.poll() is None:
            proc.terminate()
    log_text = proc.log.read_text()
    assert "resumed from checkpoint" in log_text
    assert total_ingested == 2 * 60
    with psycopg.connect(pg_dsn) as c:
        rows = c.execute("SELECT stream, extract(epoch FROM time)::bigint FROM sentinel_scores").fetchall()
    assert len(rows) == 2 * 60 == len(set(rows))  # nothing scored twice
    assert {t for _, t in rows} == {t0 + k for k in range(HISTORY, HISTORY + 60)}  # nothing skipped
