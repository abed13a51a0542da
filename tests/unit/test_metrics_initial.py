"""Every labelled series whose label values are known at start is exported as 0 before any event.

Prometheus' instrumentation guidance: initialise the known label values, so the first scrape
lists every name and ``rate()`` and dashboards work before the first sample, alert or failure.
Here on a fresh :class:`CollectorRegistry`: :class:`Metrics` itself, then each component that
knows a label value (daemon: reasons; source; sink; queues) as it is constructed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sentinel.alerts.notifier import Notifier
from sentinel.alerts.outbox import Outbox
from sentinel.config import load_config_text
from sentinel.config.sinks import SinksConfig
from sentinel.lineprotocol import REASONS as LP_REASONS
from sentinel.metrics import Metrics
from sentinel.runtime.daemon import Daemon
from sentinel.runtime.engine import REJECT_REASONS
from sentinel.sources.running import RunningSource
from sentinel.sources.selector import BOUND_REASONS
from sentinel.writeback.running import RunningSink

STATIC = {  # what Metrics() alone exports: unlabelled families and the label sets fixed in the code
    ("sentinel_retrain_total", (("result", "success"),)): 0.0,
    ("sentinel_retrain_total", (("result", "rejected"),)): 0.0,
    ("sentinel_retrain_total", (("result", "failure"),)): 0.0,
    ("sentinel_alert_transitions_total", (("status", "firing"),)): 0.0,
    ("sentinel_alert_transitions_total", (("status", "resolved"),)): 0.0,
    **{("sentinel_streams", (("state", s),)): 0.0 for s in ("warming", "ready", "ok", "pending", "firing")},
    ("sentinel_streams_refused_total", ()): 0.0,
    ("sentinel_feedback_total", (("label", "normal"),)): 0.0,
    ("sentinel_feedback_total", (("label", "anomaly"),)): 0.0,
    ("sentinel_model_version", ()): 0.0,
    ("sentinel_wal_bytes", ()): 0.0,
    ("sentinel_checkpoint_last_success_timestamp_seconds", ()): 0.0,
    ("sentinel_config_last_reload_successful", ()): 1.0,
    ("sentinel_score_batch_seconds_count", ()): 0.0,
    ("sentinel_retrain_duration_seconds_count", ()): 0.0,
}


def series(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every exported sample (histogram buckets and sums and ``_created`` left out) by name and labels."""
    out = {}
    for fam in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in fam.samples:
            if s.name.endswith(("_bucket", "_sum", "_created")):
                continue
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_a_fresh_metrics_exports_its_fixed_label_values_as_zero() -> None:
    assert series(Metrics(CollectorRegistry()).registry) == STATIC


def test_known_label_values_added_are_exported_as_zero_before_any_event() -> None:
    m = Metrics(CollectorRegistry())
    m.add_reasons(("out_of_order", "duplicate"), ("lp_bad_tag",))
    m.add_source("sim")
    m.add_sink("hook", pending=3)
    m.add_queue("ingest")
    added = {
        ("sentinel_samples_rejected_total", (("reason", "out_of_order"),)): 0.0,
        ("sentinel_samples_rejected_total", (("reason", "duplicate"),)): 0.0,
        ("sentinel_samples_rejected_total", (("reason", "lp_bad_tag"),)): 0.0,
        ("sentinel_samples_ingested_total", (("source", "sim"),)): 0.0,
        ("sentinel_ingest_lag_seconds", (("source", "sim"),)): 0.0,
        ("sentinel_source_up", (("source", "sim"),)): 0.0,
        ("sentinel_source_errors_total", (("kind", "unavailable"), ("source", "sim"))): 0.0,
        ("sentinel_source_errors_total", (("kind", "error"), ("source", "sim"))): 0.0,
        ("sentinel_notifications_total", (("result", "success"), ("sink", "hook"))): 0.0,
        ("sentinel_notifications_total", (("result", "failure"), ("sink", "hook"))): 0.0,
        ("sentinel_notifications_total", (("result", "dropped"), ("sink", "hook"))): 0.0,
        ("sentinel_outbox_pending", (("sink", "hook"),)): 3.0,  # what the outbox already holds
        ("sentinel_outbox_dropped_total", (("sink", "hook"),)): 0.0,
        ("sentinel_queue_depth", (("queue", "ingest"),)): 0.0,
        ("sentinel_queue_dropped_total", (("queue", "ingest"),)): 0.0,
    }
    assert series(m.registry) == {**STATIC, **added}


class IdlePlugin:
    name, connected = "sim", False

    async def run(self, emit: Any) -> None:  # never run here
        raise AssertionError("not started")


class NullSink(RunningSink):
    queue = "writeback_null"


def test_components_register_their_label_values_when_constructed(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    daemon = Daemon(load_config_text(f"state: {{dir: {tmp_path / 'state'}}}"), registry=registry,
                    inline_training=True)  # reasons, retrain results, stream states, the ingest queue
    m = daemon.metrics
    RunningSource(IdlePlugin(), m)
    NullSink(m, batch_size=10, flush_interval=1.0, max_buffer=100, stop_timeout=1.0)
    ob = Outbox(tmp_path / "outbox")
    ob.put([("hook", "{}"), ("hook", "{}")])  # left by a previous run: pending from the first scrape
    ob.close()
    cfg = SinksConfig.model_validate({
        "webhooks": [{"name": "hook", "url": "http://127.0.0.1:1/hook"}],
        "alertmanagers": [{"name": "am", "url": "http://127.0.0.1:2"}],
        "outbox": {"path": str(tmp_path / "outbox")}, "log_alerts": False,
    })

    async def build() -> None:
        n = Notifier(cfg, m, "http://x/")
        await n.stop()

    asyncio.run(build())

    got = series(registry)
    for reason in {*REJECT_REASONS, *LP_REASONS, *BOUND_REASONS}:  # the engine, line protocol, input bounds
        assert got.pop(("sentinel_samples_rejected_total", (("reason", reason),))) == 0
    for name in ("sentinel_samples_ingested_total", "sentinel_ingest_lag_seconds", "sentinel_source_up"):
        assert got.pop((name, (("source", "sim"),))) == 0
    for kind in ("unavailable", "error"):
        assert got.pop(("sentinel_source_errors_total", (("kind", kind), ("source", "sim")))) == 0
    for queue in ("ingest", "writeback_null"):
        assert got.pop(("sentinel_queue_depth", (("queue", queue),))) == 0
        assert got.pop(("sentinel_queue_dropped_total", (("queue", queue),))) == 0
    for sink, pending in (("hook", 2), ("am", 0)):
        for result in ("success", "failure", "dropped"):
            assert got.pop(("sentinel_notifications_total", (("result", result), ("sink", sink)))) == 0
        assert got.pop(("sentinel_outbox_pending", (("sink", sink),))) == pending
        assert got.pop(("sentinel_outbox_dropped_total", (("sink", sink),))) == 0
    assert got == STATIC  # nothing else, and no stream yet (the per-stream families are empty)
