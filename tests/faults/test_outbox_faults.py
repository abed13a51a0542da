"""Delivery under faults: a receiver that is down, a restart with a full outbox, a SIGKILLed writer."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

from sentinel.alerts.notifier import Notifier
from sentinel.alerts.outbox import DB_NAME, Outbox
from sentinel.config.sinks import SinksConfig
from sentinel.metrics import Metrics
from sentinel.types import AlertEvent, StreamKey
from tests.servers._proc import free_port
from tests.servers.alertmanager import WebhookReceiver

T0 = 1_800_000_000.0
REPO = Path(__file__).resolve().parents[2]


def event(i: int, status: str = "firing") -> AlertEvent:
    return AlertEvent(key=StreamKey.of("pump", site=f"s{i % 3}", pump_id=f"p-{i}"), status=status, starts_at=T0,
                      ends_at=None if status == "firing" else T0 + 10, at=T0, score=0.95, threshold=0.9, error=1.0)


def cfg(path, url: str, **outbox) -> SinksConfig:
    return SinksConfig.model_validate({
        "webhooks": [{"name": "hook", "url": url, "group_by": ["alertname", "site"], "timeout": 2}],
        "outbox": {"path": str(path), "retry_initial": 0.02, "retry_max": 0.1, "flush_timeout": 0.3, **outbox},
        "log_alerts": False,
    })


async def eventually(pred: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def delivered(rx: WebhookReceiver) -> list[tuple[str, str]]:
    return [(a["labels"]["pump_id"], a["status"]) for b in rx.bodies() for a in b["alerts"]]


def test_receiver_down_then_up_delivers_everything(tmp_path, registry):
    port = free_port()  # nothing listens yet: connections are refused
    expected = [(f"p-{i}", "firing") for i in range(12)] + [(f"p-{i}", "resolved") for i in range(0, 12, 4)]

    async def main():
        n = Notifier(cfg(tmp_path, f"http://127.0.0.1:{port}/hook"), Metrics(registry), "http://127.0.0.1:9680/")
        task = asyncio.create_task(n.run())
        rx = WebhookReceiver(port=port)
        try:
            n.submit([event(i) for i in range(12)])
            n.submit([event(i, "resolved") for i in range(0, 12, 4)])
            failures = lambda: registry.get_sample_value(  # noqa: E731
                "sentinel_notifications_total", {"sink": "hook", "result": "failure"}) or 0
            await eventually(lambda: failures() >= 3, "a few failed attempts")
            assert n.pending("hook") == len(expected)
            await rx.start()
            await eventually(lambda: n.pending("hook") == 0, "the outbox to drain")
        finally:
            await n.stop()
            await asyncio.wait_for(task, 10)
            await rx.stop()
        return rx

    rx = asyncio.run(main())
    got = delivered(rx)
    assert sorted(got) == sorted(expected)  # each exactly once here (at-least-once in general)
    for i in range(0, 12, 4):  # per alert, firing before resolved
        assert got.index((f"p-{i}", "firing")) < got.index((f"p-{i}", "resolved"))
    assert registry.get_sample_value("sentinel_outbox_pending", {"sink": "hook"}) == 0


def test_stopped_with_pending_then_recreated_delivers(tmp_path):
    port = free_port()

    async def first():
        n = Notifier(cfg(tmp_path, f"http://127.0.0.1:{port}/hook"), Metrics(), "http://127.0.0.1:9680/")
        task = asyncio.create_task(n.run())
        n.submit([event(i) for i in range(5)])
        await asyncio.sleep(0.1)
        await n.stop()
        await asyncio.wait_for(task, 10)
        assert n.pending("hook") == 5

    async def second():
        rx = await WebhookReceiver(port=port).start()
        n = Notifier(cfg(tmp_path, rx.url), Metrics(), "http://127.0.0.1:9680/")
        task = asyncio.create_task(n.run())
        try:
            await eventually(lambda: n.pending("hook") == 0, "replayed entries delivered")
        finally:
            await n.stop()
            await asyncio.wait_for(task, 10)
            await rx.stop()
        return rx

    asyncio.run(first())
    rx = asyncio.run(second())
    assert sorted(delivered(rx)) == sorted((f"p-{i}", "firing") for i in range(5))


def test_bound_while_receiver_is_down_keeps_newest(tmp_path, registry):
    port = free_port()

    async def main():
        n = Notifier(cfg(tmp_path, f"http://127.0.0.1:{port}/hook", max_entries=4), Metrics(registry), "http://x/")
        n.submit([event(i) for i in range(7)])
        assert n.pending("hook") == 4
        rx = await WebhookReceiver(port=port).start()
        task = asyncio.create_task(n.run())
        try:
            await eventually(lambda: n.pending("hook") == 0, "the outbox to drain")
        finally:
            await n.stop()
            await asyncio.wait_for(task, 10)
            await rx.stop()
        return rx

    rx = asyncio.run(main())
    assert sorted(delivered(rx)) == sorted((f"p-{i}", "firing") for i in range(3, 7))
    assert registry.get_sample_value("sentinel_outbox_dropped_total", {"sink": "hook"}) == 3
    assert registry.get_sample_value("sentinel_notifications_total", {"sink": "hook", "result": "dropped"}) == 3


CHILD = textwrap.dedent("""
    import sys
    from sentinel.alerts.notifier import Notifier
    from sentinel.config.sinks import SinksConfig
    from sentinel.metrics import Metrics
    from sentinel.types import AlertEvent, StreamKey
    cfg = SinksConfig.model_validate({"webhooks": [{"name": "hook", "url": "http://127.0.0.1:9/x"}],
                                      "outbox": {"path": sys.argv[1]}, "log_alerts": False})
    n = Notifier(cfg, Metrics(), "http://x/")
    for i in range(100000):
        n.submit([AlertEvent(key=StreamKey.of("m", i=str(i)), status="firing", starts_at=1.0, ends_at=None,
                             at=1.0, score=1.0, threshold=0.5, error=1.0)])
        print(i, flush=True)
""")


def test_sigkill_during_submits_loses_no_acknowledged_entry(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], stdout=subprocess.PIPE, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    acked: list[int] = []
    buf = b""
    deadline = time.monotonic() + 60
    try:
        assert proc.stdout is not None
        while len(acked) < 30 and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            if not ready:
                assert proc.poll() is None, "child exited early"
                continue
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            acked += [int(x) for x in lines if x]
        proc.send_signal(signal.SIGKILL)  # mid-stream: the child is still submitting
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
    assert len(acked) >= 30
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    ob = Outbox(tmp_path)
    stored = [int(p.split('"m,i=')[1].split('"')[0]) for p in (e.payload for e in ob.peek("hook", 10**6))]
    assert set(acked) <= set(stored)
    assert stored == sorted(stored)  # order of submission kept
