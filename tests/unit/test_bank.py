"""The model bank: batched scoring equals per-stream scoring, stepping equals the training forward."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.model.bank import Bank
from sentinel.model.cells import Dims, init_params
from sentinel.model.train import _run, _zero_state

ATOL = 1e-5


def make_bank(dims: Dims, n: int, seed0: int = 0, capacity: int = 4, pw: float = 1.0) -> tuple[Bank, np.ndarray]:
    """A bank with ``n`` streams of distinct random weights and normalisers."""
    bank = Bank(dims, prediction_weight=pw, capacity=capacity)
    slots = np.array([bank.add() for _ in range(n)])
    p = init_params(dims, [seed0 + i for i in range(n)])
    g = torch.Generator().manual_seed(seed0 + 1000)
    p["b"] = p["b"] + 0.1 * torch.randn(p["b"].shape, generator=g)
    p["d"] = 0.1 * torch.randn(p["d"].shape, generator=g)
    mean = torch.randn(n, dims.fields, generator=g)
    std = torch.rand(n, dims.fields, generator=g) + 0.5
    bank.load(slots, p, mean, std)
    return bank, slots


def series(n: int, T: int, F: int, seed: int = 0, nan_frac: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(T)[None, :, None]
    x = np.sin(t / 5.0 + rng.uniform(0, 6, (n, 1, F))) + 0.1 * rng.standard_normal((n, T, F))
    if nan_frac:
        x[rng.random((n, T, F)) < nan_frac] = np.nan
    return x.astype(np.float32)


def single_bank_from(bank: Bank, slot: int) -> Bank:
    """A fresh one-stream bank holding ``slot``'s weights and normalisers."""
    one = Bank(bank.dims, prediction_weight=bank.prediction_weight, capacity=1)
    s = one.add()
    p = bank.params(np.array([slot]))
    one.load(np.array([s]), {k: p[k] for k in ("W", "b", "D", "d")}, p["mean"], p["std"])
    return one


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("F", [1, 3])
@pytest.mark.parametrize("halflife", [0.0, 4.0])
def test_batch_equals_each_alone_contiguous(cell: str, F: int, halflife: float) -> None:
    dims = Dims(F, 8, 4, cell, baseline_halflife=halflife, level_weight=0.5 if halflife else 0.0)
    n, T = 5, 12
    bank, slots = make_bank(dims, n)
    assert slots.tolist() == list(range(n))  # the contiguous fast path
    xs = series(n, T, F, nan_frac=0.1 if F > 1 else 0.0)
    fe_b, e_b = bank.run_sequence(slots, xs)
    for i in range(n):
        one = single_bank_from(bank, i)  # same weights, fresh state
        fe_1, e_1 = one.run_sequence(np.array([0]), xs[i : i + 1])
        torch.testing.assert_close(e_b[i], e_1[0], atol=ATOL, rtol=1e-5)
        torch.testing.assert_close(fe_b[i], fe_1[0], atol=ATOL, rtol=1e-5)
    assert torch.isfinite(e_b).all()
    assert (e_b > 0).any()


def test_baseline_follows_slow_drift_but_not_a_step() -> None:
    """Inputs are normalised against a slow average: a drift slower than the half-life stays near 0,
    a step stands out, and the baseline is state that a reset returns to the training mean."""
    dims = Dims(1, 8, 4, baseline_halflife=64.0)
    bank, slots = make_bank(dims, 1)
    mean = float(bank.t["mean"][0, 0])
    std = float(bank.t["std"][0, 0])
    drift = (mean + std * np.linspace(0, 20, 2000)).astype(np.float32).reshape(1, -1, 1)  # 20 std over 2000 ticks
    bank.run_sequence(slots, drift)
    lag = (float(drift[0, -1, 0]) - float(bank.t["base"][0, 0])) / std
    assert 0 < lag < 1.5  # about rate x time constant: 0.01 std/tick x 92 ticks
    base = float(bank.t["base"][0, 0])
    bank.step(slots, np.array([[base + 10 * std]], dtype=np.float32))
    assert float(bank.t["win"][0, 0, -1, 0]) == pytest.approx(10.0, rel=1e-4)  # the step, in std units
    bank.reset_state(slots)
    assert float(bank.t["base"][0, 0]) == pytest.approx(mean)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_noncontiguous_subset_equals_alone_and_leaves_others_untouched(cell: str) -> None:
    dims = Dims(2, 8, 4, cell)
    n, T = 8, 10
    bank, slots = make_bank(dims, n)
    ref, _ = make_bank(dims, n)
    xs = series(n, T, 2, seed=3)
    sub = np.array([1, 4, 6])
    untouched = np.setdiff1d(slots, sub)
    before = bank.state(untouched)
    for t in range(T):
        fe, e = bank.step(sub, xs[sub, t])
        for j, s in enumerate(sub):
            fe1, e1 = ref.step(np.array([s]), xs[s : s + 1, t])
            torch.testing.assert_close(e[j], e1[0], atol=ATOL, rtol=1e-5)
            torch.testing.assert_close(fe[j], fe1[0], atol=ATOL, rtol=1e-5)
    after = bank.state(untouched)
    for k in before:
        assert torch.equal(torch.nan_to_num(before[k], nan=-7.0), torch.nan_to_num(after[k], nan=-7.0)), k
    # and the stepped slots did move
    assert not torch.equal(bank.state(sub)["h"], torch.zeros_like(bank.state(sub)["h"]))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_step_equals_run_sequence_equals_training_forward(cell: str) -> None:
    dims = Dims(2, 8, 5, cell)
    n, T = 3, 20
    pw = 0.7
    bank_a, slots = make_bank(dims, n, pw=pw)
    bank_b, _ = make_bank(dims, n, pw=pw)
    xs = series(n, T, 2, seed=7, nan_frac=0.15)
    xs[:, :, 0][xs[:, :, 1] != xs[:, :, 1]] = 0.5  # never both fields missing: every tick is present
    _fe_seq, e_seq = bank_a.run_sequence(slots, xs)
    e_steps = torch.stack([bank_b.step(slots, xs[:, t])[1] for t in range(T)], 1)
    torch.testing.assert_close(e_seq, e_steps, atol=1e-6, rtol=1e-6)

    # training forward on the same weights, B = 1, in normalised units, one tick per call
    p = bank_a.params(slots)
    params = {k: p[k] for k in ("W", "b", "D", "d")}
    X = ((torch.from_numpy(xs) - p["mean"][:, None]) / p["std"][:, None])[:, None]  # [S,1,T,F]
    M = torch.ones(n, 1, T, dtype=torch.bool)
    state = _zero_state(dims, n, 1, torch.device("cpu"))
    e_train = []
    for t in range(T):
        loss, cnt, state = _run(dims, params, X[:, :, t : t + 1], M[:, :, t : t + 1], state, pw, 0.0, False)
        assert torch.equal(cnt, torch.ones_like(cnt))
        e_train.append(loss[:, 0])
    torch.testing.assert_close(torch.stack(e_train, 1), e_seq, atol=ATOL, rtol=1e-5)
    # and the whole sequence in one call: same loss sum, same final state as the bank
    loss, cnt, (h, c, win, pred) = _run(dims, params, X, M, _zero_state(dims, n, 1, torch.device("cpu")),
                                        pw, 0.0, False)
    torch.testing.assert_close(loss[:, 0], e_seq.sum(1), atol=1e-4, rtol=1e-5)
    st_ = bank_a.state(slots)
    torch.testing.assert_close(st_["h"], h, atol=ATOL, rtol=1e-5)
    torch.testing.assert_close(st_["pred"], pred, atol=ATOL, rtol=1e-5)
    if cell == "lstm":
        torch.testing.assert_close(st_["c"], c, atol=ATOL, rtol=1e-5)
    # the window holds the last K normalised inputs (NaN where missing)
    torch.testing.assert_close(st_["win"], win, atol=ATOL, rtol=1e-5, equal_nan=True)


def test_join_and_leave_do_not_change_a_streams_numbers() -> None:
    dims = Dims(1, 8, 4)
    T = 16
    xs = series(6, T, 1, seed=11)
    # reference: stream A alone
    solo, _ = make_bank(dims, 1, seed0=42)
    _, e_solo = solo.run_sequence(np.array([0]), xs[:1])
    # churned: A shares the bank with others joining and leaving between ticks
    bank = Bank(dims, capacity=2)
    a = bank.add()
    ref, _ = make_bank(dims, 1, seed0=42)
    rp = ref.params(np.array([0]))
    bank.load(np.array([a]), {k: rp[k] for k in ("W", "b", "D", "d")}, rp["mean"], rp["std"])
    others: list[int] = []
    e_churn = []
    rng = np.random.default_rng(0)
    for t in range(T):
        if t % 3 == 0:  # a neighbour joins (may grow the bank: capacity doubles)
            s = bank.add()
            bank.load(np.array([s]), init_params(dims, [100 + t]), torch.zeros(1, 1), torch.ones(1, 1))
            others.append(s)
        if t % 4 == 3 and others:  # a neighbour leaves
            bank.remove(others.pop(0))
        slots = np.array(sorted([a, *others]))
        x = np.concatenate([xs[:1, t], rng.standard_normal((len(others), 1)).astype(np.float32)])
        order = [a, *others]
        x_sorted = x[np.argsort(order)]
        _, e = bank.step(slots, x_sorted)
        e_churn.append(float(e[list(slots).index(a)]))
    assert bank.capacity > 2  # it grew while A was live
    np.testing.assert_allclose(np.array(e_churn), e_solo[0].numpy(), atol=ATOL, rtol=1e-5)


def test_reused_slot_starts_from_reset_state() -> None:
    dims = Dims(1, 8, 4)
    bank, slots = make_bank(dims, 2)
    bank.run_sequence(slots, series(2, 5, 1))
    bank.remove(1)
    s = bank.add()
    assert s == 1
    st_ = bank.state(np.array([s]))
    assert torch.count_nonzero(st_["h"]) == 0 and torch.count_nonzero(st_["pred"]) == 0
    assert torch.isnan(st_["win"]).all()


def test_nan_fields_are_masked_and_shares_sum_to_one() -> None:
    dims = Dims(3, 8, 4)
    bank, slots = make_bank(dims, 4)
    xs = series(4, 10, 3, seed=5)
    bank.run_sequence(slots, xs[:, :9])
    x = xs[:, 9].copy()
    x[0, 1] = np.nan
    x[1, [0, 2]] = np.nan
    x[3, 0] = np.nan
    fe, e = bank.step(slots, x)
    assert torch.isfinite(fe).all() and torch.isfinite(e).all()
    assert fe[0, 1] == 0 and fe[1, 0] == 0 and fe[1, 2] == 0 and fe[3, 0] == 0
    assert (fe[2] > 0).all()
    # the total is the mean over observed fields
    obs = torch.from_numpy(~np.isnan(x))
    torch.testing.assert_close(e, fe.sum(1) / obs.sum(1), atol=1e-6, rtol=1e-6)
    shares = fe / fe.sum(1, keepdim=True)
    torch.testing.assert_close(shares.sum(1), torch.ones(4), atol=1e-6, rtol=1e-6)


def test_missing_field_is_fed_as_the_models_own_prediction() -> None:
    """A NaN field leaves the state as if the model's prediction had been observed."""
    dims = Dims(2, 8, 4)
    a, slots = make_bank(dims, 1, pw=0.0)
    b, _ = make_bank(dims, 1, pw=0.0)
    xs = series(1, 6, 2, seed=9)
    a.run_sequence(slots, xs)
    b.run_sequence(slots, xs)
    p = a.params(slots)
    pred_norm = a.state(slots)["pred"][0, 0]  # normalised prediction of the next sample
    pred_raw = (pred_norm * p["std"][0] + p["mean"][0]).numpy()
    x_nan = np.array([[np.nan, 0.3]], dtype=np.float32)
    x_pred = np.array([[pred_raw[0], 0.3]], dtype=np.float32)
    a.step(slots, x_nan)
    b.step(slots, x_pred)
    torch.testing.assert_close(a.state(slots)["h"], b.state(slots)["h"], atol=1e-5, rtol=1e-5)


def test_all_nan_rows_in_run_sequence_leave_state_alone() -> None:
    dims = Dims(1, 8, 4)
    bank, slots = make_bank(dims, 2)
    ref, _ = make_bank(dims, 2)
    xs = series(2, 8, 1, seed=2)
    padded = np.concatenate([np.full((2, 3, 1), np.nan, np.float32), xs], 1)
    padded[1, 5] = np.nan  # a hole in stream 1 only
    _fe, e = bank.run_sequence(slots, padded)
    assert torch.count_nonzero(e[:, :3]) == 0 and e[1, 5] == 0
    # stream 0 is the same as without padding
    _, e_ref = ref.run_sequence(slots[:1], xs[:1])
    torch.testing.assert_close(e[0, 3:], e_ref[0], atol=1e-6, rtol=1e-6)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 9), sub_seed=st.integers(0, 10_000), ticks=st.integers(1, 5),
       cell=st.sampled_from(["lstm", "gru"]))
def test_property_any_subset_equals_single_stream_banks(n: int, sub_seed: int, ticks: int, cell: str) -> None:
    dims = Dims(1, 4, 3, cell)
    bank, slots = make_bank(dims, n, seed0=sub_seed)
    rng = np.random.default_rng(sub_seed)
    singles = [single_bank_from(bank, i) for i in range(n)]
    for _ in range(ticks):
        sub = np.flatnonzero(rng.random(n) < 0.6)
        if len(sub) == 0:
            continue
        x = rng.standard_normal((len(sub), 1)).astype(np.float32)
        _, e = bank.step(slots[sub], x)
        for j, i in enumerate(sub):
            _, e1 = singles[i].step(np.array([0]), x[j : j + 1])
            assert abs(float(e[j]) - float(e1[0])) <= 1e-5 + 1e-5 * abs(float(e1[0]))


def test_bytes_per_stream_counts_weights_and_state() -> None:
    dims = Dims(1, 32, 8)
    bank = Bank(dims, capacity=1)
    b = bank.bytes_per_stream()
    H, F, K = 32, 1, 8
    # + mean, std and the conditional level term's F x F matrix
    assert b["model"] == 4 * ((F + H) * 4 * H + 4 * H + H * (K + 1) * F + (K + 1) * F + 2 * F + F * F)
    assert b["state"] == 4 * ((F + H) + H + K * F + F + 3 * F)  # xh holds the last input beside h; + baseline, spread, fast
    assert dims.params_per_stream() == (F + H) * 4 * H + 4 * H + H * (K + 1) * F + (K + 1) * F
