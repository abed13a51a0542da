"""SKAB outlier-detection protocol through ``sentinel replay``'s code path (one fleet replay).

Protocol (``../shared/data/skab/README.md``): each of the 34 experiment files
(``valve1/``, ``valve2/``, ``other/``) is one stream; its first 400 rows are history
(warm-up and first training, never scored: ``--train-rows 400``), the rest is scored
one row at a time. All 34 files run as ONE fleet replay (:func:`sentinel.replay.replay_fleet`,
the code path of ``sentinel replay --input DIR --train-rows 400``), with
``config/replay.yaml`` as shipped unless overrides are given. The prediction is the
output's ``is_anomaly`` (the alert is firing at that row).

Scores, over the scored parts of all files concatenated (as the SKAB authors score):
point-wise F1, FAR = FP/(FP+TN) and MAR = FN/(FN+TP) against the ``anomaly`` column;
plus event-wise recall (a labelled window is found when any of its rows fires) and false
alerts per hour (firing spans that touch no labelled window, per hour of scored data).

Run: ``.venv/bin/python benchmarks/skab.py [--data ../shared/data/skab] [--set train.epochs=20 ...]``.
From Python: ``from benchmarks.skab import run_skab; run_skab({"detect.threshold.risk": 1e-5})``.
Ends with ``RESULT f1=... far=... mar=... event_recall=... false_alerts_per_hour=... f1_min=... f1_max=...
seeds=... seconds=...``: the means over ``--seeds`` training seeds (default 3).
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_DATA = str(ROOT.parent / "shared" / "data" / "skab")
DEFAULT_CONFIG = ROOT / "config" / "replay.yaml"
GROUPS = ("valve1", "valve2", "other")
HISTORY_ROWS = 400


def skab_files(data: str | Path = DEFAULT_DATA) -> list[Path]:
    """The 34 experiment files, in the authors' order (group, then file number)."""
    root = Path(data)
    out: list[Path] = []
    for g in GROUPS:
        out += sorted((root / g).glob("*.csv"), key=lambda p: (len(p.stem), p.stem))
    if not out:
        raise FileNotFoundError(f"no SKAB files under {root} (expected {', '.join(GROUPS)}/*.csv)")
    return out


def _set(d: dict, dotted: str, value: object) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        d = d.setdefault(k, {})
    d[keys[-1]] = value


def config_text(overrides: dict[str, Any] | None = None, base: str | Path = DEFAULT_CONFIG) -> str:
    """``base`` with dotted-key overrides (``{"detect.threshold.risk": 1e-5}``; nested dicts also merge)."""
    raw = copy.deepcopy(yaml.safe_load(Path(base).read_text(encoding="utf-8")) or {})
    for k, v in (overrides or {}).items():
        if isinstance(v, dict) and "." not in k:
            for k2, v2 in v.items():
                _set(raw, f"{k}.{k2}", v2)
        else:
            _set(raw, k, v)
    return yaml.safe_dump(raw, sort_keys=False)


def run_skab(cfg_overrides: dict[str, Any] | None = None, data: str | Path = DEFAULT_DATA,
             files: list[str | Path] | None = None, *, config: str | Path = DEFAULT_CONFIG,
             history_rows: int = HISTORY_ROWS, progress: bool = False) -> dict[str, Any]:
    """One fleet replay of the SKAB files; returns the metrics (fractions, not percent) and per-file rows."""
    from sentinel.config import load_config_text
    from sentinel.replay import options_for, read_series, replay_fleet
    from sentinel.replay.report import Tally, tally

    t0 = time.perf_counter()
    paths = [Path(f) for f in files] if files else skab_files(data)
    cfg = load_config_text(config_text(cfg_overrides, config), source=str(config), base_dir=Path(config).parent)
    opts = options_for(cfg)
    series = []
    for p in paths:
        name = f"{p.parent.name}/{p.stem}"
        series += read_series(p, opts, name)
    fleet = replay_fleet(cfg, series, train_rows=history_rows, progress=progress)
    total = Tally()
    per_file = []
    for sr in fleet.streams:
        t = tally(sr, "anomaly")
        if t is None:
            raise ValueError(f"{sr.series.path}: no 'anomaly' column")
        total.add(t)
        per_file.append({"file": sr.series.name, "rows": len(sr.series), "f1": t.f1, "far": t.far, "mar": t.mar,
                         "events": t.events, "found": t.found, "false_alerts": t.false_alerts,
                         "trained": sr.first_train is not None})
    seconds = time.perf_counter() - t0
    hours = total.seconds / 3600.0
    return {"f1": total.f1, "far": total.far, "mar": total.mar, "precision": total.precision,
            "recall": total.recall, "event_recall": total.event_recall, "events": total.events,
            "events_found": total.found, "false_alerts": total.false_alerts,
            "false_alerts_per_hour": total.false_alerts / hours if hours > 0 else float("nan"),
            "tp": total.tp, "fp": total.fp, "fn": total.fn, "tn": total.tn, "files": len(per_file),
            "rows": fleet.rows, "seconds": seconds, "replay_seconds": fleet.seconds,
            "train_seconds": fleet.train_seconds, "jobs": fleet.jobs, "per_file": per_file}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=os.path.relpath(DEFAULT_DATA), help="SKAB data folder (default ../shared/data/skab)")
    ap.add_argument("--config", default=str(DEFAULT_CONFIG), help="base config (default config/replay.yaml)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="config override, e.g. detect.threshold.risk=1e-5 (repeatable)")
    ap.add_argument("--files", nargs="*", help="only these files (default: all 34)")
    ap.add_argument("--quiet", action="store_true", help="no per-file table")
    ap.add_argument("--seeds", type=int, default=3, metavar="N",
                    help="repeat with train.seed 0..N-1 and report the mean (default 3: on 400 rows of history "
                    "one training seed moves F1 by up to +-0.04); the per-file table is of seed 0")
    args = ap.parse_args(argv)
    import torch

    from benchmarks.quality import parse_overrides  # the one --set parser of the benchmarks

    try:
        ov = parse_overrides(args.sets)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    print(f"# SKAB outlier protocol: first {HISTORY_ROWS} rows of each file are history; one fleet replay")
    print(f"# machine: {platform.machine()} {os.cpu_count()} cpus, python {platform.python_version()}, "
          f"torch {torch.__version__}; config {args.config} overrides {ov or 'none'}")
    if args.seeds < 1:
        raise SystemExit("--seeds: at least 1")
    runs = []
    for seed in range(args.seeds):
        runs.append(run_skab({**ov, "train.seed": seed} if args.seeds > 1 or seed else ov, args.data, args.files,
                             config=args.config, progress=not args.quiet and seed == 0))
        if args.seeds > 1:
            q = runs[-1]
            print(f"# seed {seed}: f1={q['f1']:.4f} far={100 * q['far']:.2f} mar={100 * q['mar']:.2f} "
                  f"event_recall={q['event_recall']:.3f} false_alerts_per_hour={q['false_alerts_per_hour']:.2f}")
    r = runs[0]
    if not args.quiet:
        print(f"# {'file':<10} {'rows':>5} {'F1':>6} {'FAR%':>6} {'MAR%':>6} {'events':>7} {'false':>5}")
        for f in r["per_file"]:
            print(f"# {f['file']:<10} {f['rows']:>5} {f['f1']:>6.3f} {100 * f['far']:>6.1f} {100 * f['mar']:>6.1f} "
                  f"{f['found']:>3}/{f['events']:<3} {f['false_alerts']:>5}")
    print(f"# {r['files']} files, {r['rows']} rows, replay {r['replay_seconds']:.1f}s (training "
          f"{r['train_seconds']:.1f}s in {r['jobs']} batched jobs); P={r['precision']:.3f} R={r['recall']:.3f}; "
          f"events found {r['events_found']}/{r['events']}, false alerts {r['false_alerts']}")
    def mean(k: str) -> float:
        return sum(q[k] for q in runs) / len(runs)

    f1s = [q["f1"] for q in runs]
    print(f"RESULT f1={mean('f1'):.4f} far={100 * mean('far'):.2f} mar={100 * mean('mar'):.2f} "
          f"event_recall={mean('event_recall'):.3f} false_alerts_per_hour={mean('false_alerts_per_hour'):.2f} "
          f"f1_min={min(f1s):.4f} f1_max={max(f1s):.4f} seeds={len(runs)} "
          f"files={r['files']} rows={r['rows']} seconds={sum(q['seconds'] for q in runs):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
