"""The daemon end to end: the expected band on its API and metrics, feedback over HTTP schedules the
stream's retrain, and the feedback survives a restart (it is in the checkpoint)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.daemon_helpers import MIN_HISTORY, RunningDaemon, http, keys, streams_api, write_config
from tests.servers._proc import wait_until

pytestmark = pytest.mark.timeout(300)

T0 = 1_900_000_000.0


def test_band_on_the_api_and_feedback_retrains_and_persists(tmp_path: Path) -> None:
    ks = keys(2)
    cfg = write_config(tmp_path)
    d = RunningDaemon(cfg).start()
    try:
        d.feed(ks, 0, MIN_HISTORY, T0)
        d.wait_trained()
        spike_at = MIN_HISTORY + 5
        d.feed(ks, MIN_HISTORY, MIN_HISTORY + 20, T0, {spike_at: {ks[0]: 25.0}})
        rows = {r["stream"]: r for r in streams_api(d.url)}
        row = rows[str(ks[0])]
        assert len(row["expected"]) == len(row["fields"]) == 2
        assert all(lo <= x <= hi for x, lo, hi in zip(row["expected"], row["lower"], row["upper"], strict=True))
        status, body = d.get("/metrics")
        fams = {f.name: f for f in text_string_to_metric_families(body.decode())}
        vals = [s for s in fams["sentinel_expected_value"].samples if s.labels.get("machine") == ks[0].label_dict()["machine"]]
        assert sorted(s.labels["field"] for s in vals) == ["temp", "vibration"] and all(
            math.isfinite(s.value) for s in vals)
        hist = json.loads(d.get("/api/v1/streams/" + str(ks[0]).replace(",", "%2C") + "/history")[1])["data"]
        assert len(hist["lower"]) == len(hist["ts"]) and math.isfinite(hist["upper"][-1][0])

        version = d.daemon.engine.stream_view(ks[0]).model_version  # type: ignore[union-attr]
        body = json.dumps({"stream": str(ks[0]), "from": T0 + spike_at - 1, "to": T0 + spike_at + 10,
                           "label": "normal", "comment": "a test rig"}).encode()
        status, ans = http(d.url + "/api/v1/feedback", method="POST", body=body)
        assert status == 200, ans
        data = json.loads(ans)["data"]
        assert data["retrain"] and data["samples"] == 12
        wait_until(lambda: d.daemon.engine.stream_view(ks[0]).model_version > version, timeout=120,  # type: ignore[union-attr]
                   interval=0.1, what="the retrain the feedback scheduled")
        assert d.metric("sentinel_feedback_total", {"label": "normal"}) == 1
    finally:
        d.stop()

    d2 = RunningDaemon(cfg).start()
    try:
        assert d2.daemon.checkpoint_loaded
        listed = json.loads(d2.get("/api/v1/feedback")[1])["data"]
        assert [(f["stream"], f["label"], f["comment"]) for f in listed] == [(str(ks[0]), "normal", "a test rig")]
    finally:
        d2.stop()
