"""Partition checkpoints: an engine cut into partitions and joined again scores exactly as the original."""

from __future__ import annotations

import functools
import operator

import numpy as np
import pytest
import torch

from sentinel.cluster import codec
from sentinel.cluster import state as pstate
from sentinel.cluster.partitions import owned, owner_of, partition_of
from sentinel.errors import CheckpointError
from sentinel.runtime.engine import Engine
from sentinel.types import Sample, StreamKey
from tests.unit.test_engine import engine, feed

P = 8
KEYS = [StreamKey.of("pump", site=f"s{i % 3}", pump=f"p{i}") for i in range(8)]  # the config allows 8


def _outs(e: Engine, start: int, n: int) -> dict[StreamKey, list[float]]:
    got: dict[StreamKey, list[float]] = {k: [] for k in KEYS}
    for out in feed(e, KEYS, start, n):
        for k, s in zip(KEYS, out.score, strict=True):
            got[k].append(float(s))
    return got


def test_split_then_merge_restores_an_engine_that_scores_like_the_original() -> None:
    a = engine()
    feed(a, KEYS, 0, 80)  # trained (min_history 64) and scoring
    a.remove_stream(KEYS[5])  # a free slot in the middle must not travel
    keys = [k for k in KEYS if k != KEYS[5]]
    parts = pstate.split(a.snapshot(), lambda ks: partition_of(ks, P), range(P))
    assert sum(len([k for k in m["groups"].get("1", {"keys": []})["keys"]]) for m, _ in parts.values()) == len(keys)
    blobs = [pstate.dumps(pstate.PartitionState(p, 100 + p, m, t)) for p, (m, t) in parts.items()]
    back = [pstate.loads(b) for b in blobs]
    assert [s.covered for s in back] == [100 + p for p in range(P)]
    b = engine()
    b.restore(*pstate.merge((s.meta, s.tensors) for s in back))
    assert set(b.index) == set(keys) and b.model_version == a.model_version
    outs_a = feed(a, keys, 80, 20)
    outs_b = feed(b, keys, 80, 20)
    for oa, ob in zip(outs_a, outs_b, strict=True):
        np.testing.assert_array_equal(oa.score, ob.score)
        np.testing.assert_array_equal(oa.threshold, ob.threshold)
        assert [e.key for e in oa.events] == [e.key for e in ob.events]


def test_a_subset_of_partitions_restores_only_their_streams() -> None:
    a = engine()
    feed(a, KEYS, 0, 70)
    mine = owned(0, 2, P)
    parts = pstate.split(a.snapshot(), lambda ks: partition_of(ks, P), mine)
    b = engine()
    b.restore(*pstate.merge(parts.values()))
    assert set(b.index) == {k for k in KEYS if owner_of(partition_of(k, P), 2) == 0}


def test_a_damaged_or_foreign_partition_checkpoint_is_refused() -> None:
    with pytest.raises(CheckpointError, match="unreadable"):
        pstate.loads(b"junk")
    import io
    buf = io.BytesIO()
    torch.save({"format": "other"}, buf)
    with pytest.raises(CheckpointError, match="not a Sentinel partition"):
        pstate.loads(buf.getvalue())


def test_codec_keeps_every_streams_order_and_missing_values() -> None:
    s = [Sample(KEYS[i % 3], float(i), ("a", "b"), (float(i), float("nan") if i % 2 else 1.0)) for i in range(9)]
    out = codec.decode(codec.encode(s))
    for k in KEYS[:3]:
        assert [x.ts for x in out if x.key == k] == [x.ts for x in s if x.key == k]
    assert np.isnan(out[1].values[1]) or np.isnan(next(x for x in out if x.ts == 1.0).values[1])
    with pytest.raises(ValueError, match="version"):
        codec.decode(b'{"v": 99, "s": []}')


def test_scaling_out_moves_only_partitions_the_new_scorer_wins() -> None:
    for n in (1, 2, 3, 7):
        moved = [p for p in range(64) if owner_of(p, n) != owner_of(p, n + 1)]
        assert moved and all(owner_of(p, n + 1) == n for p in moved)
        assert sorted(functools.reduce(operator.iadd, (owned(i, n, 64) for i in range(n)), [])) == list(range(64))
