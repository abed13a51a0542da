"""Batched training: deterministic, per-stream independent, learns, stops early, honours loss_mask."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from sentinel.model.cells import Dims, conditional_matrix, init_params, normalise
from sentinel.model.train import (
    PARAM_KEYS,
    TrainJob,
    TrainResult,
    TrainSettings,
    _val_loss,
    normalisers,
    resolve_device,
    train,
)

DIMS = Dims(1, 8, 4)
FAST = TrainSettings(epochs=3, bptt=16, segments=4, lr=0.02, patience=10, val_fraction=0.2, seed=3)


def signal(n: int, L: int = 256, F: int = 1, seed: int = 0, noise: float = 0.05) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(L)[None, :, None]
    phase = rng.uniform(0, 6, (n, 1, F))
    amp = rng.uniform(1, 5, (n, 1, F))
    off = rng.uniform(-10, 10, (n, 1, F))
    return (off + amp * np.sin(2 * np.pi * t / 16 + phase) + noise * rng.standard_normal((n, L, F))).astype(np.float32)


def job_of(values: np.ndarray, seeds: list[int], dims: Dims = DIMS, mask: np.ndarray | None = None, **kw) -> TrainJob:
    m = ~np.isnan(values).all(-1) if mask is None else mask
    return TrainJob(dims=dims, seeds=seeds, values=values, loss_mask=m, **kw)


def test_same_job_twice_gives_identical_weights() -> None:
    v = signal(3)
    a = train(job_of(v, [1, 2, 3]), FAST)
    b = train(job_of(v, [1, 2, 3]), FAST)
    for k in PARAM_KEYS:
        assert np.array_equal(a.params[k], b.params[k]), k
    assert np.array_equal(a.val_loss, b.val_loss)
    assert a.epochs == b.epochs == FAST.epochs


def test_different_seed_gives_different_weights() -> None:
    v = signal(1)
    a = train(job_of(v, [1]), FAST)
    b = train(job_of(v, [2]), FAST)
    assert not np.array_equal(a.params["W"], b.params["W"])


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_streams_weights_do_not_depend_on_its_batch_mates(cell: str) -> None:
    dims = Dims(2, 8, 4, cell)
    v = signal(3, F=2, seed=1)
    v[2, :40] = np.nan  # a shorter neighbour
    alone = train(job_of(v[:1], [11], dims), FAST)
    batch = train(job_of(v, [11, 12, 13], dims), FAST)
    for k in PARAM_KEYS:
        np.testing.assert_allclose(batch.params[k][0], alone.params[k][0], atol=2e-5, rtol=1e-4, err_msg=k)
    np.testing.assert_allclose(batch.val_loss[0], alone.val_loss[0], rtol=1e-4)
    np.testing.assert_array_equal(batch.mean[0], alone.mean[0])
    np.testing.assert_array_equal(batch.std[0], alone.std[0])


def test_early_stopped_stream_keeps_its_weights_while_batch_mates_train_on() -> None:
    """A stream that runs out of patience early gets the same weights alone and in a batch."""
    dims = Dims(2, 8, 4)
    v = signal(3, F=2, seed=3)  # a seed where stream A stops before its batch mates (asserted below)
    v[2, :40] = np.nan
    s = dataclasses.replace(FAST, epochs=30, patience=1)
    alone = train(job_of(v[:1], [11], dims), s)
    batch = train(job_of(v, [11, 12, 13], dims), s)
    assert alone.epochs < batch.epochs  # the situation under test: A stopped, the batch went on
    for k in PARAM_KEYS:
        np.testing.assert_allclose(batch.params[k][0], alone.params[k][0], atol=2e-5, rtol=1e-4, err_msg=k)
    assert batch.val_loss[0] == pytest.approx(alone.val_loss[0], rel=1e-4)


def test_loss_decreases_on_a_learnable_signal() -> None:
    v = signal(2, L=384)
    s = dataclasses.replace(FAST, epochs=6)
    res = train(job_of(v, [5, 6]), s)
    # held-back error of the initial weights, measured the same way
    n_val = round(v.shape[1] * s.val_fraction)
    n_tr = v.shape[1] - n_val
    mean, std = normalisers(v[:, :n_tr], np.ones(v.shape[:2], bool)[:, :n_tr])
    X = torch.from_numpy((v - mean[:, None]) / std[:, None])
    M = torch.ones(v.shape[:2], dtype=torch.bool)
    init = init_params(DIMS, [5, 6])
    before = _val_loss(DIMS, init, X[:, :n_tr], X[:, n_tr:], M[:, n_tr:], s.prediction_weight).numpy()
    assert np.all(res.val_loss < 0.5 * before), (res.val_loss, before)
    assert res.history[-1] < res.history[0]
    assert np.all(np.isnan(res.champion_val_loss))
    assert res.accepted.all()


def test_early_stopping_stops_after_patience_epochs_without_improvement() -> None:
    v = signal(2)
    s = dataclasses.replace(FAST, epochs=50, patience=2, lr=1e-12, weight_decay=0.0)
    res = train(job_of(v, [1, 2]), s)
    assert res.epochs == 3  # epoch 1 sets the best; epochs 2 and 3 do not improve it
    assert len(res.history) == 3


def test_fully_masked_history_leaves_weights_at_their_initial_values() -> None:
    """Samples outside loss_mask contribute nothing to the loss (weight decay off to see it)."""
    v = signal(2)
    mask = np.zeros(v.shape[:2], bool)
    s = dataclasses.replace(FAST, weight_decay=0.0)
    res = train(job_of(v, [7, 8], mask=mask), s)
    init = init_params(DIMS, [7, 8])
    for k in PARAM_KEYS:
        np.testing.assert_array_equal(res.params[k], init[k].numpy(), err_msg=k)


def test_alerted_samples_are_left_out_of_loss_and_normalisers() -> None:
    v = signal(1, L=256)
    spiked = v.copy()
    spiked[0, 60:80] += 500.0  # an anomaly that alerted
    mask = np.ones(v.shape[:2], bool)
    mask[0, 60:80] = False
    res = train(job_of(spiked, [4], mask=mask), FAST)
    # normalisers come from every usable sample (held-back tail included), never the alerted ones
    keep = np.ones(256, bool)
    keep[60:80] = False
    np.testing.assert_allclose(res.mean[0], v[0][keep].mean(0), rtol=1e-4)
    np.testing.assert_allclose(res.std[0], v[0][keep].std(0), rtol=1e-3)
    # unmasked, the spike dominates the normalisers
    res_unmasked = train(job_of(spiked, [4]), FAST)
    assert res_unmasked.std[0, 0] > 10 * res.std[0, 0]


def test_champion_is_scored_and_accepted_logic() -> None:
    v = signal(2)
    first = train(job_of(v, [1, 2]), FAST)
    champ = {k: first.params[k] for k in PARAM_KEYS} | {"mean": first.mean, "std": first.std}
    has = np.array([True, False])
    s = dataclasses.replace(FAST, epochs=1, lr=1e-9)
    second = train(job_of(v, [1, 2], champion=champ, has_champion=has), s)
    assert np.isfinite(second.champion_val_loss[0]) and np.isnan(second.champion_val_loss[1])
    # warm-started from the champion with a negligible step: both score about the same held-back data
    assert second.champion_val_loss[0] == pytest.approx(second.val_loss[0], rel=0.25)
    np.testing.assert_allclose(second.params["W"][0], first.params["W"][0], atol=1e-6)
    assert bool(second.accepted[1])


@pytest.mark.parametrize(("val", "champ", "accepted"), [
    (1.0, np.nan, True),     # no champion
    (0.5, 1.0, True),        # better
    (1.0, 1.0, True),        # equal
    (1.015, 1.0, True),      # within the 2% tolerance
    (1.03, 1.0, False),      # worse by more than 2%
    (np.inf, 1.0, False),
])
def test_accepted(val: float, champ: float, accepted: bool) -> None:
    r = TrainResult(params={}, mean=np.zeros((1, 1)), std=np.ones((1, 1)), val_loss=np.array([val]),
                    champion_val_loss=np.array([champ]), epochs=1, seconds=0.0)
    assert bool(r.accepted[0]) is accepted


def test_normalisers_handle_constant_and_empty_streams() -> None:
    v = np.array([[[5.0], [5.0], [5.0]], [[np.nan], [np.nan], [np.nan]]], np.float32)
    mean, std = normalisers(v, np.ones((2, 3), bool))
    assert mean[0, 0] == 5.0 and std[0, 0] > 0 and np.isfinite(std).all()
    assert mean[1, 0] == 0.0 and std[1, 0] > 0


def test_resolve_device() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError):
            resolve_device("cuda")


# -- the fast sequence code equals the tick-by-tick math it replaced ----------------------------
def _run_reference(dims: Dims, p: dict, X: torch.Tensor, M: torch.Tensor, state: tuple, pw: float) -> tuple:
    """The trainer's original loop: cell, decoder and errors one tick at a time (cells.py)."""
    from sentinel.model.cells import cell_step, decode, tick_errors

    h, c, win, pred_prev = state
    S, B, T, _F = X.shape
    loss, count = X.new_zeros(S, B), X.new_zeros(S, B)
    for t in range(T):
        x = X[:, :, t]
        x_in = torch.where(torch.isnan(x), pred_prev.detach(), x)
        h, c = cell_step(dims.cell, p["W"], p["b"], x_in, h, c)
        win = torch.cat((win[:, :, 1:], x[:, :, None, :]), 2)
        rec, pred = decode(p["D"], p["d"], h, dims.window, dims.fields)
        _, e = tick_errors(x, pred_prev, win, rec, pw)
        loss = loss + torch.where(M[:, :, t], e, torch.zeros_like(e))
        count = count + M[:, :, t].to(X.dtype)
        pred_prev = pred
    return loss, count, (h, c, win, pred_prev)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("streams", [1, 3])
@pytest.mark.parametrize("fused", [True, False])  # torch's kernel per stream, or the batched loop
@pytest.mark.parametrize("missing", [False, True])
def test_chunk_forward_and_gradients_equal_the_tick_by_tick_loop(cell: str, streams: int, fused: bool, missing: bool,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import sentinel.model.sequence as seq
    from sentinel.model.sequence import _run, _zero_state

    monkeypatch.setattr(seq, "FUSED_MAX", 64 if fused else 0)
    dims = Dims(2, 8, 4, cell)
    v = signal(streams, L=60, F=2, seed=2)
    X = torch.from_numpy(v).reshape(streams, 2, 30, 2)
    if missing:
        X[0, 0, 5, 1] = float("nan")
        X[-1, 1, 10:14] = float("nan")
    M = torch.rand(streams, 2, 30, generator=torch.Generator().manual_seed(0)) > 0.2
    init = init_params(dims, list(range(streams)))
    results = []
    for fn in (_run, _run_reference):
        p = {k: t.clone().requires_grad_(True) for k, t in init.items()}
        st = _zero_state(dims, streams, 2, torch.device("cpu"))
        # two chunks: the state carried from the first is where the second starts
        l1, c1, st = fn(dims, p, X[:, :, :12], M[:, :, :12], st, 1.0) if fn is _run_reference else fn(
            dims, p, X[:, :, :12], M[:, :, :12], st, 1.0, 0.0, True)
        l2, c2, st = fn(dims, p, X[:, :, 12:], M[:, :, 12:], st, 1.0) if fn is _run_reference else fn(
            dims, p, X[:, :, 12:], M[:, :, 12:], st, 1.0, 0.0, True)
        (l1.sum() + l2.sum()).backward()
        results.append((l1 + l2, c1 + c2, st, {k: t.grad for k, t in p.items()}))
    (la, ca, sa, ga), (lb, cb, sb, gb) = results
    torch.testing.assert_close(la, lb, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ca, cb)
    for a, b in zip(sa, sb, strict=True):
        if a is not None:
            torch.testing.assert_close(a.detach(), b.detach(), atol=1e-5, rtol=1e-5, equal_nan=True)
    for k in PARAM_KEYS:
        torch.testing.assert_close(ga[k], gb[k], atol=1e-4, rtol=1e-4, msg=k)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("scoring", [(0.0, 0.0, -1.0), (16.0, 0.5, -1.0), (16.0, 0.5, 0.1)],
                         ids=["fixed-mean", "baseline+level", "baseline+conditional-level"])
def test_rewarm_equals_the_scoring_banks_run_sequence(cell: str, fused: bool, scoring: tuple[float, float, float],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Errors and final state of the trainer's rewarm equal Bank.run_sequence's (left padding skipped),
    with the fixed training mean, with the slow baseline and level term, and with the level term's
    multivariate (conditional) part."""
    import sentinel.model.sequence as seq
    from sentinel.model.bank import Bank
    from sentinel.model.train import rewarm

    monkeypatch.setattr(seq, "FUSED_MAX", 64 if fused else 0)
    streams = 3
    dims = Dims(2, 8, 4, cell, baseline_halflife=scoring[0], level_weight=scoring[1], level_k=0.5,
                baseline_alerting_rate=0.0, level_halflife=scoring[0] / 4, level_shrink=scoring[2])
    v = signal(streams, L=80, F=2, seed=4)
    v[1, 50:] += 3.0            # a shift: the baseline moves and the level term is non-zero
    v[0, :25] = np.nan          # a shorter history: left padding
    v[-1, 40, 1] = np.nan       # one missing field
    init = init_params(dims, list(range(streams)))
    params = {k: t.numpy() for k, t in init.items()}
    mean, std = normalisers(v, ~np.isnan(v).all(-1))
    cond = None
    if dims.conditional:
        cond = conditional_matrix(normalise(v, mean, std, dims), ~np.isnan(v).all(-1), dims.level_shrink)
        assert not np.allclose(cond, np.eye(2))  # the fields co-vary: the term is not the identity
    err, state = rewarm(dims, params, mean, std, v, 1.0, cond=cond)
    bank = Bank(dims, prediction_weight=1.0, capacity=streams)
    slots = np.array([bank.add() for _ in range(streams)])
    bank.load(slots, init, torch.from_numpy(mean), torch.from_numpy(std),
              None if cond is None else torch.from_numpy(cond))
    _fe, ref = bank.run_sequence(slots, v)
    np.testing.assert_allclose(err, ref.numpy(), atol=1e-5, rtol=1e-4)
    assert np.all(err[0, :25] == 0)
    for k, t in bank.state(slots).items():
        np.testing.assert_allclose(state[k], t.numpy(), atol=1e-5, rtol=1e-4, err_msg=k)


def test_fused_and_batched_recurrence_give_the_same_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Up to FUSED_MAX streams run through torch's fused kernel; more through one batched loop: same result."""
    import sentinel.model.sequence as T

    v = signal(2, F=1, seed=5)
    fused = train(job_of(v, [1, 2]), FAST)
    monkeypatch.setattr(T, "FUSED_MAX", 0)
    looped = train(job_of(v, [1, 2]), FAST)
    for k in PARAM_KEYS:
        np.testing.assert_allclose(fused.params[k], looped.params[k], atol=2e-5, rtol=1e-4, err_msg=k)
    np.testing.assert_allclose(fused.errors, looped.errors, atol=1e-4, rtol=1e-3)


def test_adamw_makes_torchs_update_bit_for_bit() -> None:
    from sentinel.model.sequence import AdamW

    g = torch.Generator().manual_seed(0)
    a = [torch.randn(3, 5, generator=g), torch.randn(7, generator=g)]
    b = [t.clone() for t in a]
    mine = AdamW(a, lr=0.01, weight_decay=1e-4)
    ref = torch.optim.AdamW(b, lr=0.01, weight_decay=1e-4)
    for _ in range(5):
        grads = [torch.randn(t.shape, generator=g) for t in a]
        for p, q, gr in zip(a, b, grads, strict=True):
            p.grad, q.grad = gr.clone(), gr.clone()
        mine.step()
        ref.step()
        for p, q in zip(a, b, strict=True):
            assert torch.equal(p, q)
