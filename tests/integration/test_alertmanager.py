"""The Notifier against a real Alertmanager: alerts appear, stay alive by re-sends, and resolve.

Also checks our webhook payload against the one the real Alertmanager sends to a
webhook receiver: the same keys at every level.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import datetime

import pytest

from sentinel.alerts.notifier import Notifier
from sentinel.alerts.sinks.webhook import WebhookSink
from sentinel.config.sinks import SinksConfig, WebhookConfig
from sentinel.metrics import Metrics
from sentinel.types import AlertEvent, StreamKey
from tests.servers._proc import free_port
from tests.servers.alertmanager import WebhookReceiver, running_alertmanager

pytestmark = pytest.mark.alertmanager

HOOK_PORT = free_port()


@pytest.fixture(scope="module")
def am():
    with running_alertmanager(webhook_url=f"http://127.0.0.1:{HOOK_PORT}/hook") as server:
        yield server


def event(pump: str, status: str = "firing", starts: float | None = None, site: str = "plant-7") -> AlertEvent:
    now = time.time()
    starts = now - 5 if starts is None else starts
    return AlertEvent(key=StreamKey.of("pump", site=site, pump_id=pump), status=status, starts_at=starts,
                      ends_at=None if status == "firing" else now, at=now, score=0.9973, threshold=0.99,
                      error=4.81, top_fields=(("vibration", 0.71), ("current", 0.29)))


def notifier(tmp_path, am_url: str, resend: float = 30.0, registry=None) -> Notifier:
    cfg = SinksConfig.model_validate({
        "alertmanagers": [{"name": "am", "url": am_url, "resend_interval": resend, "timeout": 5}],
        "outbox": {"path": str(tmp_path / "outbox"), "retry_initial": 0.05, "retry_max": 0.2, "flush_timeout": 2},
    })
    return Notifier(cfg, Metrics(registry), "http://127.0.0.1:9680/")


async def eventually(pred: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(pred):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def find(am, pump: str) -> list[dict]:
    return [a for a in am.alerts() if a["labels"].get("pump_id") == pump]


def test_alert_fires_then_resolves_in_real_alertmanager(am, tmp_path, registry):
    async def main():
        n = notifier(tmp_path, am.url, registry=registry)
        task = asyncio.create_task(n.run())
        try:
            fire = event("p-12")
            n.submit([fire])
            # "unprocessed" until Alertmanager's dispatcher has seen it, then "active"
            await eventually(lambda: [a["status"]["state"] for a in find(am, "p-12")] == ["active"],
                             "the alert active in Alertmanager")
            (a,) = find(am, "p-12")
            assert a["labels"] == {"alertname": "SentinelAnomaly", "measurement": "pump", "site": "plant-7",
                                   "pump_id": "p-12", "severity": "warning"}
            assert a["status"]["state"] == "active"
            assert a["annotations"]["score"] == "0.9973"
            assert a["annotations"]["top_fields"] == "vibration=0.71,current=0.29"
            assert a["generatorURL"] == "http://127.0.0.1:9680/?stream=pump%2Cpump_id%3Dp-12%2Csite%3Dplant-7"
            assert a["fingerprint"]  # Alertmanager's own

            n.submit([event("p-12", "resolved", starts=fire.starts_at)])
            # Alertmanager drops resolved alerts (endsAt in the past) from its alert list
            await eventually(lambda: find(am, "p-12") == [], "the alert to resolve")
            await eventually(lambda: n.pending("am") == 0, "the outbox to drain")  # acked after the 200
        finally:
            await n.stop()
            await asyncio.wait_for(task, 10)

    asyncio.run(main())
    assert registry.get_sample_value("sentinel_notifications_total", {"sink": "am", "result": "success"}) >= 2
    assert registry.get_sample_value("sentinel_notifications_total", {"sink": "am", "result": "failure"}) == 0


def test_firing_alert_is_kept_alive_by_resends(am, tmp_path):
    resend = 0.75  # endsAt = now + 4 * resend: without re-sends it would resolve after 3 s

    async def main():
        n = notifier(tmp_path, am.url, resend=resend)
        task = asyncio.create_task(n.run())
        try:
            n.submit([event("p-alive")])
            await eventually(lambda: len(find(am, "p-alive")) == 1, "the alert in Alertmanager")
            first_end = ts(find(am, "p-alive")[0]["endsAt"])
            await asyncio.sleep(4 * resend + 1.0)  # past the first endsAt
            (a,) = find(am, "p-alive")
            assert a["status"]["state"] == "active" and ts(a["endsAt"]) > first_end
        finally:
            await n.stop()
            await asyncio.wait_for(task, 10)

    asyncio.run(main())


def test_firing_set_survives_restart_and_is_resent(am, tmp_path):
    async def first():
        n = notifier(tmp_path, "http://127.0.0.1:9", resend=0.5)  # nothing listens: stays queued
        n.submit([event("p-restart")])
        await n.stop()

    async def second():
        n = notifier(tmp_path, am.url, resend=0.5)
        assert n.pending("am") == 1
        task = asyncio.create_task(n.run())
        try:
            await eventually(lambda: len(find(am, "p-restart")) == 1, "the replayed alert")
            await eventually(lambda: n.pending("am") == 0, "the outbox to drain")
        finally:
            await n.stop()
            await asyncio.wait_for(task, 10)

    asyncio.run(first())
    asyncio.run(second())


def test_our_webhook_payload_has_the_keys_real_alertmanager_sends(am, tmp_path):
    async def main():
        rx = await WebhookReceiver(port=HOOK_PORT).start()
        n = notifier(tmp_path, am.url)
        task = asyncio.create_task(n.run())
        try:
            n.submit([event("p-shape", site="plant-shape")])
            await eventually(lambda: any(b["groupLabels"].get("site") == "plant-shape" for b in rx.bodies()),
                             "Alertmanager's webhook", timeout=30)
        finally:
            await n.stop()
            await asyncio.wait_for(task, 10)
            await rx.stop()
        return next(b for b in rx.bodies() if b["groupLabels"].get("site") == "plant-shape")

    real = asyncio.run(main())
    ours_sink = WebhookSink(WebhookConfig(name="default", url="http://x", group_by=["alertname", "site"]),
                            "http://127.0.0.1:9680/")
    (req,) = ours_sink.requests([(1, event("p-shape", site="plant-shape"))], [], time.time())
    ours = json.loads(req.body)
    assert set(ours) == set(real)
    assert set(ours["alerts"][0]) == set(real["alerts"][0])
    assert real["version"] == ours["version"] == "4"
    assert ours["groupKey"] == real["groupKey"]
    assert ours["groupLabels"] == real["groupLabels"]
    assert ours["alerts"][0]["labels"] == real["alerts"][0]["labels"]
    assert ours["alerts"][0]["annotations"] == real["alerts"][0]["annotations"]
    assert ours["alerts"][0]["endsAt"] == real["alerts"][0]["endsAt"] == "0001-01-01T00:00:00Z"
