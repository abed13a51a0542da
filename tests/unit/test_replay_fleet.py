"""``sentinel replay`` of fleets and history: one engine, batched, each stream as if replayed alone."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sentinel.cli import main
from sentinel.config import load_config_text
from sentinel.replay import options_for, read_series, replay, replay_fleet
from sentinel.replay.report import spans, summary_lines, tally
from sentinel.runtime.engine import Engine
from sentinel.types import Sample, StreamKey

CONFIG = """
streams: {history_size: 256, rewarm_samples: 4}
model: {hidden: 8, window: 4}
train: {min_history: 64, min_history_span: 0, epochs: 2, bptt: 16, segments: 2, retrain_interval: 1h,
        drift_retrain: false, progress: false}
alerts: {for: 0, for_ticks: 0, resolve_for: 0}
"""
T0 = 1_700_000_000


def series_csv(path: Path, n: int, seed: int, step: int = 60, t0: int = T0, spike: int | None = None,
               labels: bool = False) -> Path:
    rng = np.random.default_rng(seed)
    v = 20 + 3 * np.sin(2 * np.pi * np.arange(n) / (12 + seed)) + 0.1 * rng.standard_normal(n)
    lab = np.zeros(n, int)
    if spike is not None:
        v[spike : spike + 3] += 50.0
        lab[spike : spike + 3] = 1
    head = "timestamp,value" + (",anomaly" if labels else "")
    rows = [f"{t0 + step * i},{x:.6f}" + (f",{lab[i]}" if labels else "") for i, x in enumerate(v)]
    path.write_text(head + "\n" + "\n".join(rows) + "\n")
    return path


@pytest.fixture
def cfg():
    return load_config_text(CONFIG)


def test_fleet_streams_equal_single_file_replays(tmp_path: Path, cfg) -> None:
    files = [
        series_csv(tmp_path / "a.csv", 200, 1, spike=170),
        series_csv(tmp_path / "b.csv", 200, 2),
        series_csv(tmp_path / "c.csv", 150, 3, step=120, t0=T0 - 86400 * 30),  # its own clock and cadence
    ]
    opts = options_for(cfg)
    series = [s for f in files for s in read_series(f, opts)]
    fleet = replay_fleet(cfg, series, progress=False)
    assert fleet.jobs < fleet.trainings  # streams trained together
    for f, sr in zip(files, fleet.streams, strict=True):
        alone = replay(cfg, f, progress=False)
        assert sr.trainings == alone.trainings >= 2
        np.testing.assert_allclose(sr.score, alone.score, atol=1e-5)
        np.testing.assert_allclose(sr.error, alone.error, rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(sr.threshold, alone.threshold, rtol=1e-4, atol=1e-7)
        np.testing.assert_array_equal(sr.is_anomaly, alone.is_anomaly)
    assert fleet.streams[0].is_anomaly[170] == 1


def test_history_equals_feeding_the_history_rows_first(tmp_path: Path) -> None:
    """--history H then X scores X as a replay of H+X that first trains right after H."""
    N = 100
    both = series_csv(tmp_path / "both.csv", 220, 4, spike=190)
    lines = both.read_text().splitlines()
    hist = tmp_path / "hist.csv"
    hist.write_text("\n".join(lines[: N + 1]) + "\n")
    inp = tmp_path / "x.csv"
    inp.write_text("\n".join([lines[0], *lines[N + 1 :]]) + "\n")
    # min_history above the history: only --history can make it train before X (no retrains: with
    # retrain_interval they would wait for min_history new samples, which differs between the two)
    # float32 history values: a bulk history write and sample-by-sample appends then hold the same values
    # exactly (float16 residuals are centred differently by the two, which moves the scores by noise)
    base = CONFIG.replace("retrain_interval: 1h", "retrain_interval: 0").replace(
        "rewarm_samples: 4}", "rewarm_samples: 4, history_dtype: float32}")
    cfg = load_config_text(base.replace("min_history: 64", "min_history: 1000"))
    with_history = replay(cfg, inp, history=hist, progress=False)
    assert with_history.first_train is not None and with_history.first_train["row"] is None
    assert with_history.first_train["samples"] == N and with_history.history_samples == N
    # the same rows fed through the engine: it trains after exactly N samples
    fed_cfg = load_config_text(base.replace("min_history: 64", f"min_history: {N}"))
    fed = replay(fed_cfg, both, progress=False)
    np.testing.assert_allclose(with_history.score, fed.score[N:], atol=1e-6)
    np.testing.assert_allclose(with_history.error, fed.error[N:], rtol=1e-5)
    np.testing.assert_array_equal(with_history.is_anomaly, fed.is_anomaly[N:])
    assert np.isfinite(with_history.threshold).all()  # ready from the first row
    # --train-rows N on H+X is the same as --history H on X, with the history rows unscored
    tr = replay(cfg, both, train_rows=N, progress=False)
    np.testing.assert_allclose(tr.score[N:], with_history.score, atol=1e-6)
    assert np.all(tr.score[:N] == 0) and np.isnan(tr.error[:N]).all() and tr.history_rows == N


def test_train_rows_trains_on_them_whatever_min_history_span_says(tmp_path: Path) -> None:
    cfg = load_config_text(CONFIG.replace("min_history_span: 0", "min_history_span: 1d").replace(
        "min_history: 64", "min_history: 500"))
    f = series_csv(tmp_path / "short.csv", 120, 5)
    res = replay(cfg, f, train_rows=40, progress=False)
    assert res.first_train is not None and res.first_train["samples"] == 40
    assert np.isfinite(res.threshold[40:]).all() and np.isnan(res.threshold[:40]).all()
    never = replay(cfg, f, progress=False)
    assert never.first_train is None and np.all(never.score == 0)


def test_history_that_does_not_precede_the_input_is_refused(tmp_path: Path, cfg) -> None:
    from sentinel.errors import InputError

    f = series_csv(tmp_path / "x.csv", 80, 1)
    h = series_csv(tmp_path / "h.csv", 80, 2, t0=T0 + 60 * 10)
    with pytest.raises(InputError, match="history ends at"):
        replay(cfg, f, history=h, progress=False)


def test_report_counts_rows_events_and_false_alerts(tmp_path: Path, cfg) -> None:
    f = series_csv(tmp_path / "l.csv", 200, 1, spike=170, labels=True)
    res = replay(cfg, f, train_rows=64, progress=False)
    t = tally(res)
    assert t is not None and t.events == 1
    y = res.series.labels["anomaly"][64:] > 0.5
    p = res.is_anomaly[64:] == 1
    assert (t.tp, t.fp, t.fn, t.tn) == (int((p & y).sum()), int((p & ~y).sum()), int((~p & y).sum()),
                                        int((~p & ~y).sum()))
    assert t.found == 1 and t.false_alerts == sum(1 for a, b in spans(p) if not y[a:b].any())
    text = "\n".join(summary_lines(replay_fleet(cfg, [res.series], train_rows=64, progress=False)))
    assert "first trained at 2023-11-14 23:16:20 on its history before scoring, on 64 samples" in text
    assert "events found 1/1" in text


def test_spans() -> None:
    assert spans(np.array([0, 1, 1, 0, 1], bool)) == [(1, 3), (4, 5)]
    assert spans(np.zeros(3, bool)) == []


def test_cli_fleet_from_a_directory_writes_one_output_per_file(tmp_path: Path) -> None:
    d = tmp_path / "in"
    (d / "g1").mkdir(parents=True)
    (d / "g2").mkdir()
    series_csv(d / "g1" / "1.csv", 150, 1, spike=120, labels=True)
    series_csv(d / "g2" / "1.csv", 150, 2, labels=True)  # same stem: named by folder
    cfgp = tmp_path / "c.yaml"
    cfgp.write_text(CONFIG)
    out, plots = tmp_path / "out", tmp_path / "plots"
    r = CliRunner().invoke(main, ["replay", "--config", str(cfgp), "--input", str(d), "--output", str(out),
                                  "--train-rows", "64", "--plot", str(plots), "--report", "--quiet"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["g1_1.csv", "g2_1.csv"]
    assert sorted(p.name for p in plots.iterdir()) == ["g1_1.png", "g2_1.png"]
    with open(out / "g1_1.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["timestamp", "score", "is_anomaly", "error", "threshold", "anomaly", "expected_value",
                       "lower_value", "upper_value"] and len(rows) == 151
    assert all(row[1] == "0.000000" and row[3] == "nan" for row in rows[1:65])
    assert "g1/1: 150 rows (64 history, 0 bad)" in r.output and "all 2 labelled streams" in r.output
    assert "4 trainings in 2 batched jobs" in r.output  # the first on the history, one retrain an hour on


def test_cli_semicolon_file_with_labels_and_train_rows(tmp_path: Path) -> None:
    """The SKAB shape: ';', a datetime column, several sensors and two label columns."""
    rng = np.random.default_rng(0)
    lines = ["datetime;Accel;Current;anomaly;changepoint"]
    for i in range(300):
        a, c = np.sin(i / 5) + 0.05 * rng.standard_normal(), np.cos(i / 7) + 0.05 * rng.standard_normal()
        bad = 250 <= i < 260
        lines.append(f"2020-03-09 10:{i // 60:02d}:{i % 60:02d};{a + 8 * bad:.5f};{c:.5f};{float(bad)};"
                     f"{float(i == 250)}")
    f = tmp_path / "1.csv"
    f.write_text("\n".join(lines) + "\n")
    cfgp = tmp_path / "c.yaml"
    cfgp.write_text("model: {hidden: 8, window: 4}\ntrain: {epochs: 2, bptt: 16, segments: 2}\n")
    out, png = tmp_path / "out.csv", tmp_path / "out.png"
    r = CliRunner().invoke(main, ["replay", "--config", str(cfgp), "--input", str(f), "--train-rows", "100",
                                  "--output", str(out), "--plot", str(png), "--report"])
    assert r.exit_code == 0, r.output
    assert "fields ['Accel', 'Current'], labels ['anomaly', 'changepoint']" in r.output
    assert "rows/s" in r.output  # progress
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(out, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0][:5] == ["timestamp", "score", "is_anomaly", "error", "threshold"] and len(rows) == 301
    assert rows[1][0] == "2020-03-09 10:00:00"


def test_engine_due_training_force_and_clocks(cfg) -> None:
    e = Engine(cfg)
    a, b = StreamKey.of("m", s="a"), StreamKey.of("m", s="b")
    e.load_history([Sample(k, T0 + i, ("value",), (float(i % 7),)) for k in (a, b) for i in range(20)])
    assert e.due_training(T0 + 20) == []  # below min_history
    jobs = e.due_training(T0 + 20, clocks={a: T0 + 19}, force=[a, b])
    assert len(jobs) == 1 and jobs[0].tag["keys"] == [str(a)]  # b is not on the clock list


def test_cli_history_file_and_an_output_directory_for_one_file(tmp_path: Path) -> None:
    hist = series_csv(tmp_path / "normal.csv", 80, 6, t0=T0 - 60 * 100)
    inp = series_csv(tmp_path / "x.csv", 100, 6)
    cfgp = tmp_path / "c.yaml"
    cfgp.write_text(CONFIG.replace("min_history: 64", "min_history: 500"))
    out = tmp_path / "out"
    out.mkdir()
    r = CliRunner().invoke(main, ["replay", "--config", str(cfgp), "--input", str(inp), "--history", str(hist),
                                  "--output", str(out), "--report", "--quiet"])
    assert r.exit_code == 0, r.output
    with open(out / "x.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert len(rows) == 101 and all(row[4] != "nan" for row in rows[1:])  # ready from the first row
    assert "on its history before scoring, on 80 samples" in r.output
