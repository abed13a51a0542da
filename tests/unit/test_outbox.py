"""The durable outbox and the Notifier's delivery loop, with an in-memory transport (no network)."""

from __future__ import annotations

import asyncio
import json
import random
import threading

import pytest

from sentinel.alerts.notifier import Notifier
from sentinel.alerts.outbox import Outbox
from sentinel.config.sinks import SinksConfig
from sentinel.metrics import Metrics
from sentinel.retry import Backoff
from sentinel.types import AlertEvent, StreamKey

T0 = 1_800_000_000.0


def event(i: int = 0, status: str = "firing") -> AlertEvent:
    return AlertEvent(key=StreamKey.of("pump", pump_id=f"p-{i}"), status=status, starts_at=T0,
                      ends_at=None if status == "firing" else T0 + 60, at=T0, score=0.99, threshold=0.9, error=3.0)


def value(registry, name: str, **labels) -> float:
    v = registry.get_sample_value(name, labels)
    return 0.0 if v is None else v


# -- Outbox ---------------------------------------------------------------------------------


def test_fifo_per_sink_peek_ack(tmp_path):
    ob = Outbox(tmp_path / "ob")
    ob.put([("a", f"a{i}") for i in range(5)] + [("b", "b0")])
    assert [e.payload for e in ob.peek("a", 3)] == ["a0", "a1", "a2"]
    assert [e.payload for e in ob.peek("b")] == ["b0"]
    ids = [e.id for e in ob.peek("a", 2)]
    assert ob.ack("a", ids) == 2
    assert ob.ack("b", ids) == 0  # ids of another sink are not touched
    assert [e.payload for e in ob.peek("a")] == ["a2", "a3", "a4"]
    assert (ob.pending("a"), ob.pending("b"), ob.sinks()) == (3, 1, ["a", "b"])


def test_bound_drops_oldest_and_counts(tmp_path, registry):
    m = Metrics(registry)
    ob = Outbox(tmp_path, max_entries=3, metrics=m)
    assert ob.put([("a", str(i)) for i in range(2)]) == {}
    assert ob.put([("a", str(i)) for i in range(2, 5)] + [("b", "x")]) == {"a": 2}
    assert [e.payload for e in ob.peek("a")] == ["2", "3", "4"]
    assert value(registry, "sentinel_outbox_dropped_total", sink="a") == 2
    assert value(registry, "sentinel_outbox_pending", sink="a") == 3
    assert value(registry, "sentinel_outbox_pending", sink="b") == 1


def test_persists_across_reopen_with_firing_set(tmp_path, registry):
    ob = Outbox(tmp_path)
    ob.put([("a", "one"), ("a", "two")], firing=[("am", "fp1", "p1"), ("am", "fp2", "p2")])
    ob.put([], firing=[("am", "fp1", None), ("am", "fp2", "p2b")])
    ob.ack("a", [ob.peek("a", 1)[0].id])
    ob.close()
    ob.close()  # idempotent
    again = Outbox(tmp_path, metrics=Metrics(registry))
    assert [e.payload for e in again.peek("a")] == ["two"]
    assert again.firing("am") == ["p2b"]
    assert value(registry, "sentinel_outbox_pending", sink="a") == 1
    again.put([("a", "three")])
    ids = [e.id for e in again.peek("a")]
    assert ids == sorted(ids) and len(set(ids)) == 2


def test_concurrent_put_from_threads_loses_nothing(tmp_path):
    ob = Outbox(tmp_path)

    def writer(t: int) -> None:
        for i in range(25):
            ob.put([("a", f"{t}-{i}")])

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    got = [e.payload for e in ob.peek("a", 1000)]
    assert sorted(got) == sorted(f"{t}-{i}" for t in range(4) for i in range(25))
    for t in range(4):  # each thread's entries keep their order
        mine = [p for p in got if p.startswith(f"{t}-")]
        assert mine == [f"{t}-{i}" for i in range(25)]


def test_backoff_is_exponential_full_jitter_and_resets():
    b = Backoff(0.5, 4.0, random.Random(1))
    caps = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    delays = [b.next() for _ in caps]
    assert all(0 <= d <= c for d, c in zip(delays, caps, strict=True))
    assert b.failures == 6
    b.reset()
    assert b.failures == 0 and b.next() <= 0.5
    same = Backoff(0.5, 4.0, random.Random(1))
    assert [same.next() for _ in caps] == delays  # deterministic given the rng


# -- Notifier with a fake transport ---------------------------------------------------------


class FakeTransport:
    """Answers with the queued statuses (then 200); an Exception in the queue is raised."""

    def __init__(self, answers=()):
        self.answers = list(answers)
        self.calls: list[tuple[str, dict, bytes]] = []

    async def __call__(self, method, url, headers, body, timeout):
        self.calls.append((url, dict(headers), body))
        a = self.answers.pop(0) if self.answers else 200
        if isinstance(a, Exception):
            raise a
        return a


def sinks_cfg(path, **outbox) -> SinksConfig:
    return SinksConfig.model_validate({
        "webhooks": [{"name": "hook", "url": "http://127.0.0.1:1/hook", "send_resolved": False}],
        "alertmanagers": [{"name": "am", "url": "http://127.0.0.1:2", "resend_interval": 3600}],
        "outbox": {"path": str(path), "retry_initial": 0.001, "retry_max": 0.01, "flush_timeout": 0.5, **outbox},
        "log_alerts": False,
    })


async def run_until(n: Notifier, pred, max_rounds: int = 2000) -> None:
    task = asyncio.create_task(n.run())
    for _ in range(max_rounds):
        if pred():
            break
        await asyncio.sleep(0.005)
    await n.stop()
    await asyncio.wait_for(task, 10)
    assert pred()


def test_retries_until_delivered_and_counts(tmp_path, registry):
    from sentinel.errors import SinkError

    t = FakeTransport([SinkError("refused"), 503, 429, 200])

    async def main():
        n = Notifier(sinks_cfg(tmp_path), Metrics(registry), "http://x/", transport=t, rng=random.Random(0))
        n.sinks.pop("am")
        n.submit([event(1)])
        await run_until(n, lambda: n.pending("hook") == 0)

    asyncio.run(main())
    assert len(t.calls) == 4 and t.calls[0][2] == t.calls[-1][2]  # the same body re-sent
    assert value(registry, "sentinel_notifications_total", sink="hook", result="failure") == 3
    assert value(registry, "sentinel_notifications_total", sink="hook", result="success") == 1
    assert value(registry, "sentinel_outbox_pending", sink="hook") == 0


def test_permanent_rejection_is_dropped_not_retried(tmp_path, registry):
    t = FakeTransport([400])

    async def main():
        n = Notifier(sinks_cfg(tmp_path), Metrics(registry), "http://x/", transport=t)
        n.sinks.pop("am")
        n.submit([event(1)])
        await run_until(n, lambda: n.pending("hook") == 0)

    asyncio.run(main())
    assert len(t.calls) == 1
    assert value(registry, "sentinel_notifications_total", sink="hook", result="dropped") == 1


def test_send_resolved_false_and_firing_set_follow_events(tmp_path, registry):
    t = FakeTransport()

    async def main():
        n = Notifier(sinks_cfg(tmp_path), Metrics(registry), "http://x/", transport=t)
        n.submit([event(1), event(2)])
        n.submit([event(1, "resolved")])
        assert (n.pending("hook"), n.pending("am")) == (2, 3)
        assert [json.loads(p)["key"] for p in n.outbox.firing("am")] == ["pump,pump_id=p-2"]
        await run_until(n, lambda: n.pending("hook") == 0 and n.pending("am") == 0)

    asyncio.run(main())
    hook = [json.loads(b) for u, _, b in t.calls if u.endswith("/hook")]
    assert sum(len(b["alerts"]) for b in hook) == 2 and all(b["status"] == "firing" for b in hook)
    am = [json.loads(b) for u, _, b in t.calls if u.endswith("/api/v2/alerts")]
    last = {a["labels"]["pump_id"]: a for body in am for a in body}
    assert last["p-1"]["endsAt"] == "2027-01-15T08:01:00Z"  # resolved at T0 + 60
    assert last["p-2"]["endsAt"] > last["p-2"]["startsAt"]


def test_restart_replays_outbox_and_resends_firing_set(tmp_path, registry):
    async def first():
        n = Notifier(sinks_cfg(tmp_path), Metrics(), "http://x/", transport=FakeTransport([503] * 1000))
        n.submit([event(1), event(2)])
        task = asyncio.create_task(n.run())
        await asyncio.sleep(0.05)
        await n.stop()
        await n.stop()  # idempotent
        await asyncio.wait_for(task, 10)

    asyncio.run(first())
    t = FakeTransport()

    async def second():
        n = Notifier(sinks_cfg(tmp_path), Metrics(registry), "http://x/", transport=t)
        assert (n.pending("hook"), n.pending("am")) == (2, 2)
        assert value(registry, "sentinel_outbox_pending", sink="hook") == 2
        await run_until(n, lambda: n.pending("hook") == 0 and n.pending("am") == 0)

    asyncio.run(second())
    hook = [json.loads(b) for u, _, b in t.calls if u.endswith("/hook")]
    assert sorted(a["labels"]["pump_id"] for b in hook for a in b["alerts"]) == ["p-1", "p-2"]


def test_duplicate_sink_names_rejected(tmp_path):
    with pytest.raises(ValueError):
        SinksConfig.model_validate({"webhooks": [{"name": "a", "url": "http://h"}, {"name": "a", "url": "http://i"}],
                                    "outbox": {"path": str(tmp_path)}})
