"""Detection-quality scoring on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks._quality_metrics import (
    NabProfile,
    event_scores,
    nab_combine,
    nab_score,
    nab_windows,
    onsets,
    point_scores,
    runs,
    scaled_sigmoid,
)


def b(*xs: int) -> np.ndarray:
    return np.array(xs, dtype=bool)


def test_runs_and_onsets():
    assert runs(b(1, 1, 0, 0, 1, 0, 1, 1)) == [(0, 2), (4, 5), (6, 8)]
    assert runs(b(0, 0)) == []
    assert onsets(b(1, 1, 0, 1, 1, 1)).astype(int).tolist() == [1, 0, 0, 1, 0, 0]


def test_point_scores():
    r = point_scores(b(0, 1, 1, 0, 0, 1), b(0, 1, 0, 1, 0, 1))
    assert (r.tp, r.fp, r.fn) == (2, 1, 1)
    assert r.precision == pytest.approx(2 / 3) and r.recall == pytest.approx(2 / 3)
    assert r.f1 == pytest.approx(2 / 3)
    none = point_scores(b(0, 1), b(0, 0))
    assert (none.precision, none.recall, none.f1) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError):
        point_scores(b(0, 1), b(0, 1, 1))


def test_event_scores_with_tolerance_and_false_alarm_runs():
    ts = np.arange(12) * 10.0
    labels = b(0, 0, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0)  # windows rows [2,4) and [8,9)
    preds = b(0, 0, 0, 1, 0, 0, 1, 1, 0, 1, 0, 0)   # runs [3], [6,7], [9]
    strict = event_scores(labels, preds, ts)
    assert (strict.detected, strict.missed, strict.false_alarms) == (1, 1, 2)
    assert strict.precision == pytest.approx(1 / 3) and strict.recall == pytest.approx(1 / 2)
    assert strict.mean_delay == pytest.approx(10.0)
    tol = event_scores(labels, preds, ts, tolerance=10.0)  # row 9 is 10 s after the second start
    assert (tol.detected, tol.missed, tol.false_alarms) == (2, 0, 1)
    assert tol.precision == pytest.approx(2 / 3) and tol.recall == 1.0
    assert tol.f1 == pytest.approx(0.8)
    assert tol.mean_delay == pytest.approx(10.0)  # (10 + 10) / 2
    nothing = event_scores(labels, np.zeros(12, bool), ts)
    assert nothing.recall == 0.0 and math.isnan(nothing.mean_delay)


def test_nab_windows_size_centre_merge_and_clip():
    y = np.zeros(100, bool)
    y[50] = True
    assert nab_windows(y) == [(45, 55)]  # 10% of 100 rows / 1 window, centred on the start
    y2 = np.zeros(100, bool)
    y2[[2, 60, 62]] = True  # 3 windows of int(10/3)=3 rows -> half 1
    assert nab_windows(y2) == [(1, 3), (59, 63)]  # 60 and 62 overlap -> merged
    long = np.zeros(100, bool)
    long[40:70] = True
    assert nab_windows(long) == [(35, 69)]  # a long run is covered whole
    assert nab_windows(np.zeros(5, bool)) == []


def sig(x: float) -> float:
    return 2.0 / (1.0 + math.exp(5.0 * x)) - 1.0


def test_nab_scores_hand_computed():
    y = np.zeros(100, bool)
    y[50] = True  # window [45, 55], 11 rows
    perfect = sig(-1.0)
    assert scaled_sigmoid(-1.0) == pytest.approx(perfect) and scaled_sigmoid(3.5) == -1.0

    def score_at(*rows: int):
        p = np.zeros(100, bool)
        p[list(rows)] = True
        return nab_score(y, p)

    assert score_at(45).score == pytest.approx(100.0)
    assert nab_score(y, np.zeros(100, bool)).score == pytest.approx(0.0)
    late = score_at(55)
    assert late.raw == pytest.approx(sig(-1 / 11))
    assert late.score == pytest.approx(100 * (sig(-1 / 11) + 1) / (perfect + 1))
    # only the first detection in a window counts
    assert score_at(50, 51, 52).raw == pytest.approx(sig(-6 / 11))
    # a false positive before any window costs the whole A_FP, and the window is missed
    early = score_at(10)
    assert early.raw == pytest.approx(-1.11) and early.false_positives == 1
    assert early.score == pytest.approx(100 * -0.11 / (perfect + 1))
    # a false positive after a window costs less the closer it is: (60-55)/(11-1) = 0.5 window lengths
    after = score_at(45, 60)
    assert after.raw == pytest.approx(perfect + 0.11 * sig(0.5))
    assert 0 > 0.11 * sig(0.5) > -0.11


def test_nab_profile_and_combine():
    y = np.zeros(100, bool)
    y[50] = True
    p = np.zeros(100, bool)
    p[[10, 45]] = True
    r = nab_score(y, p, profile=NabProfile(fp=0.22))
    assert r.raw == pytest.approx(sig(-1.0) - 0.22)
    r1 = nab_score(y, p)
    r2 = nab_score(y, np.zeros(100, bool))
    combined = nab_combine([r1, r2])
    want = 100 * ((r1.raw + r2.raw) - (-2.0)) / (2 * sig(-1.0) + 2.0)
    assert combined == pytest.approx(want)
    assert math.isnan(nab_score(np.zeros(10, bool), np.ones(10, bool)).score)


# ---------------------------------------------------------------- baselines
def test_rolling_zscore_hand_computed_and_multifield_max():
    from benchmarks.baselines import RollingZScore

    z = RollingZScore(window=3, min_periods=2)
    assert z.score(np.array([1.0, 2.0, 3.0, 10.0])).tolist() == pytest.approx([0, 0, 1.5 / math.sqrt(0.5), 8.0])
    two = np.array([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0], [10.0, float("nan")]])
    assert z.score(two)[3] == pytest.approx(8.0)  # NaN field ignored, max over fields
    flat = np.array([4.0] * 5 + [4.5])
    s = z.score(flat)
    assert s[:5].tolist() == [0.0] * 5 and s[5] > 1e6  # leaving a flatline scores high
    assert RollingZScore().score(np.zeros((0, 2))).shape == (0,)


def test_pick_threshold_gives_the_false_alarm_rate_on_training_rows():
    from benchmarks.baselines import pick_threshold

    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.random(1000), np.full(10, 5.0)])
    thr = pick_threshold(scores, 1000, 0.02)
    assert (scores[:1000] > thr).mean() == pytest.approx(0.02, abs=0.002)
    assert (scores[1000:] > thr).all()
    assert pick_threshold(np.array([np.nan]), 1) == math.inf


def test_half_space_trees_scores_or_is_skipped():
    from benchmarks.baselines import baselines, half_space_trees

    hst = half_space_trees(seed=1)
    assert set(baselines()) == {"rolling_zscore", "half_space_trees"}
    assert hst is not None, "river (a dev dependency) is not installed"
    rng = np.random.default_rng(1)
    v = rng.normal(0.5, 0.02, size=(600, 2))
    v[500] = [0.95, 0.05]
    s = hst.score(v)
    assert s.shape == (600,) and np.all(np.isfinite(s))
    assert s[500] > np.quantile(s[300:500], 0.95)
    assert np.array_equal(s, half_space_trees(seed=1).score(v))  # seeded


def test_public_data_loads_with_labels():
    from benchmarks.baselines import load_public

    sets = {name: (ts, v, y) for name, ts, v, y in load_public()}
    assert set(sets) == {"streamad_univariate", "streamad_multivariate"}
    ts, v, y = sets["streamad_univariate"]
    assert v.shape == (999, 1) and y.sum() == 9 and len(runs(y)) == 3
    assert np.all(np.diff(ts) == 3600.0)
    ts, v, y = sets["streamad_multivariate"]
    assert v.shape == (999, 3) and y.sum() == 1 and np.all(np.isfinite(v))
