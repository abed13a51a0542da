"""The daemon's alerts in a real Alertmanager: posted to ``/api/v2/alerts``, shown by its API, resolved.

A crafted spike on one trained stream fires; Alertmanager lists the alert as
active with Sentinel's labels and annotations. Normal data after it resolves the
alert: Alertmanager drops it from its active list and sends its own "resolved"
notification to a webhook receiver (so the resolve matched the same alert).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.daemon_helpers import MIN_HISTORY, RunningDaemon, keys, wait_for, write_config
from tests.servers._proc import free_port
from tests.servers.alertmanager import WebhookReceiver, running_alertmanager

pytestmark = pytest.mark.alertmanager


def mine(am, machine: str) -> list[dict]:
    return [a for a in am.alerts() if a["labels"].get("machine") == machine]


def test_daemon_alert_fires_and_resolves_in_real_alertmanager(tmp_path: Path) -> None:
    hook_port = free_port()
    ks = keys(4)
    t0 = time.time() - 200
    spike_tick = MIN_HISTORY + 5
    with running_alertmanager(webhook_url=f"http://127.0.0.1:{hook_port}/hook") as am:
        cfg = write_config(tmp_path, extra={"sinks": {"alertmanagers": [{"name": "am", "url": am.url,
                                                                          "resend_interval": "2s"}]}})
        d = RunningDaemon(cfg)
        rx = d.call(WebhookReceiver(port=hook_port).start())  # what Alertmanager itself notifies
        try:
            d.start()
            d.feed(ks, 0, MIN_HISTORY, t0)
            d.wait_trained()
            d.feed(ks, MIN_HISTORY, spike_tick + 1, t0, {spike_tick: {ks[1]: 40.0}})
            wait_for(lambda: [a["status"]["state"] for a in mine(am, "m01")] == ["active"], 30,
                     "the alert active in Alertmanager")
            (a,) = mine(am, "m01")
            assert {k: a["labels"][k] for k in ("alertname", "measurement", "machine", "site")} == {
                "alertname": "SentinelAnomaly", "measurement": "machine", "machine": "m01", "site": "s1"}
            assert "severity" in a["labels"]
            assert float(a["annotations"]["score"]) >= 0.9 and a["annotations"]["summary"]
            assert a["generatorURL"].startswith(d.url + "/?stream=")
            assert [x["labels"]["machine"] for x in am.alerts()] == ["m01"]  # no other stream alerted
            wait_for(lambda: any(b["status"] == "firing" for b in rx.bodies()), 30, "Alertmanager's notification")

            d.feed(ks, spike_tick + 1, spike_tick + 30, t0)
            assert d.metric("sentinel_alert_transitions_total", {"status": "resolved"}) == 1
            wait_for(lambda: mine(am, "m01") == [], 30, "the alert to resolve in Alertmanager")
            wait_for(lambda: any(b["status"] == "resolved" and b["alerts"][0]["labels"]["machine"] == "m01"
                                 for b in rx.bodies()), 30, "Alertmanager's resolved notification")
            wait_for(lambda: d.daemon.notifier.pending("am") == 0, 10, "the outbox to drain")
            # the persisted firing set is empty: re-sends would not bring the alert back
            assert d.daemon.notifier.outbox.firing("am") == []
            assert (d.metric("sentinel_notifications_total", {"sink": "am", "result": "success"}) or 0) >= 2
        finally:
            d.call(rx.stop())
            d.stop()
