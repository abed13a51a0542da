"""The runtime's parts, each alone: the tick's fan-out, the trainer scheduler, the running source and sink."""

from __future__ import annotations

import asyncio
import random
import zlib
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from sentinel.config import load_config_text
from sentinel.errors import SourceError, SourceUnavailable
from sentinel.metrics import Metrics
from sentinel.runtime.engine import Engine
from sentinel.runtime.scheduler import TrainingScheduler
from sentinel.runtime.shard import Shard
from sentinel.runtime.tick import Tick
from sentinel.sources.running import RunningSource
from sentinel.types import Sample, ScoreRecord, SourceBatch, StreamKey
from sentinel.writeback.running import RunningSink

CONFIG = """
streams: {history_size: 64, max_streams: 8}
model: {hidden: 8, window: 4}
train: {min_history: 32, min_history_span: 0, epochs: 2, bptt: 16, segments: 2, retrain_interval: 0, drift_retrain: false}
detect: {threshold: {method: spot}}
alerts: {for: 0, for_ticks: 0, resolve_for: 0, enter: 0.9, exit: 0.7}
"""
A, B = StreamKey.of("pump", p="a"), StreamKey.of("pump", p="b")


def value(key: StreamKey, i: int) -> tuple[float]:
    rng = np.random.default_rng(i * 7919 + zlib.crc32(str(key).encode()) % 1000)
    return (float(np.sin(2 * np.pi * i / 16) + 0.05 * rng.standard_normal()),)


def batch(keys: list[StreamKey], i: int, source: str = "src") -> SourceBatch:
    return SourceBatch(source, [Sample(k, float(i), ("value",), value(k, i)) for k in keys], cursor={"i": i + 1})


class Collect:
    def __init__(self) -> None:
        self.items: list[Any] = []

    def submit(self, items: Any) -> None:
        self.items.extend(items)


def test_tick_fans_out_to_metrics_notifier_write_back_and_cursors() -> None:
    registry = CollectorRegistry()
    engine = Engine(load_config_text(CONFIG))
    notifier, wb = Collect(), Collect()
    tick = Tick(engine, Metrics(registry), shard=Shard(None), notifier=notifier, writebacks=[wb], clock=lambda: 100.0)
    first = tick([batch([A], 0), batch([B], 0, source="other")])
    assert first.new_streams == [("src", {A: 0.0}), ("other", {B: 0.0})]  # their history is fetched next
    assert tick.cursors == {"src": {"i": 1}, "other": {"i": 1}}
    bad = SourceBatch("src", [Sample(A, 0.0, ("value",), (1.0,))], cursor={"i": 7}, rejected={"lp_bad_field": 2})
    again = tick([bad])  # a duplicate timestamp, plus what the source itself rejected
    assert again.new_streams == [] and tick.cursors["src"] == {"i": 7}
    assert registry.get_sample_value("sentinel_samples_ingested_total", {"source": "src"}) == 1
    assert registry.get_sample_value("sentinel_samples_rejected_total", {"reason": "duplicate"}) == 1
    assert registry.get_sample_value("sentinel_samples_rejected_total", {"reason": "lp_bad_field"}) == 2
    assert [(r.key, r.ts, r.ready) for r in wb.items] == [(A, 0.0, False), (B, 0.0, False)]  # rejects not written
    for i in range(1, 43):
        tick([batch([A, B], i)])
    assert notifier.items == []  # nothing alerts while warming
    TrainingScheduler(engine, clock=lambda: 43.0).run_once_sync()
    tick([SourceBatch("src", [Sample(A, 43.0, ("value",), (60.0,)), Sample(B, 43.0, ("value",), value(B, 43))])])
    assert [(ev.key, ev.status) for ev in notifier.items] == [(A, "firing")]
    assert registry.get_sample_value("sentinel_alert_transitions_total", {"status": "firing"}) == 1


def test_scheduler_trains_what_is_due_and_counts_it() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    engine = Engine(load_config_text(CONFIG))
    for i in range(32):
        engine.process(batch([A, B], i).samples)
    s = TrainingScheduler(engine, metrics=metrics, clock=lambda: 32.0)
    epochs: list[tuple[int, int]] = []
    counts = s.run_once_sync(progress=lambda i, n: lambda e, E, v: epochs.append((i, n)))
    assert counts == [{"success": 2, "rejected": 0}] and set(epochs) == {(0, 1)}
    assert engine.state_counts()["ready"] == 2 and engine.model_version == 1
    assert registry.get_sample_value("sentinel_retrain_total", {"result": "success"}) == 2
    assert registry.get_sample_value("sentinel_model_version") == 1
    assert s.run_once_sync() == []  # nothing due: retrain_interval 0
    engine.set_trained_at(-float("inf"))
    assert s.run_once_sync() == []  # a retrain also needs min_history new samples
    for i in range(32, 64):
        engine.process(batch([A, B], i).samples)
    engine.cfg = engine.cfg.model_copy(update={"train": engine.cfg.train.model_copy(update={"retrain_interval": 1.0})})
    assert [c["success"] + c["rejected"] for c in s.run_once_sync()] == [2]


def test_scheduler_releases_a_failed_job_so_it_is_handed_out_again() -> None:
    engine = Engine(load_config_text(CONFIG))
    for i in range(32):
        engine.process(batch([A], i).samples)

    class Broken:
        def submit(self, job: Any, settings: Any) -> Any:
            raise RuntimeError("worker died")

    registry = CollectorRegistry()
    s = TrainingScheduler(engine, metrics=Metrics(registry), trainer=Broken(), clock=lambda: 32.0)
    assert asyncio.run(s.run_once()) == 1 and s.inflight == 0
    assert registry.get_sample_value("sentinel_retrain_total", {"result": "failure"}) == 1
    assert len(engine.due_training(33.0)) == 1  # released: due again


class FlakyPlugin:
    """Fails ``fails`` runs (the kinds given), then emits once and waits to be stopped."""

    def __init__(self, errors: list[Exception]):
        self.name, self.connected, self.errors, self.runs = "flaky", False, errors, 0
        self.retry_floor = 0.0
        self._stop = asyncio.Event()

    async def run(self, emit: Any) -> None:
        self.runs += 1
        if self.errors:
            raise self.errors.pop(0)
        self.connected = True
        await emit(batch([A], 0))
        await self._stop.wait()

    async def stop(self) -> None:
        self._stop.set()

    async def history(self, *a: Any) -> list:
        return []


def test_running_source_retries_with_backoff_and_is_the_one_writer_of_source_up() -> None:
    registry = CollectorRegistry()
    plugin = FlakyPlugin([SourceUnavailable("down"), SourceError("bad query"), ValueError("a bug")])
    rs = RunningSource(plugin, Metrics(registry), health_interval=0.01, rng=random.Random(0))
    rs._initial, rs._max = 0.01, 0.02
    got: list[SourceBatch] = []

    async def main() -> None:
        async def emit(b: SourceBatch) -> None:
            got.append(b)

        task = asyncio.create_task(rs.run(emit))
        for _ in range(200):
            if got and registry.get_sample_value("sentinel_source_up", {"source": "flaky"}) == 1:
                break
            await asyncio.sleep(0.01)
        assert rs.connected and rs.failures == 3
        await asyncio.wait_for(rs.stop(), 2)
        await asyncio.wait_for(task, 2)

    asyncio.run(main())
    assert plugin.runs == 4 and len(got) == 1
    assert registry.get_sample_value("sentinel_source_errors_total", {"source": "flaky", "kind": "unavailable"}) == 1
    assert registry.get_sample_value("sentinel_source_errors_total", {"source": "flaky", "kind": "error"}) == 2
    assert registry.get_sample_value("sentinel_source_up", {"source": "flaky"}) == 0  # stopped


class Sink(RunningSink):
    queue = "test_sink"

    def __init__(self, metrics: Metrics, fail: int = 0, **kw: Any):
        super().__init__(metrics, batch_size=2, flush_interval=0.01, max_buffer=4, stop_timeout=1.0, **kw)
        self.fail, self.batches = fail, []

    async def _write(self, payload: list[ScoreRecord]) -> None:
        if self.fail:
            self.fail -= 1
            raise OSError("connection refused")
        self.batches.append([r.ts for r in payload])


def rec(i: int) -> ScoreRecord:
    return ScoreRecord(A, float(i), (1.0,), 0.1, 0.2, 0.5, 0, True)


@pytest.mark.parametrize(("overflow", "kept"), [("drop_oldest", [2, 3, 4, 5]), ("drop_newest", [0, 1, 2, 3])])
def test_running_sink_bounds_its_buffer_by_its_policy(overflow: str, kept: list[int]) -> None:
    registry = CollectorRegistry()
    s = Sink(Metrics(registry), overflow=overflow)
    s.submit([rec(i) for i in range(6)])
    assert [r.ts for r in s._peek(10)] == kept and s.dropped == 2
    assert registry.get_sample_value("sentinel_queue_dropped_total", {"queue": "test_sink"}) == 2


def test_running_sink_retries_a_failed_batch_whole_and_in_order_then_flushes_at_stop() -> None:
    s = Sink(Metrics(CollectorRegistry()), fail=2, rng=random.Random(0))

    async def main() -> None:
        task = asyncio.create_task(s.run())
        s.submit([rec(i) for i in range(3)])
        for _ in range(300):
            if s.written >= 2:
                break
            await asyncio.sleep(0.01)
        s.submit([rec(3)])
        await asyncio.wait_for(s.stop(), 5)
        await asyncio.wait_for(task, 5)

    asyncio.run(main())
    assert s.batches[0] == [0.0, 1.0]  # the batch that failed twice, retried whole
    assert [t for b in s.batches for t in b] == [0.0, 1.0, 2.0, 3.0] and all(len(b) <= 2 for b in s.batches)
    assert s.written == 4 and s.pending() == 0 and s.dropped == 0
