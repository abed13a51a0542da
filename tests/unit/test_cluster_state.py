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


def test_a_published_model_carries_the_multivariate_level_term() -> None:
    """`train --publish` ships bank.params (weights, normalisers and the level term's precision);
    a scorer that applies it gets the same precision, not the identity."""
    from sentinel.cluster.publish import apply_published, dumps_model

    keys = KEYS[:2]
    trainer, scorer = engine(), engine()
    feed(trainer, keys, 0, 80, F=3)  # trains inline: ready, with a precision from the training data
    feed(scorer, keys, 0, 10, F=3)
    g = trainer.groups[3]
    slots = np.array([trainer.index[k][1] for k in keys])
    assert g.a["ready"][slots].all()
    ps = g.bank.params(slots)
    assert not torch.allclose(ps["cond"], torch.eye(3).expand(2, 3, 3))
    ps["val_loss"] = torch.zeros(2, dtype=torch.float64)
    data = dumps_model(1, 0, {3: ([str(k) for k in keys], ps)})
    assert apply_published(scorer, data, 80.0) == {"success": 2, "rejected": 0}  # no champion yet
    got = scorer.groups[3].bank.t["cond"][[scorer.index[k][1] for k in keys]]
    torch.testing.assert_close(got, ps["cond"])


def test_a_published_model_goes_through_champion_challenger_on_the_scorers_history() -> None:
    """A published version worse than a stream's champion on the scorer's own recent history is
    refused (the stream keeps its weights); one as good as the champion is taken."""
    from sentinel.cluster.publish import apply_published, dumps_model

    keys = KEYS[:2]
    trainer, scorer = engine(), engine()
    feed(trainer, keys, 0, 80, F=3)
    feed(scorer, keys, 0, 80, F=3)  # the same history: the scorer's champions equal the trainer's weights
    ps = trainer.groups[3].bank.params(np.array([trainer.index[k][1] for k in keys]))
    ss = [scorer.index[k][1] for k in keys]
    before = scorer.groups[3].bank.t["W"][ss].clone()
    bad = {k: v.clone() for k, v in ps.items()}
    bad["W"] = torch.randn_like(bad["W"], generator=torch.Generator().manual_seed(0)) * 3.0
    assert apply_published(scorer, dumps_model(1, 0, {3: ([str(k) for k in keys], bad)}), 80.0) == {
        "success": 0, "rejected": 2}
    torch.testing.assert_close(scorer.groups[3].bank.t["W"][ss], before)
    assert apply_published(scorer, dumps_model(2, 0, {3: ([str(k) for k in keys], ps)}), 81.0) == {
        "success": 2, "rejected": 0}
    torch.testing.assert_close(scorer.groups[3].bank.t["W"][ss].float(), ps["W"].float())
