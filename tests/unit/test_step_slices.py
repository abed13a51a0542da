"""Bank.step and DSPOT's moving mean run large batches in slices: every row's result is the unsliced one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sentinel.detect.thresholds as thresholds
import sentinel.model.bank as bank_mod
from sentinel.model.bank import Bank
from sentinel.model.cells import Dims

S = 300


def _bank(wd: str) -> Bank:
    b = Bank(Dims(2, 8, 4, "lstm", 500.0, 0.3, 3.0, 0.05, 20.0, 0.1), device="cpu", capacity=1, weight_dtype=wd)
    for _ in range(S):
        b.add()
    g = torch.Generator().manual_seed(1)
    sl = np.arange(S)
    b.load(sl, {k: torch.randn((S, *b.t[k].shape[1:]), generator=g) * 0.2 for k in ("W", "b", "D", "d")},
           torch.full((S, 2), 10.0), torch.ones(S, 2))
    b.reset_state(sl)
    return b


def _run(wd: str) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    b, out = _bank(wd), []
    perm = rng.permutation(S)[:250]
    for i in range(6):
        x = (10 + rng.standard_normal((S, 2))).astype(np.float32)
        if i == 2:
            x[5:200:7, 1] = np.nan  # one slice missing a field, the others not: the batch's path is kept
        s = np.arange(S) if i % 2 == 0 else perm
        f, e = b.step(s, x[s], rng.random(len(s)) < 0.1)
        out += [f.numpy().copy(), e.numpy().copy()]
    return out + [v.float().numpy().copy() for v in b.t.values()]


@pytest.mark.parametrize("wd", ["float32", "bfloat16"])
def test_a_sliced_bank_step_gives_every_row_the_unsliced_result(wd: str, monkeypatch: pytest.MonkeyPatch) -> None:
    whole = _run(wd)
    monkeypatch.setattr(bank_mod, "STEP_SLICE", 64)
    for a, b in zip(whole, _run(wd), strict=True):
        np.testing.assert_array_equal(a, b)


def _dspot() -> list[np.ndarray]:
    rng = np.random.default_rng(2)
    th = thresholds.SpotThresholds(1e-3, 0.98, depth=16, max_peaks=64, capacity=S)
    th.calibrate(np.arange(S), [rng.gamma(2.0, 1.0, 200) for _ in range(S)])
    out = []
    for _ in range(5):
        p, t = th.update(np.arange(S), rng.gamma(2.0, 1.0, S))
        out += [p, t]
    return out + [v.copy() for v in th.a.values()]


def test_dspots_sliced_moving_mean_is_the_unsliced_one(monkeypatch: pytest.MonkeyPatch) -> None:
    whole = _dspot()
    monkeypatch.setattr(thresholds, "SLICE", 7)
    for a, b in zip(whole, _dspot(), strict=True):
        np.testing.assert_array_equal(a, b)
