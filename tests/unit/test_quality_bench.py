"""Smoke test of the detection-quality harness (benchmarks/quality.py) on tiny data.

Sentinel itself is stubbed here (a perfect or a silent predictor) so the test checks the
harness: CSV round trip, config assembly, warm-up exclusion, baselines' thresholds and the
scoring path. One small real replay checks the wiring to ``sentinel.replay``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from benchmarks import quality as Q
from sentinel.config import load_config_text
from sentinel.replay import read_rows


def _case(n: int = 400, fields: int = 1) -> Q.Case:
    rng = np.random.default_rng(0)
    ts = 1_600_000_000.0 + 60.0 * np.arange(n)
    vals = 10.0 + np.sin(np.arange(n) / 10.0)[:, None] + 0.05 * rng.standard_normal((n, fields))
    labels = np.zeros(n, dtype=bool)
    for a in (250, 320):
        labels[a:a + 3] = True
        vals[a:a + 3] += 8.0
    names = ("value",) if fields == 1 else tuple(f"x{i}" for i in range(fields))
    return Q.Case("spike", "spike/s0", ts, vals, labels, names)


def _stub(pred: str, ready_from: int = 100):
    def run(case: Q.Case, cfg_text: str, workdir: str | Path) -> tuple[np.ndarray, int, int]:
        cfg = load_config_text(cfg_text)  # the text must be a valid Sentinel config
        assert list(cfg.fields) == list(case.fields)
        p = case.labels.copy() if pred == "perfect" else np.zeros(len(case.labels), bool)
        p[:ready_from] = True  # alarms during warm-up must not count against anyone
        return p, ready_from, 1
    return run


def test_perfect_predictor_scores_one():
    case = _case()
    run = Q.run_case(case, Q.config_text(case.fields), far=0.01, sentinel=_stub("perfect"))
    assert run.ready_from == 100 and run.clean_end == 250
    rep = Q.aggregate([run])
    t = rep.groups["spike"][Q.SENTINEL]
    assert t.point == (1.0, 1.0, 1.0)
    assert t.event == (1.0, 1.0, 1.0)
    assert t.mean_delay == 0.0 and t.false_alarms == 0 and t.clean_far == 0.0
    # NAB windows open before the labelled rows, so only an earlier alarm would reach 100
    assert 90.0 < t.nab_score <= 100.0
    assert rep.lost == {"spike": 0}
    # baselines ran, with a threshold from the clean part, and produce bool rows
    assert {Q.ZSCORE} <= set(run.preds)
    for p in run.preds.values():
        assert p.dtype == bool and p.shape == case.labels.shape
    # the obvious +8 spikes are found by the z-score baseline
    assert rep.groups["spike"][Q.ZSCORE].detected == 2


def test_silent_predictor_and_output():
    case = _case()
    rep = Q.aggregate([Q.run_case(case, Q.config_text(case.fields), 0.01, baselines=False,
                                  sentinel=_stub("silent"))])
    t = rep.groups["spike"][Q.SENTINEL]
    assert t.point == (0.0, 0.0, 0.0) and t.detected == 0 and t.missed == 2
    assert t.nab_score == pytest.approx(0.0) and math.isnan(t.mean_delay)
    table = Q.format_table(rep)
    assert "spike" in table and "ALL simulator" in table
    line = Q.result_line(rep, 1.0)
    assert line.startswith("RESULT ") and "f1_sentinel=0.0" in line and "nab_sentinel=0.0" in line
    kv = dict(x.split("=", 1) for x in line.split()[1:])
    assert kv["kinds_sentinel_best_nab"] == "0/1"  # no baseline ran: nothing was beaten


def test_config_text_and_csv(tmp_path):
    text = Q.config_text(("x0", "x1"), Q.parse_overrides(["detect.threshold.risk=1e-5", "alerts.for=2m"]))
    cfg = load_config_text(text)
    assert cfg.fields == ["x0", "x1"] and cfg.detect.threshold.risk == 1e-5 and cfg.alerts.for_ == 120.0
    # everything else is the shipped replay.yaml
    assert cfg.model == load_config_text(yaml.safe_dump({"fields": ["x0", "x1"]})).model
    with pytest.raises(ValueError):
        Q.parse_overrides(["nonsense"])
    case = _case(20, fields=2)
    case.values[3, 1] = np.nan
    p = tmp_path / "in.csv"
    Q.write_csv(p, case.ts, case.values, case.fields)
    stamps, rows = read_rows(p, ["x0", "x1"])
    assert len(rows) == 20 and float(stamps[0]) == case.ts[0] and rows[3][1] == ""
    assert float(rows[5][0]) == case.values[5, 0]


def test_real_replay_wiring():
    """A tiny real run through sentinel.replay: warm-up is detected and excluded."""
    case = _case(120)
    text = Q.config_text(case.fields, Q.parse_overrides(
        ["train.min_history=64", "train.min_history_span=0", "train.epochs=1", "model.hidden=4", "streams.history_size=64"]))
    run = Q.run_case(case, text, 0.01, baselines=False)
    assert 64 <= run.ready_from < 120
    assert run.preds[Q.SENTINEL].shape == (120,) and run.trainings >= 1
    tallies, lost = Q.score_run(run)
    # no labels in 120 rows: every scored row is clean, and warm-up rows are not scored
    assert lost == 0 and tallies[Q.SENTINEL].clean_rows == 120 - run.ready_from


def test_calibration_counts_shares_and_onsets_of_normal_rows() -> None:
    """benchmarks/calibration.py: the share at or above a level, alert onsets, and the printed ratio."""
    from benchmarks import calibration as C

    assert C._onsets(np.array([0, 1, 1, 0, 1, 0, 0, 1])) == 3
    assert C._onsets(np.array([1, 1, 0])) == 1
    c = C.CleanSet("x", np.array([0.0, 0.1, 0.35, 0.6, 0.75]), onsets=2, days=4.0, streams=1, fire_rows=2)
    assert c.share(0.3) == pytest.approx(0.6) and c.share(0.5) == pytest.approx(0.4) and c.share(0.7) == 0.2
    lines = C.table([c], 8.0)
    assert "x" in lines[2] and "(  150.7x)" in lines[2]  # 0.6 observed vs 10^-2.4 = 0.00398 nominal
    assert "0.50 (2 onsets, 4.00 stream-days)" in lines[2]


def test_tally_reports_false_alarms_per_stream_day() -> None:
    t = Q.Tally()
    labels = np.zeros(1441, bool)
    labels[100:110] = True
    preds = np.zeros(1441, bool)
    preds[[5, 500, 900]] = True  # three false alarm runs
    preds[104] = True
    t.add(labels, preds, 60.0 * np.arange(1441), np.ones(1441, bool))
    assert t.false_alarms == 3 and t.days == pytest.approx(1.0)
    assert t.false_alarms_per_day == pytest.approx(3.0)
