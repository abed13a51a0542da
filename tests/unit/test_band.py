"""The expected band: "outside the band" agrees with "field error above its share of the threshold".

Pinned three ways: on the formula alone, against the real bank's per-field error (so a change
of the score's error that the band does not follow fails here), and through the engine.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sentinel.config import SentinelConfig
from sentinel.detect.band import expected_band, outside, scale_of
from sentinel.model.bank import Bank
from sentinel.model.cells import Dims, init_params
from sentinel.runtime.engine import Engine
from sentinel.runtime.engine import steps as engine_steps
from sentinel.runtime.engine.group import Group
from sentinel.types import Sample, StreamKey


def test_formula_outside_iff_field_error_above_threshold():
    rng = np.random.default_rng(0)
    n, F = 400, 3
    pred = rng.normal(0, 0.5, (n, F))
    base = rng.normal(50, 10, (n, F))
    scale = rng.uniform(0.5, 4, (n, F))
    rest = rng.uniform(0, 0.4, (n, F))
    thr = rng.uniform(0.1, 1.0, n)
    pw = 0.7
    x = base + scale * (pred + rng.normal(0, 1.5, (n, F)))
    fe = pw * ((x - base) / scale - pred) ** 2 + rest  # the error the score uses, per field
    b = expected_band(x, pred, base, scale, fe, thr, pw)
    np.testing.assert_allclose(b.expected, base + scale * pred)
    above = fe > thr[:, None]
    margin = np.abs(fe - thr[:, None]) > 1e-9
    assert (outside(x, b) == above)[margin].all()
    assert above.any() and (~above).any()
    # rest alone above the share: the band shrinks to the expected value
    big = rest > thr[:, None]
    np.testing.assert_allclose(b.lower[big], b.expected[big])
    # every value inside its band: the mean error (what the threshold is on) is within it
    inside_all = ~outside(x, b).any(1)
    assert (fe[inside_all].mean(1) <= thr[inside_all] + 1e-12).all()


def test_no_band_without_threshold_or_prediction_term():
    one = np.ones((1, 1))
    b = expected_band(one, one * 0, one, one, one, np.array([np.inf]), 1.0)
    assert np.isnan(b.lower).all() and np.isnan(b.upper).all() and b.expected[0, 0] == 1.0
    b = expected_band(one, one * 0, one, one, one, np.array([2.0]), 0.0)
    assert np.isnan(b.lower).all()
    np.testing.assert_allclose(scale_of(np.array([1.0]), np.array([4.0]), 0.0), [1.0])
    np.testing.assert_allclose(scale_of(np.array([1.0]), np.array([4.0]), 0.1), [2.0])


@pytest.mark.parametrize("level_weight", [0.0, 0.25])
def test_bank_field_error_agrees_with_band(level_weight):
    """Against the bank's own error: from one saved state, step each candidate value and compare."""
    F, S = 2, 6
    dims = Dims(F, 8, 4, "lstm", baseline_halflife=64.0, level_weight=level_weight, level_k=1.0)
    bank = Bank(dims, prediction_weight=1.0, capacity=S)
    slots = np.array([bank.add() for _ in range(S)])
    bank.load(slots, init_params(dims, list(range(S))), torch.full((S, F), 5.0), torch.full((S, F), 2.0))
    rng = np.random.default_rng(1)
    for _ in range(20):  # some history, so the window, prediction and baseline are not trivial
        bank.step(slots, 5.0 + 2.0 * rng.normal(size=(S, F)))
    g = Group.__new__(Group)  # the steps read only the bank and F
    g.bank, g.F = bank, F
    saved = bank.state(slots)
    thr = np.full(S, 0.8)
    agree = checked = 0
    for x in np.linspace(-5, 15, 41):
        bank.set_state(slots, {k: v.clone() for k, v in saved.items()})
        pre = engine_steps.expect(g, slots)
        v = np.full((S, F), x)
        v[:, 1] = 5.0 + 0.1 * np.arange(S)  # field 1 near normal, field 0 swept
        fe, _e = bank.step(slots, v)
        fe = fe.numpy().astype(np.float64)
        b = engine_steps.band(g, pre, v, fe, thr)
        clear = np.abs(fe - thr[:, None]) > 1e-4  # away from float32 rounding at the edge
        agree += int(((outside(v, b) == (fe > thr[:, None])) & clear).sum())
        checked += int(clear.sum())
    assert checked > 300 and agree == checked


def _cfg(**model) -> SentinelConfig:
    return SentinelConfig.model_validate({
        "model": {"hidden": 8, "window": 4, **model},
        "train": {"min_history": 256, "min_history_span": 0, "epochs": 15, "retrain_interval": 0,
                  "drift_retrain": False},
        "alerts": {"for": 0, "for_ticks": 0, "false_alerts_per_day": None},
    })


def _train(e: Engine, now: float) -> None:
    from sentinel.model.train import train

    for job in e.due_training(now):
        e.apply_training(job, train(job, e.settings), now)


def test_engine_band_on_normal_data_and_a_spike():
    """Normal data: the value leaves its band exactly when the error is above the threshold (F=1),
    and that is rare; a spike is far outside its band, and it is the alert, named in the event."""
    e = Engine(_cfg())
    key = StreamKey.of("pump", site="a")
    rng = np.random.default_rng(3)
    t = np.arange(1400, dtype=np.float64)
    v = 20 + 3 * np.sin(2 * np.pi * t / 50) + 0.3 * rng.normal(size=len(t))
    v[1300] += 15.0  # the spike
    e.process([Sample(key, float(t[i]), ("pressure",), (float(v[i]),)) for i in range(300)])
    _train(e, 300.0)
    outs, inside_err = [], []
    events = []
    for i in range(300, 1400):
        o = e.process([Sample(key, float(t[i]), ("pressure",), (float(v[i]),))])
        events += o.events
        (_idx, b), = o.bands
        sv = e.stream_view(key)
        assert sv is not None
        assert sv.expected == (float(b.expected[0, 0]),) and sv.lower == (float(b.lower[0, 0]),)
        out_b = bool(outside(np.array([[v[i]]]), b)[0, 0])
        outs.append(out_b)
        inside_err.append(o.error[0] > o.threshold[0])
        if i == 1300:
            assert out_b and o.score[0] >= 0.5
            assert v[i] > b.upper[0, 0] + 10
    outs_a, above = np.array(outs[:1000]), np.array(inside_err[:1000])  # before the spike
    assert (outs_a == above).all()
    assert outs_a.mean() < 0.02  # normal data sits inside its band
    # the band is a band: it brackets the expected value and is narrower than the signal's swing
    ch = e.chart_series(key)
    assert ch is not None and ch.expected is not None and ch.lower is not None and ch.upper is not None
    lo, hi = np.array(ch.lower)[:, 0], np.array(ch.upper)[:, 0]
    width = (hi - lo)[np.isfinite(hi - lo)]
    assert 0 < np.median(width) < 8.0
    fired = [ev for ev in events if ev.status == "firing"]
    assert fired and fired[0].at == 1300.0
    name, value, _exp, lower, upper = fired[0].expected[0]
    assert name == "pressure" and value == pytest.approx(v[1300]) and not lower <= value <= upper


@pytest.mark.slow
@pytest.mark.parametrize("risk", [0.02, 0.005])
def test_band_coverage_on_normal_data_is_what_the_threshold_risk_says(risk):
    """Issue 14: the band contains the value on normal data about as often as the score says.

    The threshold sits at the error whose tail probability is ``detect.threshold.risk`` (the score
    there is ``-log10(risk) / score_decades``), so on normal data a value should fall outside its band
    on about that share of ticks. Four seasonal streams with Gaussian noise, 3,000 ticks each after
    training: the share outside is within a factor of 2.5 of the risk (measured, seed fixed: 0.0371
    at risk 0.02, 0.0094 at 0.005: the band is left about 1.9x as often as nominal, which is the
    threshold's calibration on this data, not the band's), and it is exactly the share whose error
    is above the threshold.
    """
    cfg = SentinelConfig.model_validate({
        "model": {"hidden": 8, "window": 4},
        "train": {"min_history": 256, "min_history_span": 0, "epochs": 15, "retrain_interval": 0,
                  "drift_retrain": False},
        "alerts": {"for": 0, "for_ticks": 0, "false_alerts_per_day": None},
        "detect": {"threshold": {"risk": risk}},
    })
    e = Engine(cfg)
    S, warm, n = 4, 300, 3000
    keys = [StreamKey.of("pump", site=f"s{s}") for s in range(S)]
    rng = np.random.default_rng(11)
    t = np.arange(warm + n, dtype=np.float64)
    v = np.stack([20 + 3 * np.sin(2 * np.pi * (t + 7 * s) / 50) + 0.3 * rng.normal(size=len(t)) for s in range(S)])

    def tick(i: int):
        return e.process([Sample(k, float(t[i]), ("pressure",), (float(v[s, i]),)) for s, k in enumerate(keys)])

    for i in range(warm):
        tick(i)
    _train(e, float(warm))
    outside_n = above_n = total = 0
    for i in range(warm, warm + n):
        o = tick(i)
        (idx, b), = o.bands
        out = outside(v[np.asarray(idx), i][:, None], b)[:, 0]
        above = (o.error > o.threshold)[np.asarray(idx)]
        assert (out == above).all()  # outside the band <=> above the threshold (one field)
        outside_n += int(out.sum())
        above_n += int(above.sum())
        total += len(out)
    assert total == S * n
    share = outside_n / total
    assert risk / 2.5 <= share <= 2.5 * risk, share
