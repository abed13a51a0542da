"""The Notifier posting to a real HTTP receiver (aiohttp on 127.0.0.1) through the real aiohttp transport."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Callable

from sentinel.alerts.notifier import Notifier
from sentinel.config.sinks import SinksConfig
from sentinel.metrics import Metrics
from sentinel.types import AlertEvent, StreamKey
from tests.servers.alertmanager import WebhookReceiver

T0 = 1_800_000_000.0


def event(pump: str, site: str, status: str = "firing") -> AlertEvent:
    return AlertEvent(key=StreamKey.of("pump", site=site, pump_id=pump), status=status, starts_at=T0,
                      ends_at=None if status == "firing" else T0 + 30, at=T0, score=0.97, threshold=0.9, error=2.5)


async def eventually(pred: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_signed_grouped_v4_payloads_reach_a_real_receiver(tmp_path, registry):
    async def main():
        rx = await WebhookReceiver().start()
        cfg = SinksConfig.model_validate({
            "webhooks": [{"name": "ops", "url": rx.url, "hmac_secret": "k3y", "group_by": ["alertname", "site"],
                          "headers": {"Authorization": "Bearer tok"}}],
            "outbox": {"path": str(tmp_path), "retry_initial": 0.01, "retry_max": 0.05},
        })
        n = Notifier(cfg, Metrics(registry), "http://127.0.0.1:9680/", clock=lambda: T0)
        task = asyncio.create_task(n.run())
        try:
            n.submit([event("1", "a"), event("2", "a"), event("3", "b")])
            await eventually(lambda: len(rx.received) == 2, "two group posts")
            n.submit([event("1", "a", "resolved")])
            await eventually(lambda: len(rx.received) == 3, "the resolved post")
        finally:
            await n.stop()
            await asyncio.wait_for(task, 10)
            await rx.stop()
        return rx

    rx = asyncio.run(main())
    for headers, body in rx.received:
        mac = hmac.new(b"k3y", body, hashlib.sha256).hexdigest()
        assert headers["X-Sentinel-Signature"] == f"sha256={mac}"
        assert headers["Authorization"] == "Bearer tok"
        assert headers["Content-Type"] == "application/json"
    bodies = rx.bodies()
    by_site = {b["groupLabels"]["site"]: b for b in bodies[:2]}
    assert sorted(a["labels"]["pump_id"] for a in by_site["a"]["alerts"]) == ["1", "2"]
    assert [a["labels"]["pump_id"] for a in by_site["b"]["alerts"]] == ["3"]
    assert all(b["version"] == "4" and b["status"] == "firing" and b["receiver"] == "ops" for b in bodies[:2])
    last = bodies[2]
    assert last["status"] == "resolved" and last["alerts"][0]["endsAt"] == "2027-01-15T08:00:30Z"
    assert registry.get_sample_value("sentinel_notifications_total", {"sink": "ops", "result": "success"}) == 3
    assert registry.get_sample_value("sentinel_outbox_pending", {"sink": "ops"}) == 0


def test_slow_receiver_times_out_and_does_not_hold_up_another_sink(tmp_path, registry):
    async def main():
        slow = await WebhookReceiver(delay=5.0).start()
        fast = await WebhookReceiver().start()
        cfg = SinksConfig.model_validate({
            "webhooks": [{"name": "slow", "url": slow.url, "timeout": 0.2},
                         {"name": "fast", "url": fast.url}],
            "outbox": {"path": str(tmp_path), "retry_initial": 0.05, "retry_max": 0.1, "flush_timeout": 0},
        })
        n = Notifier(cfg, Metrics(registry), "http://127.0.0.1:9680/")
        task = asyncio.create_task(n.run())
        try:
            for i in range(3):
                n.submit([event(str(i), "a")])  # returns at once although "slow" is stuck
            await eventually(lambda: sum(len(b["alerts"]) for b in fast.bodies()) == 3, "the fast sink")
            await eventually(lambda: (registry.get_sample_value(
                "sentinel_notifications_total", {"sink": "slow", "result": "failure"}) or 0) >= 1, "a timeout")
            await eventually(lambda: n.pending("fast") == 0, "the fast sink's acks")  # acked after the 200
            assert n.pending("slow") == 3
        finally:
            await n.stop()
            await asyncio.wait_for(task, 10)
            await slow.stop()
            await fast.stop()

    asyncio.run(main())
