"""Streaming thresholds (SPOT/DSPOT, quantile) and the calibrated score."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.config.schema import ThresholdConfig
from sentinel.detect.thresholds import QuantileThresholds, SpotThresholds, make_thresholds, score_from_p

METHODS = ["spot", "dspot", "quantile"]


def make(method: str, risk: float = 1e-3):
    th = ThresholdConfig(method=method, risk=risk, init_quantile=0.98, depth=32, max_peaks=256, decay=0.999)
    return make_thresholds(th)


def exp_errors(n: int, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    return scale * np.random.default_rng(seed).exponential(1.0, n)


def test_make_thresholds_picks_the_method() -> None:
    assert isinstance(make("quantile"), QuantileThresholds)
    assert make("spot").depth == 0
    assert make("dspot").depth == 32


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spot_threshold_is_near_the_true_exponential_quantile(seed: int) -> None:
    risk = 1e-3
    th = SpotThresholds(risk=risk, init_quantile=0.98, depth=0, max_peaks=1024)
    th.calibrate(np.array([0]), [exp_errors(40_000, seed)])
    true_q = -math.log(risk)  # P(E > q) = e^-q for Exp(1)
    thr = float(th.threshold(np.array([0]))[0])
    assert abs(thr - true_q) / true_q < 0.2, thr
    # the tail probability of the threshold is the risk (the two views agree)
    assert th.tail_probability(np.array([0]), np.array([thr]))[0] == pytest.approx(risk, rel=1e-6)


def test_spot_streaming_updates_keep_the_threshold_near_the_quantile() -> None:
    th = SpotThresholds(risk=1e-3, init_quantile=0.98, depth=0, max_peaks=256)
    th.calibrate(np.array([0]), [exp_errors(2000, 1)])
    for e in exp_errors(20_000, 2):
        th.update(np.array([0]), np.array([e]))
    thr = float(th.threshold(np.array([0]))[0])
    assert abs(thr - math.log(1000)) / math.log(1000) < 0.2, thr


@pytest.mark.parametrize("method", METHODS)
def test_threshold_follows_a_scaled_up_error_distribution(method: str) -> None:
    th = make(method)
    th.calibrate(np.array([0]), [exp_errors(3000, 3)])
    before = float(th.threshold(np.array([0]))[0])
    for e in exp_errors(6000, 4, scale=4.0):
        th.update(np.array([0]), np.array([e]))
    after = float(th.threshold(np.array([0]))[0])
    assert after > 1.5 * before, (before, after)


@pytest.mark.parametrize("method", ["spot", "dspot"])
def test_anomalies_beyond_the_threshold_are_not_learned(method: str) -> None:
    th = make(method)
    th.calibrate(np.array([0, 1]), [exp_errors(3000, 5), exp_errors(3000, 6)])
    snap = th.snapshot()
    thr = th.threshold(np.array([0, 1]))
    p, t = th.update(np.array([0, 1]), thr * 10)
    np.testing.assert_array_equal(t, thr)
    assert np.all(p < th.risk)
    for k, v in th.snapshot().items():
        np.testing.assert_array_equal(v, snap[k], err_msg=k)


@pytest.mark.parametrize("method", METHODS)
def test_learn_false_changes_nothing(method: str) -> None:
    th = make(method)
    th.calibrate(np.array([0, 1]), [exp_errors(500, 7), exp_errors(500, 8)])
    snap = th.snapshot()
    th.update(np.array([0, 1]), np.array([1.5, 2.5]), learn=np.array([False, False]))
    for k, v in th.snapshot().items():
        np.testing.assert_array_equal(v, snap[k], err_msg=k)
    th.update(np.array([0, 1]), np.array([1.5, 2.5]), learn=np.array([True, False]))
    changed = [k for k, v in th.snapshot().items() if not np.array_equal(v[0], snap[k][0], equal_nan=True)]
    unchanged1 = all(np.array_equal(v[1], snap[k][1], equal_nan=True) for k, v in th.snapshot().items())
    assert changed and unchanged1


@pytest.mark.parametrize("method", METHODS)
def test_update_returns_p_and_threshold_before_learning(method: str) -> None:
    th = make(method)
    th.calibrate(np.array([0]), [exp_errors(2000, 9)])
    e = np.array([3.0])
    p0 = th.tail_probability(np.array([0]), e)
    t0 = th.threshold(np.array([0]))
    p, t = th.update(np.array([0]), e)
    np.testing.assert_array_equal(p, p0)
    np.testing.assert_array_equal(t, t0)


@pytest.mark.parametrize("method", METHODS)
def test_uncalibrated_slots_have_p_one_and_infinite_threshold(method: str) -> None:
    th = make(method)
    th.calibrate(np.array([0, 1]), [exp_errors(500, 1), np.array([1.0, 2.0])])  # slot 1: too few errors
    p, t = th.update(np.array([1, 2]), np.array([100.0, 100.0]))
    np.testing.assert_array_equal(p, [1.0, 1.0])
    assert np.all(np.isinf(t))


@pytest.mark.parametrize("method", METHODS)
def test_calibrated_score_means_the_same_rarity_at_any_error_scale(method: str) -> None:
    """Two streams with the same errors at 1x and 100x give the same scores at the same quantile."""
    th = make(method, risk=1e-4)
    e = exp_errors(4000, 10)
    th.calibrate(np.array([0, 1]), [e, 100.0 * e])
    qs = [*np.quantile(e, [0.5, 0.9, 0.99, 0.999]).tolist(), 8.0, 12.0]
    tol = 1e-6 if method != "quantile" else 0.02
    for q in qs:
        p = th.tail_probability(np.array([0, 1]), np.array([q, 100.0 * q]))
        s = score_from_p(p, 8.0)
        assert s[0] == pytest.approx(s[1], abs=tol), (q, s)
    thr = th.threshold(np.array([0, 1]))
    assert thr[1] == pytest.approx(100.0 * thr[0], rel=tol)
    # after the same streaming updates (scaled), still the same
    for x in exp_errors(300, 11):
        th.update(np.array([0, 1]), np.array([x, 100.0 * x]))
    p = th.tail_probability(np.array([0, 1]), np.array([6.0, 600.0]))
    assert score_from_p(p, 8.0)[0] == pytest.approx(score_from_p(p, 8.0)[1], abs=tol)


@pytest.mark.parametrize("method", METHODS)
def test_tail_probability_is_monotone_in_the_error(method: str) -> None:
    th = make(method)
    th.calibrate(np.array([0]), [exp_errors(3000, 12)])
    es = np.linspace(0, 30, 301)
    p = np.array([th.tail_probability(np.array([0]), np.array([x]))[0] for x in es])
    assert np.all(np.diff(p) <= 1e-12)
    assert p[0] > 0.5
    assert p[-1] < 1e-4  # the quantile method too: its exponential tail goes past the histogram


def test_score_from_p_values() -> None:
    p = np.array([1.0, 0.1, 1e-4, 1e-8, 1e-12, 0.0, 2.0])
    # linear up to the knee (0.8), then compressed towards 1: p=1e-8 (s=1) reads 0.9, not a clipped 1.0
    np.testing.assert_allclose(score_from_p(p, 8.0), [0.0, 0.125, 0.5, 0.9, 1 - 0.2 / 4.5, 1 - 0.2 / (1 + 36.7 / 0.2), 0.0],
                               atol=1e-12)
    np.testing.assert_allclose(score_from_p(np.array([1e-3]), 6.0), [0.5])


def test_score_keeps_order_above_the_alert_level() -> None:
    """No saturation: ever rarer errors score ever higher, and stay below 1."""
    p = 10.0 ** -np.arange(4, 200, 4, dtype=np.float64)
    s = score_from_p(p, 8.0)
    assert np.all(np.diff(s) > 0)
    assert s[-1] < 1.0


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=2, max_size=30), st.floats(0.5, 20.0))
def test_score_from_p_is_monotone_and_bounded(ps: list[float], decades: float) -> None:
    p = np.sort(np.array(ps))
    s = score_from_p(p, decades)
    assert np.all((s >= 0) & (s <= 1))
    assert np.all(np.diff(s) <= 0)  # rarer (smaller p) -> higher score


def test_snapshot_restore_round_trip_and_growth() -> None:
    th = make("dspot")
    th.calibrate(np.array([0, 70]), [exp_errors(500, 1), exp_errors(500, 2)])  # grows past 64
    assert th.capacity >= 71
    for x in exp_errors(50, 3):
        th.update(np.array([0, 70]), np.array([x, x]))
    snap = th.snapshot()
    other = make("dspot")
    other.restore(snap)
    es = np.array([0.5, 9.0])
    np.testing.assert_array_equal(other.tail_probability(np.array([0, 70]), es),
                                  th.tail_probability(np.array([0, 70]), es))
    np.testing.assert_array_equal(other.threshold(np.array([0, 70])), th.threshold(np.array([0, 70])))


def test_quantile_method_fits_a_tail_so_rare_errors_reach_alerting_scores() -> None:
    """The decayed histogram holds ~1/(1-decay) samples; the exponential tail above its 90% quantile
    still places the 1e-4 threshold near the truth and gives a far error a score above 0.5."""
    rng = np.random.default_rng(3)
    th = QuantileThresholds(risk=1e-4, decay=0.999)
    slots = np.array([0, 1])
    th.calibrate(slots, [rng.exponential(1.0, 3000), rng.exponential(100.0, 3000)])
    thr = th.threshold(slots)
    true = -np.log(1e-4)
    assert abs(thr[0] - true) / true < 0.25 and abs(thr[1] - 100 * true) / (100 * true) < 0.25
    p = th.tail_probability(slots, np.array([3 * true, 300 * true]))
    assert np.all(score_from_p(p, 8.0) > 0.5)
    # and a typical error stays unremarkable
    assert np.all(score_from_p(th.tail_probability(slots, np.array([1.0, 100.0])), 8.0) < 0.1)
