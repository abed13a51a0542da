"""The daemon's alerts reach a real webhook receiver (aiohttp on 127.0.0.1) as signed v4 payloads.

A crafted spike on one trained stream fires; normal data after it resolves. The
receiver runs on the daemon's own event loop (see :class:`RunningDaemon`).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from tests.daemon_helpers import FIELDS, MIN_HISTORY, RunningDaemon, keys, wait_for, write_config
from tests.servers._proc import free_port
from tests.servers.alertmanager import WebhookReceiver

SECRET = "hook-s3cret"
V4_KEYS = {"version", "groupKey", "truncatedAlerts", "status", "receiver", "groupLabels", "commonLabels",
           "commonAnnotations", "externalURL", "alerts"}
ALERT_KEYS = {"status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"}


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def test_daemon_posts_signed_v4_payloads_that_fire_and_resolve(tmp_path: Path) -> None:
    port = free_port()
    cfg = write_config(tmp_path, extra={
        "sinks": {"webhooks": [{"name": "ops", "url": f"http://127.0.0.1:{port}/hook", "hmac_secret": SECRET,
                                "group_by": ["alertname", "site"]}]},
    })
    ks = keys(4)
    t0 = time.time() - 200  # alert times near now, as a live source would give
    spike_tick = MIN_HISTORY + 5
    d = RunningDaemon(cfg)
    rx = d.call(WebhookReceiver(port=port).start())
    try:
        d.start()
        d.feed(ks, 0, MIN_HISTORY, t0)
        d.wait_trained()
        d.feed(ks, MIN_HISTORY, spike_tick + 1, t0, {spike_tick: {ks[2]: 40.0}})
        wait_for(lambda: len(rx.received) >= 1, 20, "the firing post")
        d.feed(ks, spike_tick + 1, spike_tick + 30, t0)
        wait_for(lambda: any(b["status"] == "resolved" for b in rx.bodies()), 20, "the resolved post")
        wait_for(lambda: d.daemon.notifier.pending("ops") == 0, 10, "the outbox to drain")
        external = d.url + "/"
        assert d.metric("sentinel_notifications_total", {"sink": "ops", "result": "success"}) == len(rx.received)
    finally:
        d.call(rx.stop())
        d.stop()

    assert len(rx.received) == 2
    for headers, body in rx.received:
        assert headers["X-Sentinel-Signature"] == "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert headers["Content-Type"].startswith("application/json")
    fire, resolve = rx.bodies()
    # a score >= max(0.9, alerts.enter) opens a critical alert; the resolve keeps its labels (same identity)
    labels = {"alertname": "SentinelAnomaly", "measurement": "machine", "machine": "m02", "site": "s0",
              "severity": "critical"}
    for body, status in ((fire, "firing"), (resolve, "resolved")):
        assert set(body) == V4_KEYS and body["version"] == "4"
        assert body["status"] == status and body["receiver"] == "ops" and body["externalURL"] == external
        assert body["groupLabels"] == {"alertname": "SentinelAnomaly", "site": "s0"}
        assert body["commonLabels"] == labels
        (a,) = body["alerts"]
        assert set(a) == ALERT_KEYS and a["status"] == status and a["labels"] == labels
        assert a["startsAt"].startswith(iso(t0 + spike_tick))
        q = parse_qs(urlparse(a["generatorURL"]).query)
        assert a["generatorURL"].startswith(external) and q["stream"] == ["machine,machine=m02,site=s0"]
        assert {"summary", "score", "threshold", "top_fields"} <= set(a["annotations"])
    assert fire["alerts"][0]["endsAt"] == "0001-01-01T00:00:00Z"
    assert fire["alerts"][0]["annotations"]["top_fields"].split("=")[0] == FIELDS[0]  # the spiked field drove it
    assert float(fire["alerts"][0]["annotations"]["score"]) >= 0.9
    assert fire["alerts"][0]["fingerprint"] == resolve["alerts"][0]["fingerprint"]
    ends = datetime.fromisoformat(resolve["alerts"][0]["endsAt"].replace("Z", "+00:00")).timestamp()
    assert t0 + spike_tick < ends <= t0 + spike_tick + 30
