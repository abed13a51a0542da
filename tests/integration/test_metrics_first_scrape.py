"""The first scrape of a just-ready ``sentinel run`` lists every DESIGN §7 metric this codebase implements.

``config/demo.yaml`` (the simulator: no database; a temp copy with a few sensors, paths in the
temp dir, a free port) plus one webhook sink on a dead loopback port, so the per-sink families
have a label value to be initialised with; nothing fires in this test. The scrape is the first
request after ``/-/ready`` answers 200. Each labelled family must carry its known label values
(sources, sinks, reject reasons, retrain results, alert statuses) with samples, not just a
``# TYPE`` line: Prometheus stores samples, and an absent series breaks ``rate()`` and panels.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from sentinel.lineprotocol import REASONS as LP_REASONS
from sentinel.runtime.engine import REJECT_REASONS
from tests.daemon_helpers import ROOT, SentinelProcess, http
from tests.servers._proc import free_port

#: DESIGN §7 names implemented here (samples as written: counters with ``_total``, histograms by family).
IMPLEMENTED = (
    # per stream, labelled by the stream's labels
    "sentinel_anomaly_score", "sentinel_reconstruction_error", "sentinel_threshold", "sentinel_alert_state",
    "sentinel_alerts_total",
    # per stream and field
    "sentinel_expected_value", "sentinel_expected_lower", "sentinel_expected_upper",
    # process
    "sentinel_samples_ingested_total", "sentinel_samples_rejected_total", "sentinel_streams",
    "sentinel_score_batch_seconds", "sentinel_ingest_lag_seconds", "sentinel_model_version",
    "sentinel_retrain_total", "sentinel_retrain_duration_seconds",
    "sentinel_checkpoint_last_success_timestamp_seconds", "sentinel_notifications_total",
    "sentinel_outbox_pending", "sentinel_config_last_reload_successful", "sentinel_wal_bytes",
    "sentinel_feedback_total",
)

#: DESIGN §7 names not implemented yet. The test fails when one appears, so whoever implements it
#: moves it to IMPLEMENTED (and initialises its known label values).
KNOWN_ABSENT = (
    "sentinel_partitions_owned", "sentinel_partition_lag_messages",  # DESIGN §10, beyond one machine
)

SOURCE, SINK = "simulator", "webhook"


def demo_with_a_sink(tmp: Path) -> Path:
    cfg = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    assert cfg["sources"][0]["name"] == SOURCE
    cfg["sources"][0]["streams"] = 4
    cfg["state"]["dir"] = str(tmp / "state")
    cfg["sinks"]["outbox"]["path"] = str(tmp / "state" / "outbox")
    cfg["sinks"]["webhooks"] = [{"name": SINK, "url": f"http://127.0.0.1:{free_port()}/hook"}]
    out = tmp / "demo.yaml"
    out.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return out


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_first_scrape_after_ready_lists_every_implemented_design_metric(tmp_path: Path) -> None:
    p = SentinelProcess(demo_with_a_sink(tmp_path), tmp_path / "sentinel.log")
    try:
        p.wait_ready(timeout=120)
        status, body = http(p.base + "/metrics")
        assert status == 200, body
        fams = list(text_string_to_metric_families(body.decode()))
        assert p.terminate(timeout=60) == 0, p.log()
    finally:
        p.close()

    declared = {f.name for f in fams} | {s.name for f in fams for s in f.samples}
    present = {f.name for f in fams if f.samples} | {s.name for f in fams for s in f.samples}
    missing = sorted(set(IMPLEMENTED) - present)
    assert missing == [], f"DESIGN §7 metrics without a sample on the first scrape: {missing}"
    appeared = sorted(n for n in KNOWN_ABSENT if n in declared or n.removesuffix("_total") in declared)
    assert appeared == [], f"now implemented, move them to IMPLEMENTED: {appeared}"

    def labels(name: str, key: str) -> dict[str, float]:
        return {s.labels[key]: s.value for f in fams for s in f.samples if s.name == name}

    assert set(labels("sentinel_samples_rejected_total", "reason")) >= set(REJECT_REASONS + LP_REASONS)
    assert set(labels("sentinel_retrain_total", "result")) == {"success", "rejected", "failure"}
    assert labels("sentinel_alert_transitions_total", "status") == {"firing": 0, "resolved": 0}
    assert set(labels("sentinel_streams", "state")) == {"warming", "ready", "ok", "pending", "firing"}
    assert set(labels("sentinel_samples_ingested_total", "source")) == {SOURCE}
    assert set(labels("sentinel_ingest_lag_seconds", "source")) == {SOURCE}
    assert labels("sentinel_outbox_pending", "sink") == {SINK: 0}
    notes = {(s.labels["sink"], s.labels["result"]): s.value for f in fams for s in f.samples
             if s.name == "sentinel_notifications_total"}
    assert notes == {(SINK, "success"): 0, (SINK, "failure"): 0, (SINK, "dropped"): 0}
    assert len(labels("sentinel_anomaly_score", "sensor")) == 4  # the streams loaded from history
    assert labels("sentinel_feedback_total", "label") == {"normal": 0, "anomaly": 0}
    assert len(labels("sentinel_expected_value", "sensor")) == 4  # one field per stream
