"""The level tail held as fitted (HeldTail): the same probabilities as the SPOT it replaces, without
its peaks; a checkpoint written with the peaks restores; partitions split and merge it."""

from __future__ import annotations

import numpy as np
import torch

from sentinel.cluster.state import merge, split
from sentinel.config import load_config_text
from sentinel.detect.level import SIGMA_FLOOR
from sentinel.detect.thresholds import HeldTail, SpotThresholds
from sentinel.runtime.engine import Engine
from tests.unit.test_level_tail import TRAIN, config, run


def _fleet(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    out = []
    for i in range(n):
        m = [400, 3, 50, 2000, 0][i % 5]  # long, too short, few peaks, more than max_peaks, empty
        x = rng.gamma(1.0 + i % 3, 1.0, m) ** (1 + i % 2)
        if i % 7 == 0 and m:
            x[::11] = np.nan
        out.append(x)
    return out


def test_held_tail_gives_spots_probabilities_and_thresholds_bit_for_bit() -> None:
    rng = np.random.default_rng(11)
    n = 40
    errors = _fleet(rng, n)
    slots = rng.permutation(n)
    spot = SpotThresholds(1e-4, 0.98, 0, 256, capacity=8, sigma_floor=SIGMA_FLOOR)
    held = HeldTail(1e-4, 0.98, 256, capacity=8, sigma_floor=SIGMA_FLOOR)
    spot.calibrate(slots, errors)
    held.calibrate(slots, errors)
    assert "peaks" not in held.a and set(held.a) < set(spot.a)
    for k in held.a:
        np.testing.assert_array_equal(held.a[k][:n], spot.a[k][:n], err_msg=k)
    e = np.concatenate((rng.gamma(2.0, 2.0, (6, n)).ravel(), [0.0, -1.0, 1e6, np.inf]))
    sl = np.concatenate((np.tile(np.arange(n), 6), [0, 1, 2, 3]))
    np.testing.assert_array_equal(held.tail_probability(sl, e), spot.tail_probability(sl, e))
    np.testing.assert_array_equal(held.threshold(np.arange(n)), spot.threshold(np.arange(n)))
    before = {k: v.copy() for k, v in held.a.items()}
    p, t = held.update(np.arange(n), e[:n])
    np.testing.assert_array_equal(p, spot.tail_probability(np.arange(n), e[:n]))
    np.testing.assert_array_equal(t, spot.threshold(np.arange(n)))
    for k, v in held.a.items():  # nothing learned
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    # per stream: the fit's 7 scalars instead of SPOT's 256 float32 peaks and its ring positions
    assert sum(v[0].nbytes for v in held.a.values()) + 1056 == sum(v[0].nbytes for v in spot.a.values())


def _trained() -> tuple[Engine, dict, dict[str, torch.Tensor]]:
    e = Engine(load_config_text(config(True), source="test.yaml"))
    run(True, TRAIN + 5, e)
    meta, tensors = e.snapshot()
    return e, meta, {k: v.clone() for k, v in tensors.items()}


def test_a_checkpoint_with_the_level_tails_peaks_restores_and_partitions_split_and_merge_it() -> None:
    e, meta, tensors = _trained()
    g = next(iter(e.groups.values()))
    assert g.lthr is not None and isinstance(g.lthr, HeldTail) and g.lthr.a["ready"][0]
    F = g.F
    C = int(meta["groups"][str(F)]["capacity"])
    old = dict(tensors)  # as written while the level tail was a SpotThresholds (depth 0)
    old.update({f"g{F}.lthr.peaks": torch.rand(C, 256), f"g{F}.lthr.ppos": torch.zeros(C, dtype=torch.int64),
                f"g{F}.lthr.mwin": torch.full((C, 1), float("nan"), dtype=torch.float64),
                f"g{F}.lthr.mpos": torch.zeros(C, dtype=torch.int64),
                f"g{F}.lthr.m": torch.zeros(C, dtype=torch.float64)})
    probe = np.array([0.0, 0.5, 3.0, 50.0])
    want = g.lthr.tail_probability(np.zeros(4, np.int64), probe)
    for snap in ((meta, old), merge(split((meta, old), lambda k: 0, [0]).values())):
        back = Engine(e.cfg)
        back.restore(*snap)
        gb = next(iter(back.groups.values()))
        assert gb.lthr is not None and "peaks" not in gb.lthr.a
        for k, v in g.lthr.a.items():
            np.testing.assert_array_equal(gb.lthr.a[k][:1], v[:1], err_msg=k)
        np.testing.assert_array_equal(gb.lthr.tail_probability(np.zeros(4, np.int64), probe), want)
