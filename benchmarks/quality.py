"""Detection quality: Sentinel (through ``sentinel replay``) vs two baselines, per anomaly kind.

Method (see ``docs/quality.md`` for the measured table and its reading):

1. **Data.** For every anomaly kind, ``--seeds`` fixed seeds of
   :func:`sentinel.sources.simulator.make_series` (``--rows`` rows at ``--interval``
   seconds; univariate, except ``correlation_break`` which has 3 fields). The first
   40% of each series is clean; three labelled anomalies of that one kind follow.
   Then the public series of ``benchmarks/data`` (:func:`baselines.load_public`).
2. **Sentinel** runs through the code path of ``sentinel replay``: the series is
   written to a CSV in a temp dir and :func:`sentinel.replay.replay` is called with
   ``config/replay.yaml`` as loaded by the CLI (the shipped defaults: nothing is
   tuned per kind or per dataset; only ``fields`` names the CSV's value columns).
   Predictions are the output's ``is_anomaly`` (the alert is firing at that row).
3. **Baselines** (:mod:`baselines`): a rolling z-score and River's Half-Space Trees
   (skipped when ``river`` is missing). Each gets the same rule: the threshold is
   :func:`baselines.pick_threshold` over its scores on the *clean part* (after
   Sentinel's warm-up, before the first labelled row) at ``--far`` false alarms per
   row; predictions are ``score > threshold``. This is a gift to the baselines (the
   threshold is set with hindsight on data they are then scored on); Sentinel
   gets no such help.
4. **Scoring window.** Rows before Sentinel is ready (its warm-up, before the first
   model is trained; ``threshold`` is NaN there) are dropped for *every* detector:
   they count neither for nor against anyone. Labelled rows inside the warm-up are
   reported as ``lost`` (0 on the simulator by construction).
5. **Scores** (:mod:`_quality_metrics`): point-wise P/R/F1 over rows; event-wise
   P/R/F1 (a window is found if any alarm row falls in it; each alarm run touching
   no window is one false alarm) with the mean delay to the first alarm row;
   NAB's standard profile, normalised 0 (null detector) .. 100 (perfect), where
   each alarm *onset* is one detection (an alert that stays on is one alarm, for
   all detectors alike). Per kind, counts are summed over seeds (micro average)
   and NAB is combined as NAB does (sum raw, null, perfect, then normalise).

Run: ``.venv/bin/python benchmarks/quality.py [--quick] [--jobs 2] [--set detect.threshold.risk=1e-5 ...]``.
Ends with one line ``RESULT f1_sentinel=... f1_zscore=... f1_hst=... nab_sentinel=... ...``.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._quality_metrics import (  # noqa: E402
    EventScores,
    NabResult,
    event_scores,
    nab_combine,
    nab_score,
    onsets,
    point_scores,
)
from benchmarks.baselines import HalfSpaceTrees, RollingZScore, half_space_trees, load_public, pick_threshold  # noqa: E402

DEFAULT_CONFIG = ROOT / "config" / "replay.yaml"
SENTINEL = "sentinel"
ZSCORE = "zscore"
HST = "hst"
DETECTORS = (SENTINEL, ZSCORE, HST)
MULTIVARIATE_KINDS = ("correlation_break",)
MULTIVARIATE_FIELDS = 3
FULL = {"rows": 4000, "seeds": (1, 2), "interval": 60.0}
QUICK = {"rows": 2400, "seeds": (1,), "kinds": ("spike", "level_shift", "drift", "stuck", "correlation_break")}


# ---------------------------------------------------------------------- data
@dataclass(frozen=True)
class Case:
    """One labelled series: ``ts`` [N] epoch s, ``values`` [N, F], ``labels`` [N] bool."""

    group: str          # anomaly kind, or "public"
    name: str
    ts: np.ndarray
    values: np.ndarray
    labels: np.ndarray
    fields: tuple[str, ...]


def simulator_cases(kinds: Iterable[str], seeds: Iterable[int], rows: int, interval: float = 60.0) -> list[Case]:
    """``make_series`` for every (kind, seed); ``correlation_break`` gets 3 fields, the rest 1.

    The seed passed is ``seed + 100 * (index of kind in ANOMALY_KINDS)``: one seed gives one clean
    signal, so without the offset every kind would share the same few clean series (and the same
    false alarms); with it, each (kind, seed) is an independent sensor.
    """
    from sentinel.sources.simulator import ANOMALY_KINDS, make_series

    out = []
    for kind in kinds:
        F = MULTIVARIATE_FIELDS if kind in MULTIVARIATE_KINDS else 1
        for s in seeds:
            seed = s + 100 * ANOMALY_KINDS.index(kind)
            ts, vals, labels = make_series(kind, rows, seed, interval, n_anomalies=3, fields=F)
            names = ("value",) if F == 1 else tuple(f"x{i}" for i in range(F))
            out.append(Case(kind, f"{kind}/s{seed}", ts, vals, labels, names))
    return out


def public_cases() -> list[Case]:
    """The shipped public series (value columns renamed ``value`` / ``x0..``; data unchanged)."""
    out = []
    for name, ts, vals, labels in load_public():
        F = vals.shape[1]
        names = ("value",) if F == 1 else tuple(f"x{i}" for i in range(F))
        out.append(Case("public", name, ts, vals, labels, names))
    return out


def write_csv(path: str | Path, ts: np.ndarray, values: np.ndarray, fields: Sequence[str]) -> None:
    """A ``timestamp,<fields>`` CSV as ``sentinel replay`` reads it (epoch seconds; NaN as empty)."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(",".join(["timestamp", *fields]) + "\n")
        for t, row in zip(ts.tolist(), values.tolist(), strict=True):
            f.write(f"{t!r}," + ",".join("" if math.isnan(x) else repr(x) for x in row) + "\n")


# ---------------------------------------------------------------------- config
def _set(d: dict, dotted: str, value: object) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        d = d.setdefault(k, {})
    d[keys[-1]] = value


def parse_overrides(items: Iterable[str]) -> dict[str, object]:
    """``["detect.threshold.risk=1e-5", "alerts.for=2m"]`` -> ``{dotted key: YAML-typed value}``."""
    out: dict[str, object] = {}
    for it in items:
        key, sep, val = it.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects KEY=VALUE, got {it!r}")
        out[key.strip()] = yaml.safe_load(val)
    return out


def config_text(fields: Sequence[str], overrides: dict[str, object] | None = None,
                base: str | Path = DEFAULT_CONFIG) -> str:
    """The YAML ``sentinel replay`` would load: ``base`` with ``fields`` and any overrides set."""
    raw = yaml.safe_load(Path(base).read_text(encoding="utf-8")) or {}
    raw = copy.deepcopy(raw)
    raw["fields"] = list(fields)
    for k, v in (overrides or {}).items():
        _set(raw, k, v)
    return yaml.safe_dump(raw, sort_keys=False)


# ---------------------------------------------------------------------- running detectors
@dataclass
class CaseRun:
    """Per-row predictions of every detector on one case, and where scoring starts."""

    case: Case
    ready_from: int                       # first row Sentinel scored (its warm-up is rows < ready_from)
    clean_end: int                        # first labelled row (the clean part is [ready_from, clean_end))
    preds: dict[str, np.ndarray]          # detector -> [N] bool; a missing detector was skipped
    seconds: dict[str, float] = field(default_factory=dict)
    trainings: int = 0


def sentinel_predictions(case: Case, cfg_text: str, workdir: str | Path) -> tuple[np.ndarray, int, int]:
    """Run ``sentinel replay``'s code path on ``case``: ``(is_anomaly [N] bool, ready_from, trainings)``."""
    from sentinel.config import load_config_text
    from sentinel.replay import replay

    path = Path(workdir) / "input.csv"
    write_csv(path, case.ts, case.values, case.fields)
    cfg = load_config_text(cfg_text, source="quality.yaml", base_dir=Path(workdir))
    res = replay(cfg, path, progress=False)
    ready = np.flatnonzero(np.isfinite(res.threshold))
    ready_from = int(ready[0]) if len(ready) else len(case.ts)
    return res.is_anomaly.astype(bool), ready_from, res.trainings


def baseline_predictions(scores: np.ndarray, ready_from: int, clean_end: int, far: float) -> np.ndarray:
    """``scores > threshold`` with the threshold at ``far`` alarms/row on rows ``[ready_from, clean_end)``."""
    thr = pick_threshold(scores[ready_from:], max(clean_end - ready_from, 0), far)
    return scores > thr


def run_case(case: Case, cfg_text: str, far: float, baselines: bool = True,
             sentinel: Callable[[Case, str, str | Path], tuple[np.ndarray, int, int]] | None = None) -> CaseRun:
    """Every detector on one case. ``sentinel`` replaces the Sentinel runner (tests pass a stub)."""
    import torch

    torch.set_num_threads(1)
    run_sentinel = sentinel or sentinel_predictions
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sentinel-quality-") as d:
        pred, ready_from, trainings = run_sentinel(case, cfg_text, d)
    lab = np.flatnonzero(case.labels)
    clean_end = int(lab[0]) if len(lab) else len(case.labels)
    out = CaseRun(case, ready_from, clean_end, {SENTINEL: np.asarray(pred, dtype=bool)},
                  {SENTINEL: time.perf_counter() - t0}, trainings)
    if baselines:
        dets: dict[str, RollingZScore | HalfSpaceTrees | None] = {ZSCORE: RollingZScore(), HST: half_space_trees(0)}
        for name, det in dets.items():
            if det is None:
                continue
            t0 = time.perf_counter()
            out.preds[name] = baseline_predictions(det.score(case.values), ready_from, clean_end, far)
            out.seconds[name] = time.perf_counter() - t0
    return out


# ---------------------------------------------------------------------- scoring
@dataclass
class Tally:
    """Scores of one detector summed over cases (micro average); NAB kept per case for combining."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    detected: int = 0
    missed: int = 0
    false_alarms: int = 0
    delay_sum: float = 0.0
    nab: list[NabResult] = field(default_factory=list)
    clean_rows: int = 0
    clean_alarm_rows: int = 0
    days: float = 0.0  # scored time, summed over the cases' streams

    def add(self, labels: np.ndarray, preds: np.ndarray, ts: np.ndarray, clean: np.ndarray) -> None:
        p = point_scores(labels, preds)
        self.tp, self.fp, self.fn = self.tp + p.tp, self.fp + p.fp, self.fn + p.fn
        e: EventScores = event_scores(labels, preds, ts)
        self.detected += e.detected
        self.missed += e.missed
        self.false_alarms += e.false_alarms
        if e.detected:
            self.delay_sum += e.mean_delay * e.detected
        if labels.any():
            self.nab.append(nab_score(labels, onsets(preds)))
        self.clean_rows += int(clean.sum())
        self.clean_alarm_rows += int((preds & clean).sum())
        if len(ts) > 1:
            self.days += float(ts[-1] - ts[0]) / 86400.0

    def merge(self, other: Tally) -> None:
        for k in ("tp", "fp", "fn", "detected", "missed", "false_alarms", "delay_sum", "clean_rows",
                  "clean_alarm_rows", "days"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        self.nab.extend(other.nab)

    @staticmethod
    def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        return p, r, (2 * p * r / (p + r) if p + r else 0.0)

    @property
    def point(self) -> tuple[float, float, float]:
        return self._prf(self.tp, self.fp, self.fn)

    @property
    def event(self) -> tuple[float, float, float]:
        p = self.detected / (self.detected + self.false_alarms) if self.detected + self.false_alarms else 0.0
        r = self.detected / (self.detected + self.missed) if self.detected + self.missed else 0.0
        return p, r, (2 * p * r / (p + r) if p + r else 0.0)

    @property
    def mean_delay(self) -> float:
        return self.delay_sum / self.detected if self.detected else math.nan

    @property
    def nab_score(self) -> float:
        return nab_combine(self.nab) if self.nab else math.nan

    @property
    def false_alarms_per_day(self) -> float:
        """False alarm runs per stream per day of scored data."""
        return self.false_alarms / self.days if self.days > 0 else math.nan

    @property
    def clean_far(self) -> float:
        """Alarm rows per clean row (the false-alarm rate on the clean part)."""
        return self.clean_alarm_rows / self.clean_rows if self.clean_rows else math.nan


def score_run(run: CaseRun) -> tuple[dict[str, Tally], int]:
    """Tallies of every detector on rows ``>= ready_from``; also the labelled rows lost to warm-up."""
    c, s = run.case, run.ready_from
    labels, ts = c.labels[s:], c.ts[s:]
    clean = np.zeros(len(c.labels), dtype=bool)
    clean[s:run.clean_end] = True
    out = {}
    for name, pred in run.preds.items():
        t = Tally()
        t.add(labels, pred[s:], ts, clean[s:])
        out[name] = t
    return out, int(c.labels[:s].sum())


@dataclass
class Report:
    groups: dict[str, dict[str, Tally]]   # group -> detector -> tally
    lost: dict[str, int]                  # group -> labelled rows inside Sentinel's warm-up
    runs: list[CaseRun]


def aggregate(runs: Iterable[CaseRun]) -> Report:
    groups: dict[str, dict[str, Tally]] = {}
    lost: dict[str, int] = {}
    rs = list(runs)
    for r in rs:
        tallies, lo = score_run(r)
        g = groups.setdefault(r.case.group, {})
        for name, t in tallies.items():
            g.setdefault(name, Tally()).merge(t)
        lost[r.case.group] = lost.get(r.case.group, 0) + lo
    return Report(groups, lost, rs)


def overall(report: Report, public: bool = False) -> dict[str, Tally]:
    out: dict[str, Tally] = {}
    for g, dets in report.groups.items():
        if (g == "public") != public:
            continue
        for name, t in dets.items():
            out.setdefault(name, Tally()).merge(t)
    return out


# ---------------------------------------------------------------------- output
def _f(x: float, nd: int = 2) -> str:
    return "  nan" if not math.isfinite(x) else f"{x:.{nd}f}"


def _winner(dets: dict[str, Tally], key: Callable[[Tally], float]) -> str:
    vals = {k: key(t) for k, t in dets.items() if math.isfinite(key(t))}
    if not vals:
        return "-"
    best = max(vals.values())
    top = [k for k, v in vals.items() if v >= best - 1e-9]
    return "=".join(top) if len(top) > 1 else top[0]


def format_table(report: Report) -> str:
    head = (f"{'kind':<18} {'detector':<9} {'pP':>5} {'pR':>5} {'pF1':>5}  {'eP':>5} {'eR':>5} {'eF1':>5} "
            f"{'found':>6} {'FA':>4} {'FA/day':>6} {'delay_min':>9} {'NAB':>7} {'cleanFAR':>9}")
    lines = [head, "-" * len(head)]

    def block(label: str, dets: dict[str, Tally], extra: str = "") -> None:
        for name in DETECTORS:
            t = dets.get(name)
            if t is None:
                lines.append(f"{label:<18} {name:<9} skipped (dependency missing)")
                label = ""
                continue
            pp, pr, pf = t.point
            ep, er, ef = t.event
            found = f"{t.detected}/{t.detected + t.missed}"
            lines.append(f"{label:<18} {name:<9} {_f(pp):>5} {_f(pr):>5} {_f(pf):>5}  {_f(ep):>5} {_f(er):>5} "
                         f"{_f(ef):>5} {found:>6} {t.false_alarms:>4} {_f(t.false_alarms_per_day, 2):>6} "
                         f"{_f(t.mean_delay / 60.0, 1):>9} "
                         f"{_f(t.nab_score, 1):>7} {_f(t.clean_far * 100, 3):>8}%")
            label = ""
        lines.append(f"{'':<18} best NAB: {_winner(dets, lambda t: t.nab_score)}; "
                     f"best event F1: {_winner(dets, lambda t: t.event[2])}{extra}")

    for g, dets in report.groups.items():
        if g == "public":
            continue
        block(g, dets)
    sim = overall(report)
    if sim:
        lines.append("-" * len(head))
        block("ALL simulator", sim)
    pub = report.groups.get("public")
    if pub:
        lines.append("-" * len(head))
        for r in report.runs:
            if r.case.group == "public":
                one, lo = score_run(r)
                block(f"public:{r.case.name.removeprefix('streamad_')}"[:18], one,
                      f"; labelled rows lost to warm-up: {lo}" if lo else "")
        block("ALL public", pub)
    return "\n".join(lines)


def result_line(report: Report, seconds: float, extra: dict[str, object] | None = None) -> str:
    short = {SENTINEL: "sentinel", ZSCORE: "zscore", HST: "hst"}
    kv: dict[str, object] = {}
    sim, pub = overall(report), overall(report, public=True)
    for name in DETECTORS:
        s = short[name]
        if name in sim:
            kv[f"f1_{s}"] = round(sim[name].point[2], 4)
            kv[f"event_f1_{s}"] = round(sim[name].event[2], 4)
            kv[f"nab_{s}"] = round(sim[name].nab_score, 2)
            kv[f"fa_per_day_{s}"] = round(sim[name].false_alarms_per_day, 3)
        if name in pub:
            kv[f"public_nab_{s}"] = round(pub[name].nab_score, 2)
            kv[f"public_event_f1_{s}"] = round(pub[name].event[2], 4)
    kinds = [g for g in report.groups if g != "public"]
    wins = 0
    for g in kinds:
        dets = report.groups[g]
        others = [t.nab_score for k, t in dets.items() if k != SENTINEL and math.isfinite(t.nab_score)]
        if SENTINEL in dets and others and all(dets[SENTINEL].nab_score > o for o in others):
            wins += 1
    kv["kinds_sentinel_best_nab"] = f"{wins}/{len(kinds)}"
    kv.update(extra or {})
    kv["seconds"] = round(seconds, 1)
    return "RESULT " + " ".join(f"{k}={v}" for k, v in kv.items())


# ---------------------------------------------------------------------- real data first
def real_data(overrides: dict[str, object], data: str | None = None) -> dict[str, object]:
    """SKAB's protocol (:mod:`benchmarks.skab`) and the calibration table on normal real data
    (:mod:`benchmarks.calibration`), printed before the simulator; returns their RESULT keys.
    Skipped, with a note, when the SKAB folder is absent."""
    from benchmarks import calibration
    from benchmarks.skab import DEFAULT_DATA, run_skab

    root = Path(data or DEFAULT_DATA)
    if not (root / "valve1").exists():
        print(f"# real data: no SKAB folder at {root}: skipped (pass --data)")
        return {}
    sk = run_skab(dict(overrides), root)
    print(f"# SKAB ({sk['files']} files, first 400 rows history, alerts as fired): F1 {sk['f1']:.3f} "
          f"FAR {100 * sk['far']:.1f}% MAR {100 * sk['mar']:.1f}% event recall {sk['event_recall']:.2f} "
          f"false alerts/hour {sk['false_alerts_per_hour']:.2f} "
          "(published offline: Conv-AE 0.78, MSET 0.78, LSTM-AE 0.74)")
    sets = calibration.measure(overrides, root)
    decades = float(load_decades(overrides))
    print("# calibration on normal data (observed vs nominal share of rows at or above s):")
    for line in calibration.table(sets, decades):
        print(line)
    kv: dict[str, object] = {"skab_f1": round(sk["f1"], 4), "skab_far": round(100 * sk["far"], 2),
                             "skab_mar": round(100 * sk["mar"], 2),
                             "skab_fa_per_day": round(24 * sk["false_alerts_per_hour"], 2)}
    for lv in calibration.LEVELS:
        ratios = [c.share(lv) / 10.0 ** (-lv * decades) for c in sets if len(c.scores)]
        kv[f"calib_worst_{lv}"] = round(max(ratios), 3) if ratios else math.nan
    return kv


def load_decades(overrides: dict[str, object]) -> float:
    from sentinel.config import load_config_text

    return load_config_text(config_text(["value"], overrides)).detect.score_decades


# ---------------------------------------------------------------------- main
def _run_one(args: tuple[Case, str, float, bool]) -> CaseRun:
    case, cfg_text, far, with_baselines = args
    return run_case(case, cfg_text, far, with_baselines)


def run_all(cases: Sequence[Case], overrides: dict[str, object], far: float, jobs: int = 1,
            config: str | Path = DEFAULT_CONFIG, baselines: bool = True,
            log: Callable[[str], None] | None = None) -> Report:
    """Run every case (``jobs`` worker processes when > 1) and aggregate."""
    work = [(c, config_text(c.fields, overrides, config), far, baselines) for c in cases]
    runs: list[CaseRun] = []
    if jobs <= 1:
        for w in work:
            runs.append(_run_one(w))
            if log:
                log(_progress(runs[-1], len(runs), len(work)))
    else:
        import multiprocessing as mp

        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as ex:
            for r in ex.map(_run_one, work):
                runs.append(r)
                if log:
                    log(_progress(r, len(runs), len(work)))
    return aggregate(runs)


def _progress(r: CaseRun, i: int, n: int) -> str:
    secs = " ".join(f"{k}={v:.1f}s" for k, v in r.seconds.items())
    alarms = " ".join(f"{k}:{int(onsets(p).sum())}" for k, p in r.preds.items())
    return f"[{i}/{n}] {r.case.name}: ready_from={r.ready_from} trainings={r.trainings} alarms {alarms} ({secs})"


def main(argv: Sequence[str] | None = None) -> int:
    from sentinel.sources.simulator import ANOMALY_KINDS

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a fast subset: 5 kinds, 1 seed, 2400 rows")
    ap.add_argument("--kinds", default=None, help="comma-separated anomaly kinds (default: all)")
    ap.add_argument("--seeds", default=None, help="comma-separated seeds (default 1,2; quick: 1)")
    ap.add_argument("--rows", type=int, default=None, help="rows per simulated series (default 4000; quick 2400)")
    ap.add_argument("--interval", type=float, default=FULL["interval"], help="seconds between rows (60)")
    ap.add_argument("--far", type=float, default=0.001,
                    help="baselines: false alarms per row on the clean part that sets their threshold (0.001)")
    ap.add_argument("--config", default=str(DEFAULT_CONFIG), help="base config (default config/replay.yaml)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key for an experiment, e.g. detect.threshold.risk=1e-5")
    ap.add_argument("--no-public", action="store_true", help="skip the public data")
    ap.add_argument("--no-real", action="store_true", help="skip SKAB and the calibration table")
    ap.add_argument("--data", default=None, help="SKAB data folder (default ../shared/data/skab)")
    ap.add_argument("--no-baselines", action="store_true", help="Sentinel only (for tuning sweeps)")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="worker processes")
    a = ap.parse_args(argv)

    kinds = tuple(a.kinds.split(",")) if a.kinds else (QUICK["kinds"] if a.quick else ANOMALY_KINDS)
    bad = [k for k in kinds if k not in ANOMALY_KINDS]
    if bad:
        ap.error(f"unknown kinds {bad}; expected some of {ANOMALY_KINDS}")
    seeds = tuple(int(s) for s in a.seeds.split(",")) if a.seeds else (QUICK["seeds"] if a.quick else FULL["seeds"])
    rows = a.rows or (QUICK["rows"] if a.quick else FULL["rows"])
    overrides = parse_overrides(a.set)
    cases = simulator_cases(kinds, seeds, rows, a.interval)
    if not a.no_public:
        cases += public_cases()
    print(f"# quality: {len(cases)} series ({len(kinds)} kinds x {len(seeds)} seeds x {rows} rows at "
          f"{a.interval:g}s + public), config {a.config} overrides {overrides or 'none'}, baselines far={a.far}, "
          f"jobs={a.jobs}, {platform.processor() or platform.machine()} x{os.cpu_count()} cores, "
          f"python {platform.python_version()}", flush=True)
    t0 = time.perf_counter()
    extra: dict[str, object] = {}
    if not a.no_real:
        extra = real_data(overrides, a.data)
    report = run_all(cases, overrides, a.far, a.jobs, a.config, not a.no_baselines,
                     log=lambda s: print(s, file=sys.stderr, flush=True))
    secs = time.perf_counter() - t0
    print(format_table(report))
    print("# point P/R/F1 over rows; event P/R/F1 over windows/alarm runs (FA = false alarm runs); delay = mean "
          "minutes from window start to first alarm row; NAB standard profile on alarm onsets (0 null, 100 perfect);"
          " cleanFAR = alarm rows / rows on the clean part. Rows before Sentinel is ready are not scored.")
    print(result_line(report, secs, {**extra, "rows": rows, "seeds": len(seeds), "far": a.far}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
