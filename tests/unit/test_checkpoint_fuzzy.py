"""The fuzzy checkpoint (issue 10): state copied in slot chunks between rounds, restored + replayed exactly.

A live engine takes a :class:`FuzzySnapshot` while its streams keep ticking, a stream is created and a
training result arrives mid-copy; the file is written and read back into a fresh engine, which
replays every batch from the snapshot's start (the write-ahead log's part). It must end bit-identical
to an uninterrupted run, skip (not count, not alert) the samples its chunks already held, and the
engine thread never copies more than one chunk per step.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest
import torch

from sentinel.config import load_config_text
from sentinel.model.train import train
from sentinel.runtime.engine import SKIPPED, Engine
from sentinel.runtime.engine.fuzzy import WEIGHTS, FuzzySnapshot, slot_bytes
from sentinel.state import checkpoint as ckpt
from sentinel.types import Sample, StreamKey

from .test_engine import assert_same, snapshot, value

MIN_HISTORY = 64
CONFIG = f"""
streams: {{history_size: 64, max_gap_intervals: 5, rewarm_samples: 6, max_streams: 64}}
model: {{hidden: 8, window: 4}}
train: {{min_history: {MIN_HISTORY}, min_history_span: 0, epochs: 2, bptt: 16, segments: 2, retrain_interval: 0,
         drift_retrain: false}}
detect: {{threshold: {{method: spot}}}}
alerts: {{for: 0, for_ticks: 0, resolve_for: 0, resolve_for_ticks: 0}}
"""
ONE = [StreamKey.of("pump", pump=f"p{i:02d}") for i in range(24)]  # group F=1: 24 streams -> capacity 32
TWO = [StreamKey.of("valve", valve=f"v{i}") for i in range(6)]  # group F=2
LATE = StreamKey.of("pump", pump="late")  # warming when the checkpoint starts: trained mid-copy
NEW = StreamKey.of("pump", pump="new")  # first seen mid-copy
CHUNK = 8  # slots per step


def engine() -> Engine:
    return Engine(load_config_text(CONFIG, source="test.yaml"))


def tick(i: int, keys: list[StreamKey], spike: frozenset[StreamKey] = frozenset()) -> list[Sample]:
    out = []
    for k in keys:
        F = 2 if k in TWO else 1
        v = value(k, i, F)
        if k in spike:
            v = tuple(x + 50.0 for x in v)
        out.append(Sample(k, float(i), ("a", "b") if F == 2 else ("value",), v))
    return out


def warm(e: Engine) -> int:
    """Every stream of ONE and TWO trained; LATE warming with 20 samples. Returns the next tick."""
    n = MIN_HISTORY + 8
    for i in range(n):
        e.process(tick(i, ONE + TWO + ([LATE] if i >= n - 20 else [])))
        for job in e.due_training(float(i)):
            e.apply_training(job, train(job, e.settings), float(i))
    assert e.state_counts()["ready"] == len(ONE) + len(TWO)
    return n


def chunk_of(snap: FuzzySnapshot, e: Engine, key: StreamKey) -> int:
    F, slot = e.index[key]
    return next(j for j, (f, lo, hi) in enumerate(snap._plan) if f == F and lo <= slot < hi)


def test_a_checkpoint_taken_while_streams_tick_restores_and_replays_to_the_uninterrupted_state(tmp_path: Path) -> None:
    live, ref = engine(), engine()  # ref: the same run without a checkpoint (and without the late training)
    t = warm(live)
    assert warm(ref) == t
    (job,) = live.due_training(float(t), force=[LATE])  # the training in flight when the checkpoint starts
    res = train(job, live.settings)
    # (ref never trains LATE: the live result lands after the checkpoint is written, so it is not in it)

    snap = FuzzySnapshot(live, chunk_bytes=CHUNK * slot_bytes(live))
    assert snap.slots_per_chunk == CHUNK and live.pinned == 1
    first, last = chunk_of(snap, live, ONE[0]), chunk_of(snap, live, ONE[-1])
    assert first < last
    wal: list[list[Sample]] = []  # what the write-ahead log holds after the snapshot's start position
    reflected = 0  # samples scored live before their stream's chunk was copied
    fired_live: list[str] = []
    step = 0
    while True:
        keys = ONE + TWO + [LATE] + ([NEW] if step >= 1 else [])
        spike = frozenset({ONE[-1]} if step == 0 else {ONE[0]} if step == first + 2 else set())
        batch = tick(t, keys, spike)
        if step == first + 3:  # a live duplicate after ONE[0]'s chunk was copied: a rejection, counted on replay
            batch.append(Sample(ONE[0], float(t - 1), ("value",), (0.0,)))
        wal.append(batch)
        out = live.process(batch)
        ref.process(batch)
        fired_live += [str(ev.key) for ev in out.events if ev.status == "firing"]
        for s in batch:
            F, slot = live.index[s.key]
            if slot < live.groups[F].capacity and s.key != NEW and any(
                    f == F and lo <= slot < hi for f, lo, hi in snap._plan[len(snap.copied):]):
                reflected += 1
        with pytest.raises(RuntimeError, match="shares the weights"):  # the result must wait for the write
            live.apply_training(job, res, float(t))
        t += 1
        step += 1
        if snap.step():
            break
    assert {str(ONE[-1]), str(ONE[0])} <= set(fired_live)  # both spikes fired live
    # the engine thread never copied more than one chunk per step
    sizes = [hi - lo for _f, lo, hi in snap.copied]
    assert max(sizes) == CHUNK and len(snap.copied) == sum(math.ceil(g.capacity / CHUNK) for g in live.groups.values())
    assert snap.meta["fuzzy"] == {"chunks": len(snap.copied), "slots_per_chunk": CHUNK}
    meta, tensors = snap.result()
    assert str(NEW) not in meta["groups"]["1"]["keys"]  # created after the start: only in the log
    for F in (1, 2):  # weights shared, not copied (the engine refused training results meanwhile)
        for k in WEIGHTS:
            assert tensors[f"g{F}.bank.{k}"].data_ptr() == live.groups[F].bank.t[k].data_ptr()
    path = ckpt.save(tmp_path, meta, tensors)
    snap.release()
    assert live.pinned == 0
    live.apply_training(job, res, float(t))  # lands after the write: it will be re-issued after a crash
    for i in range(t, t + 6):
        batch = tick(i, ONE + TWO + [LATE, NEW])
        wal.append(batch)
        live.process(batch)
        ref.process(batch)

    # kill -9 here; restart: the checkpoint, then the log from the snapshot's start
    restored = engine()
    c = ckpt.load(path)
    restored.restore(c.meta, c.tensors)
    skipped = 0
    fired_replay: list[str] = []
    for batch in wal:
        out = restored.process(batch)
        skipped += out.rejected.count(SKIPPED)
        fired_replay += [str(ev.key) for ev in out.events if ev.status == "firing"]
    assert skipped == reflected > 0
    assert str(ONE[-1]) not in fired_replay  # its spike was in its chunk: not alerted twice
    assert str(ONE[0]) in fired_replay  # after its chunk's copy: scored again (at least once)
    assert restored.rejected == ref.rejected and restored.rejected["out_of_order"] == 1  # nothing SKIPPED counted
    assert restored.model_version == ref.model_version < live.model_version
    assert set(restored.index) == set(ref.index)
    assert all(restored.index[k] == ref.index[k] for k in ref.index)
    assert_same(snapshot(restored), snapshot(ref))  # bit-identical, every array of every group
    for F, g in ref.groups.items():  # and the level statistic's tail
        lr = restored.groups[F].lthr
        assert g.lthr is not None and lr is not None
        assert_same(lr.a, g.lthr.a)


def finish_and_restore(snap: FuzzySnapshot) -> Engine:
    """Copy the rest of ``snap``'s chunks, release it and restore its checkpoint into a fresh engine."""
    while not snap.step():
        pass
    meta, tensors = snap.result()
    snap.release()
    restored = engine()
    restored.restore(meta, {k: v.clone() for k, v in tensors.items()})
    return restored


def test_a_fence_passes_once_the_stream_scores_and_a_classic_checkpoint_has_none() -> None:
    live = engine()
    t = warm(live)
    snap = FuzzySnapshot(live)
    live.process(tick(t, ONE))  # scored after the start, before the copy
    restored = finish_and_restore(snap)
    old = [Sample(ONE[0], float(t), ("value",), (1.0,))]
    assert restored.process(old).rejected == [SKIPPED]  # held by the checkpoint
    assert restored.process(tick(t + 1, [ONE[0]])).rejected == [None]
    assert restored.process(old).rejected == ["out_of_order"]  # a real one again
    assert sum(restored.rejected.values()) == 1
    classic = engine()
    m, ts = live.snapshot()
    classic.restore(m, {k: v.clone() for k, v in ts.items()})
    assert classic.fences == {}
    assert classic.process(old).rejected == ["duplicate"]


def test_the_checkpointer_copies_between_ticks_and_holds_other_calls_and_training_results(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prometheus_client import CollectorRegistry

    from sentinel.metrics import Metrics
    from sentinel.runtime.checkpointer import Checkpointer
    from sentinel.runtime.engine_thread import EngineThread
    from sentinel.state.wal import WalPosition

    e = Engine(load_config_text(CONFIG + f"state: {{dir: {tmp_path}}}\n", source="test.yaml"))
    for i in range(4):
        e.process(tick(i, ONE + TWO))
    cp = Checkpointer(e.cfg.state, Metrics(CollectorRegistry()), chunk_bytes=4 * slot_bytes(e))
    thread = EngineThread()
    seen: list[tuple[str, int]] = []  # (what ran on the engine thread, pinned snapshots then)
    done = asyncio.Event()
    copy = FuzzySnapshot.step

    def step(self: FuzzySnapshot) -> bool:
        seen.append(("step", e.pinned))
        return copy(self)

    def one_tick(i: int) -> None:
        seen.append(("tick", e.pinned))
        e.process(tick(i, ONE))

    monkeypatch.setattr(FuzzySnapshot, "step", step)

    async def ticks() -> None:
        i = 4
        while not done.is_set() and i < 500:
            await thread.call_now(one_tick, i)
            i += 1

    async def other() -> None:  # e.g. feedback: held back while the state is copied
        await asyncio.sleep(0)
        await thread.call(lambda: seen.append(("other", e.pinned)))

    async def result() -> bool:  # a training result: waits for the file
        await asyncio.sleep(0)
        await cp.weights_free()
        return any(tmp_path.glob("checkpoint-*.pt"))

    async def main() -> tuple:
        tk = asyncio.create_task(ticks())
        await asyncio.sleep(0.01)
        got = await asyncio.gather(cp.save(thread, e, lambda: (WalPosition(3, 120), {"src": {"at": 1}})),
                                   other(), result())
        done.set()
        await tk
        return got

    try:
        (path, wal), _, written = asyncio.run(main())
    finally:
        thread.shutdown()
    assert wal == WalPosition(3, 120) and written
    c = ckpt.load(path)
    assert c.wal_position == WalPosition(3, 120) and c.meta["cursors"] == {"src": {"at": 1}}
    st = cp.last
    assert st is not None and st.slots_per_chunk == 4
    assert st.steps == 1 + sum(math.ceil(g.capacity / 4) for g in e.groups.values()) == c.meta["fuzzy"]["chunks"] + 1
    kinds = [k for k, _ in seen]
    steps = [j for j, k in enumerate(kinds) if k == "step"]
    assert len(steps) == st.steps - 1 and kinds.count("other") == 1
    assert kinds.index("other") > steps[-1]  # held until the copy was done
    assert "tick" in kinds[steps[0]:steps[-1]]  # scored between the chunks
    assert e.pinned == 0


def test_the_tick_counts_a_skipped_sample_neither_ingested_nor_rejected() -> None:
    from prometheus_client import CollectorRegistry

    from sentinel.metrics import Metrics
    from sentinel.runtime.shard import Shard
    from sentinel.runtime.tick import Tick
    from sentinel.types import SourceBatch

    live = engine()
    for i in range(3):
        live.process(tick(i, ONE[:2]))
    snap = FuzzySnapshot(live)
    live.process(tick(3, ONE[:2]))  # in the checkpoint, and in the log after its position
    restored = finish_and_restore(snap)
    registry = CollectorRegistry()
    t = Tick(restored, Metrics(registry), shard=Shard(None), notifier=None, clock=lambda: 100.0)
    stale = Sample(ONE[0], 1.0, ("value",), (0.0,))  # older than the start: a real rejection
    t([SourceBatch("rx", [*tick(3, ONE[:2]), stale], cursor=None)])  # the replayed record
    t([SourceBatch("rx", tick(4, ONE[:2]), cursor=None)])
    got = registry.get_sample_value
    assert got("sentinel_samples_ingested_total", {"source": "rx"}) == 2  # tick 4 only
    assert got("sentinel_samples_rejected_total", {"reason": SKIPPED}) is None
    assert got("sentinel_samples_rejected_total", {"reason": "out_of_order"}) == 1
    assert restored.rejected["out_of_order"] == 1 and sum(restored.rejected.values()) == 1


def test_a_fuzzy_snapshot_holds_every_tensor_the_one_go_snapshot_does_with_the_same_values() -> None:
    e = engine()
    warm(e)
    meta, tensors = e.snapshot()
    snap = FuzzySnapshot(e, chunk_bytes=CHUNK * slot_bytes(e))
    while not snap.step():
        pass
    fmeta, ftensors = snap.result()
    snap.release()
    assert set(ftensors) == set(tensors) | {f"g{F}.fence.last_ts" for F in e.groups}
    for k, v in tensors.items():
        assert ftensors[k].dtype == v.dtype and torch.equal(ftensors[k].nan_to_num(), v.nan_to_num()), k
    assert {k: v for k, v in fmeta.items() if k != "fuzzy"} == {
        **meta, "groups": {F: {**g, "fields": [tuple(f) for f in g["fields"]]} for F, g in meta["groups"].items()}}
