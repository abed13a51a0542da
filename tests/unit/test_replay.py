"""``sentinel replay``: the output contract, hostile CSVs, and bad rows that never touch state."""

from __future__ import annotations

import csv
import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sentinel.cli import main
from sentinel.config import load_config
from sentinel.errors import InputError
from sentinel.replay import parse_timestamp, replay

CONFIG = """
fields: [value]
streams: {history_size: 256, rewarm_samples: 4}
model: {hidden: 8, window: 4}
train: {min_history: 64, min_history_span: 0, epochs: 2, bptt: 16, segments: 2, retrain_interval: 0, drift_retrain: false, progress: false}
alerts: {for: 0, for_ticks: 0, resolve_for: 0}
"""
MIN_HISTORY = 64
T0 = 1_700_000_000
N = 160
SPIKE = 140


def values(n: int = N) -> np.ndarray:
    rng = np.random.default_rng(0)
    v = 20 + 3 * np.sin(2 * np.pi * np.arange(n) / 16) + 0.1 * rng.standard_normal(n)
    if n > SPIKE:
        v[SPIKE] += 300.0
    return v


def write_csv(path: Path, rows: list[tuple[str, str]], header: str = "timestamp,value", bom: bool = False) -> Path:
    text = header + "\n" + "".join(f"{a},{b}\n" for a, b in rows)
    path.write_text(("\ufeff" if bom else "") + text, encoding="utf-8")
    return path


def good_rows(n: int = N) -> list[tuple[str, str]]:
    return [(str(T0 + 60 * i), f"{x:.6f}") for i, x in enumerate(values(n))]


@pytest.fixture
def cfg_path(tmp_path: Path) -> Path:
    p = tmp_path / "replay.yaml"
    p.write_text(CONFIG)
    return p


def run_cli(cfg: Path, inp: Path, out: Path, *extra: str):
    return CliRunner().invoke(main, ["replay", "--config", str(cfg), "--input", str(inp), "--output", str(out),
                                     "--quiet", *extra])


def read_out(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def test_output_contract(cfg_path: Path, tmp_path: Path) -> None:
    inp = write_csv(tmp_path / "in.csv", good_rows())
    out = tmp_path / "out.csv"
    r = run_cli(cfg_path, inp, out)
    assert r.exit_code == 0, r.output
    header, rows = read_out(out)
    assert header[:5] == ["timestamp", "score", "is_anomaly", "error", "threshold"]
    assert len(rows) == N
    assert [row[0] for row in rows] == [a for a, _ in good_rows()]  # same order, timestamps echoed
    score = np.array([float(row[1]) for row in rows])
    anom = np.array([int(row[2]) for row in rows])
    assert np.all((score >= 0) & (score <= 1))
    assert set(anom.tolist()) <= {0, 1}
    # not ready before the first training (at min_history): score 0, is_anomaly 0, no error yet
    assert np.all(score[:MIN_HISTORY] == 0) and np.all(anom[:MIN_HISTORY] == 0)
    assert all(row[3] == "nan" for row in rows[:MIN_HISTORY])
    assert all(math.isfinite(float(row[3])) for row in rows[MIN_HISTORY:])
    # the injected spike is flagged
    assert anom[SPIKE] == 1 and score[SPIKE] >= 0.5
    assert "1 trainings" in r.output or "trainings" in r.output
    # the expected band after the contract columns: empty before scoring, around the value after
    assert header[5:] == ["expected_value", "lower_value", "upper_value"]
    assert all(row[5:] == ["", "", ""] for row in rows[:MIN_HISTORY])
    val = np.array([float(b) for _, b in good_rows()])
    exp, lo, hi = (np.array([float(row[k]) for row in rows[MIN_HISTORY:]]) for k in (5, 6, 7))
    assert np.all(lo <= exp) and np.all(exp <= hi)
    inside = (val[MIN_HISTORY:] >= lo) & (val[MIN_HISTORY:] <= hi)
    assert inside.mean() > 0.95 and not inside[SPIKE - MIN_HISTORY]


def test_plot_writes_a_png(cfg_path: Path, tmp_path: Path) -> None:
    inp = write_csv(tmp_path / "in.csv", good_rows())
    png = tmp_path / "out.png"
    r = run_cli(cfg_path, inp, tmp_path / "out.csv", "--plot", str(png))
    assert r.exit_code == 0, r.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_bad_rows_are_counted_and_do_not_change_the_good_rows_scores(cfg_path: Path, tmp_path: Path) -> None:
    cfg = load_config(cfg_path)
    clean = good_rows()
    ref = replay(cfg, write_csv(tmp_path / "clean.csv", clean), progress=False)
    hostile: list[tuple[str, str]] = []
    bad_idx = []
    injections = {
        10: ("not-a-time", "1.0"),
        30: (str(T0 + 60 * 29 + 30), "abc"),                      # non-numeric
        50: (str(T0 + 60 * 49 + 30), "inf"),                      # non-finite
        70: (str(T0 + 60 * 69 + 30), "nan"),                      # no value at all
        90: (str(T0), "1.0"),                                     # out of order
        110: (str(T0 + 60 * 109), "5.0"),                         # duplicate timestamp
        120: (str(T0 + 60 * 119 + 30), "-Infinity"),
        130: ("", "1.0"),                                         # empty timestamp
        135: ("1e400", "1.0"),                                    # timestamp overflows to inf
    }
    for i, row in enumerate(clean):
        if i in injections:
            bad_idx.append(len(hostile))
            hostile.append(injections[i])
        hostile.append(row)
    text = "timestamp,value\n" + "".join(f"{a},{b}\n" + ("\n" if k % 40 == 0 else "") for k, (a, b) in
                                         enumerate(hostile))
    p = tmp_path / "hostile.csv"
    p.write_text(text)
    res = replay(cfg, p, progress=False)
    assert res.bad == {"bad_timestamp": 3, "non_numeric": 1, "non_finite": 2, "no_values": 1, "out_of_order": 1,
                       "duplicate": 1}
    assert len(res.timestamps) == len(hostile)  # blank lines are not rows
    good = np.setdiff1d(np.arange(len(hostile)), bad_idx)
    np.testing.assert_array_equal(res.score[bad_idx], 0)
    np.testing.assert_array_equal(res.is_anomaly[bad_idx], 0)
    np.testing.assert_array_equal(res.score[good], ref.score)
    np.testing.assert_array_equal(res.is_anomaly[good], ref.is_anomaly)
    np.testing.assert_array_equal(res.error[good], ref.error)
    np.testing.assert_array_equal(res.threshold[good], ref.threshold)
    assert res.trainings == ref.trainings == 1


def test_iso_timestamps_with_timezone_equal_epoch_seconds(cfg_path: Path, tmp_path: Path) -> None:
    cfg = load_config(cfg_path)
    rows = good_rows(100)
    iso = [(datetime.fromtimestamp(int(a) + 7200, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S+02:00"), b) for a, b in rows]
    r1 = replay(cfg, write_csv(tmp_path / "a.csv", rows), progress=False)
    r2 = replay(cfg, write_csv(tmp_path / "b.csv", iso, bom=True), progress=False)
    np.testing.assert_array_equal(r1.ts, r2.ts)
    np.testing.assert_array_equal(r1.score, r2.score)
    assert r2.bad == {} and r2.timestamps[0] == iso[0][0]


@pytest.mark.parametrize(("text", "expected"), [
    ("1700000000", 1_700_000_000.0),
    (" 1700000000.5 ", 1_700_000_000.5),
    ("2023-11-14T22:13:20Z", 1_700_000_000.0),
    ("2023-11-14T22:13:20+00:00", 1_700_000_000.0),
    ("2023-11-15T00:13:20+02:00", 1_700_000_000.0),
    ("2023-11-14 22:13:20", 1_700_000_000.0),  # naive = UTC
    ("2023-11-14T22:13:20.250Z", 1_700_000_000.25),
])
def test_parse_timestamp(text: str, expected: float) -> None:
    assert parse_timestamp(text) == expected


@pytest.mark.parametrize("text", ["", "  ", "nan", "inf", "yesterday", "2023-13-45", "12:00"])
def test_parse_timestamp_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_timestamp(text)


@pytest.mark.parametrize(("content", "needle"), [
    ("", "empty file"),
    ("when,value\n1,2\n", "no time column"),
    ("timestamp,timestamp,value\n1,2,3\n", "appears 2 times"),
    ("timestamp,temp\n1,2\n", "lacks value column"),
])
def test_unusable_files_exit_2_with_a_clean_error(cfg_path: Path, tmp_path: Path, content: str, needle: str) -> None:
    inp = tmp_path / "in.csv"
    inp.write_text(content)
    out = tmp_path / "out.csv"
    r = run_cli(cfg_path, inp, out)
    assert r.exit_code == 2
    assert needle in r.output and "Traceback" not in r.output
    assert not out.exists()
    with pytest.raises(InputError):
        replay(load_config(cfg_path), inp, progress=False)


def test_missing_input_file_exits_2(cfg_path: Path, tmp_path: Path) -> None:
    r = run_cli(cfg_path, tmp_path / "nope.csv", tmp_path / "out.csv")
    assert r.exit_code == 2 and "cannot read" in r.output


def test_bad_config_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {hiden: 8}\n")
    inp = write_csv(tmp_path / "in.csv", good_rows(5))
    r = run_cli(bad, inp, tmp_path / "out.csv")
    assert r.exit_code == 2 and "model.hiden: unknown key" in r.output


def test_header_only_gives_header_only(cfg_path: Path, tmp_path: Path) -> None:
    inp = write_csv(tmp_path / "in.csv", [], bom=True)
    out = tmp_path / "out.csv"
    r = run_cli(cfg_path, inp, out)
    assert r.exit_code == 0, r.output
    header, rows = read_out(out)
    assert header == ["timestamp", "score", "is_anomaly", "error", "threshold",
                      "expected_value", "lower_value", "upper_value"] and rows == []


def test_short_rows_and_extra_columns(cfg_path: Path, tmp_path: Path) -> None:
    p = tmp_path / "in.csv"
    p.write_text("id,timestamp,value,note\n1,1000,5.0,x\n2,1060\n3,1120,6.0,y,extra\n")
    res = replay(load_config(cfg_path), p, progress=False)
    assert res.timestamps == ["1000", "1060", "1120"]
    assert res.bad == {"ragged": 2}  # a short row and one with an extra non-empty cell
    assert np.all(res.score == 0)


def test_multivariate_replay_with_a_missing_field(tmp_path: Path) -> None:
    cfgp = tmp_path / "mv.yaml"
    cfgp.write_text(CONFIG.replace("fields: [value]", "fields: [a, b]"))
    rng = np.random.default_rng(1)
    lines = ["timestamp,a,b"]
    for i in range(100):
        a = np.sin(i / 3) + 0.05 * rng.standard_normal()
        b = "" if i % 17 == 5 else f"{np.cos(i / 3):.5f}"
        lines.append(f"{T0 + i},{a:.5f},{b}")
    p = tmp_path / "mv.csv"
    p.write_text("\n".join(lines) + "\n")
    res = replay(load_config(cfgp), p, progress=False)
    assert res.bad == {}
    assert np.all(np.isfinite(res.error[MIN_HISTORY:]))
    assert np.all((res.score >= 0) & (res.score <= 1))
