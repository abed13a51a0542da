"""A real Prometheus scrapes a running Sentinel (in-process daemon, simulated fleet) and PromQL sees
its per-stream scores, its stream counts and its model version."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.daemon_helpers import running_daemon, wait_for, write_config
from tests.servers.prometheus import prometheus_server

pytestmark = pytest.mark.prometheus

STREAMS = 6


@pytest.mark.timeout(180)
def test_prometheus_scrapes_per_stream_scores_streams_and_model_version(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, source="simulator", streams=STREAMS)
    with running_daemon(cfg) as d:
        d.wait_trained(timeout=90)
        wait_for(lambda: d.metric("sentinel_streams", {"state": "warming"}) == 0, 10, "the streams gauge")
        version = d.daemon.engine.model_version
        assert version >= 1
        target = d.url.removeprefix("http://")
        with prometheus_server([target], scrape_interval="1s") as prom:
            wait_for(prom.targets_up, 30, "the first scrape of sentinel", interval=0.25)

            def have(expr: str, n: int) -> bool:
                return len(prom.query(expr)) == n

            wait_for(lambda: have('sentinel_anomaly_score{sensor="s-0003"}', 1), 30, "one stream's score")
            (one,) = prom.query('sentinel_anomaly_score{sensor="s-0003"}')
            assert one["metric"]["measurement"] == "sensor" and one["metric"]["site"] == "site-3"
            assert one["metric"]["job"] == "sentinel" and 0.0 <= float(one["value"][1]) <= 1.0

            scores = prom.query("sentinel_anomaly_score")
            assert sorted(s["metric"]["sensor"] for s in scores) == [f"s-{i:04d}" for i in range(STREAMS)]
            assert all(0.0 <= float(s["value"][1]) <= 1.0 for s in scores)
            for name in ("sentinel_threshold", "sentinel_reconstruction_error", "sentinel_alert_state"):
                assert len(prom.query(name)) == STREAMS, name

            (ready,) = prom.query('sentinel_streams{state="ready"}')
            (warming,) = prom.query('sentinel_streams{state="warming"}')
            assert float(ready["value"][1]) == STREAMS and float(warming["value"][1]) == 0
            (total,) = prom.query('sum(sentinel_streams{state=~"ok|pending|firing"})')
            assert float(total["value"][1]) == STREAMS

            (mv,) = prom.query("sentinel_model_version")
            assert float(mv["value"][1]) == version

            wait_for(lambda: bool(prom.query('rate(sentinel_samples_ingested_total{source="sim"}[5s]) > 0')), 30,
                     "a positive ingest rate")
