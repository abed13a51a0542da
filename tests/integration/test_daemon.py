"""The daemon end to end, in process and as ``sentinel run``.

* A simulated fleet: warm-up from history, training, scoring; the HTTP API and
  every metric named in DESIGN §7.
* Bad samples are rejected and counted by reason and change no stream's state.
* ``--shard I/N`` scores only the streams rendezvous-hashed to shard I.
* ``make run`` smoke: the shipped ``config/demo.yaml`` (a temp copy with fewer
  streams, a faster simulated clock, a temp state dir and a free port) becomes
  ready, trains, raises an alert and exits 0 on SIGTERM, all bounded.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from sentinel.runtime.shard import owner
from sentinel.state import checkpoint as ckpt
from sentinel.types import Sample, SourceBatch, StreamKey
from tests.daemon_helpers import (
    FIELDS,
    MIN_HISTORY,
    ROOT,
    SOURCE,
    RunningDaemon,
    SentinelProcess,
    http,
    keys,
    running_daemon,
    streams_api,
    tick_batch,
    value,
    wait_for,
    write_config,
)
from tests.servers._proc import free_port

T0 = 1_900_000_000.0

CONTRACT = {  # DESIGN §7: metric family -> label names its samples carry (besides the stream labels)
    "sentinel_anomaly_score": {"measurement", "site", "sensor"},
    "sentinel_reconstruction_error": {"measurement", "site", "sensor"},
    "sentinel_threshold": {"measurement", "site", "sensor"},
    "sentinel_alert_state": {"measurement", "site", "sensor"},
    "sentinel_alerts": {"measurement", "site", "sensor"},
    "sentinel_samples_ingested": {"source"},
    "sentinel_samples_rejected": {"reason"},
    "sentinel_streams": {"state"},
    "sentinel_score_batch_seconds": {"le"},
    "sentinel_ingest_lag_seconds": {"source"},
    "sentinel_model_version": set(),
    "sentinel_retrain": {"result"},
    "sentinel_retrain_duration_seconds": {"le"},
    "sentinel_checkpoint_last_success_timestamp_seconds": set(),
    "sentinel_notifications": {"sink", "result"},
    "sentinel_outbox_pending": {"sink"},
    "sentinel_config_last_reload_successful": set(),
}


def families(base: str) -> dict[str, list]:
    status, body = http(base + "/metrics")
    assert status == 200
    return {f.name: f.samples for f in text_string_to_metric_families(body.decode())}


def test_simulated_fleet_trains_scores_and_serves_api_and_metrics(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/hook"  # a sink, so its metrics have children; nothing fires here
    cfg = write_config(tmp_path, source="simulator", streams=6, extra={"sinks": {"webhooks": [{"url": dead}]}})
    with running_daemon(cfg) as d:
        assert http(d.url + "/-/healthy")[0] == 200
        assert http(d.url + "/-/ready")[0] == 200
        d.wait_trained(timeout=90)
        wait_for(lambda: (d.metric("sentinel_samples_ingested_total", {"source": "sim"}) or 0) > 0, 30,
                 "live samples scored")
        data = streams_api(d.url)
        assert len(data) == 6 and {s["labels"]["sensor"] for s in data} == {f"s-{i:04d}" for i in range(6)}
        for s in data:
            assert s["state"] in ("ok", "pending", "firing") and 0.0 <= s["score"] <= 1.0
            assert s["model_version"] >= 1 and s["fields"] == list(FIELDS) and math.isfinite(s["threshold"])
        assert json.loads(http(d.url + "/api/v1/streams?state=warming")[1])["data"] == []
        status, page = http(d.url + "/")
        assert status == 200 and b"<html" in page.lower()

        path = d.call(d.daemon.checkpoint())
        assert ckpt.load(path).meta["cursors"]["sim"]["t"] > 0
        fams = families(d.url)
        missing = sorted(set(CONTRACT) - set(fams))
        assert missing == [], f"metrics missing from /metrics: {missing}"
        for name, labels in CONTRACT.items():
            assert fams[name], f"{name} has no samples"
            assert labels <= set(fams[name][0].labels), (name, fams[name][0].labels)
        assert {s.labels["reason"] for s in fams["sentinel_samples_rejected"]} >= {"out_of_order", "duplicate",
                                                                                    "non_finite"}
        scores = fams["sentinel_anomaly_score"]
        assert len(scores) == 6 and all(0.0 <= s.value <= 1.0 for s in scores)
        assert d.metric("sentinel_model_version") == d.daemon.engine.model_version >= 1
        wait_for(lambda: d.metric("sentinel_streams", {"state": "warming"}) == 0, 10,
                 "the streams gauge (refreshed every second) to show no stream warming")
        assert d.metric("sentinel_streams", {"state": "ready"}) == 6
        assert (d.metric("sentinel_checkpoint_last_success_timestamp_seconds") or 0) > 0
        assert d.metric("sentinel_retrain_total", {"result": "success"}) == 6


def test_bad_samples_are_counted_by_reason_and_change_nothing(tmp_path: Path) -> None:
    ks = keys(2)
    with running_daemon(write_config(tmp_path)) as d:
        d.feed(ks, 0, MIN_HISTORY, T0)
        d.wait_trained()
        g = d.daemon.engine.groups[len(FIELDS)]
        slot = d.daemon.engine.index[ks[0]][1]
        before = {k: g.a[k][slot].copy() for k in ("last_ts", "hist_n", "score", "error", "threshold")}
        last = T0 + MIN_HISTORY - 1
        bad = [Sample(ks[0], last, FIELDS, (0.0, 0.0)),  # duplicate
               Sample(ks[0], last - 5, FIELDS, (0.0, 0.0)),  # out of order
               Sample(ks[0], last + 1, FIELDS, (math.inf, 0.0)),  # non-finite
               Sample(ks[0], last + 1, FIELDS, (math.nan, math.nan)),  # nothing to score
               Sample(ks[0], last + 1, ("temp", "pressure"), (1.0, 1.0))]  # fields it does not have
        d.emit(SourceBatch("crafted", bad, cursor={"i": MIN_HISTORY}))
        d.drain()
        for reason in ("duplicate", "out_of_order", "non_finite", "no_values", "bad_fields"):
            assert d.metric("sentinel_samples_rejected_total", {"reason": reason}) == 1, reason
        for k, v in before.items():
            assert g.a[k][slot] == v or (math.isnan(v) and math.isnan(g.a[k][slot])), k
        # and it keeps scoring
        d.feed(ks, MIN_HISTORY, MIN_HISTORY + 3, T0)
        assert g.a["hist_n"][slot] == before["hist_n"] + 3
        assert http(d.url + "/-/ready")[0] == 200


def test_shard_scores_only_the_streams_it_owns(tmp_path: Path) -> None:
    ks = keys(30)
    d = RunningDaemon(write_config(tmp_path), shard="1/3")
    try:
        d.start()
        d.emit(tick_batch(ks, 0, T0))
        d.drain()
        mine = {k for k in ks if owner(k, 3) == 1}
        assert 0 < len(mine) < len(ks)
        assert set(d.daemon.engine.index) == mine
        assert d.metric("sentinel_samples_ingested_total", {"source": "crafted"}) == len(mine)
    finally:
        d.stop()


def demo_copy(tmp: Path, streams: int, speed: float) -> Path:
    """``config/demo.yaml`` with fewer sensors, a faster simulated clock and paths in ``tmp``."""
    cfg = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    cfg["sources"][0]["streams"] = streams
    cfg["sources"][0]["speed"] = speed
    cfg["state"]["dir"] = str(tmp / "state")
    cfg["sinks"]["outbox"]["path"] = str(tmp / "state" / "outbox")
    out = tmp / "demo.yaml"
    out.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return out


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_make_run_demo_config_becomes_ready_trains_and_alerts(tmp_path: Path) -> None:
    """40 sensors, 10 simulated seconds per second: ~7 injected anomalies per minute of wall time."""
    p = SentinelProcess(demo_copy(tmp_path, streams=40, speed=10), tmp_path / "demo.log")
    try:
        p.wait_ready(timeout=90)

        def trained() -> bool:
            ss = streams_api(p.base)
            return len(ss) == 40 and all(s["state"] != "warming" for s in ss)

        wait_for(trained, 120, "every demo stream trained", interval=1.0)

        def fired() -> bool:
            fams = {f.name: f for f in text_string_to_metric_families(http(p.base + "/metrics")[1].decode())}
            return any(s.value > 0 for s in fams["sentinel_alert_transitions"].samples
                       if s.labels.get("status") == "firing" and s.name.endswith("_total"))

        # bounded, with room for a loaded CI machine: alone it fires within about 30 s of training
        # (the calibrated 1 Hz alert level, 0.74, lets fewer of the injected anomalies through)
        wait_for(fired, 270, "an alert to fire", interval=1.0)
        assert "alert firing" in p.log(20000)
        assert p.terminate(timeout=60) == 0, p.log()
    finally:
        p.close()
    assert ckpt.list_checkpoints(tmp_path / "state")


class _HistorySource:
    """A source that has history but pushes nothing itself (the test emits its live batches)."""

    name = SOURCE
    connected = True

    def __init__(self, t0: float):
        self.t0 = t0
        self.asked: list[tuple[list[StreamKey], float, float]] = []

    async def history(self, ks: list[StreamKey] | None, since: float, until: float) -> list[Sample]:
        self.asked.append((list(ks or []), since, until))
        return [Sample(k, self.t0 + i, FIELDS, value(k, i)) for k in ks or []
                for i in range(-MIN_HISTORY - 20, 0) if since <= self.t0 + i < until]

    async def run(self, emit: Any) -> None:
        return None

    async def stop(self) -> None:
        return None


def test_a_stream_first_seen_live_gets_its_history_and_trains_at_once(tmp_path: Path) -> None:
    t0 = float(int(time.time()) - 3600)
    src = _HistorySource(t0)
    with running_daemon(write_config(tmp_path, extra={"streams": {"history_lookback": "1h"}})) as d:
        d.daemon.sources.append(src)
        new = keys(2)
        d.feed(new, 0, 2, t0)  # two live ticks of streams the daemon has never seen
        d.wait_trained(timeout=90)
        assert [sorted(map(str, ks)) for ks, _since, until in src.asked] == [sorted(map(str, new))]
        assert src.asked[0][2] == t0  # history up to the first live sample, not past it
        assert d.counts()["ready"] == 2 and d.counts()["warming"] == 0
