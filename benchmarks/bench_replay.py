"""``sentinel replay`` speed: one long series, the SKAB fleet, a synthetic fleet; training alone.

Cases (all through :func:`sentinel.replay.replay_fleet`, the CLI's code path, with
``config/replay.yaml`` as shipped):

- ``train``: one retrain-sized job (one stream, ``streams.history_size`` samples, 12 epochs,
  with a champion) through the current trainer and through the trainer as landed before
  the speed work (``benchmarks/_train_landed.py``), in this process: ``train_ratio``.
- ``long``: a ``--long-rows``-row series at a ``--interval``-second cadence (default 23,000
  rows at 5 minutes: 80 days, a retrain per day), written as a CSV and replayed.
  ``--baseline`` also replays it with the landed trainer (minutes).
- ``skab``: the 34 SKAB files as one fleet with ``--train-rows 400`` (when ``--data`` exists).
- ``fleet``: ``--fleet-files`` synthetic files of ``--fleet-rows`` rows each, one fleet replay.

Run: ``.venv/bin/python benchmarks/bench_replay.py [--long-rows 23000] [--fleet-files 100 --fleet-rows 15000]
[--baseline] [--skip long,skab,fleet]``. Ends with ``RESULT long_seconds=... skab_seconds=... ...``.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "skab"


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def write_series(path: Path, rows: int, interval: float, seed: int, kind: str = "level_shift") -> None:
    from sentinel.sources.simulator import make_series

    ts, values, _labels = make_series(kind, rows, seed, interval=interval, n_anomalies=4)
    with open(path, "w") as f:
        f.write("timestamp,value\n")
        for t, v in zip(ts.tolist(), values[:, 0].tolist(), strict=True):
            f.write(f"{datetime.fromtimestamp(t, tz=UTC).strftime('%Y-%m-%dT%H:%M:%SZ')},{v:.5f}\n")


def replay_files(files: list[Path], train_rows: int = 0, trainer=None) -> dict:
    from sentinel.config import load_config
    from sentinel.replay import options_for, read_series, replay_fleet
    from sentinel.replay import run as run_mod

    cfg = load_config(ROOT / "config" / "replay.yaml")
    opts = options_for(cfg)
    c0, t0 = cpu_seconds(), time.perf_counter()
    series = [s for f in files for s in read_series(f, opts, f"{f.parent.name}/{f.stem}")]
    saved = run_mod.train
    if trainer is not None:
        run_mod.train = trainer
    try:
        res = replay_fleet(cfg, series, train_rows=train_rows, progress=False)
    finally:
        run_mod.train = saved
    wall = time.perf_counter() - t0
    return {"seconds": wall, "cpu": cpu_seconds() - c0, "rows": res.rows, "rows_per_s": res.rows / wall,
            "trainings": res.trainings, "jobs": res.jobs, "train_seconds": res.train_seconds}


def bench_train() -> dict:
    import torch

    import benchmarks._train_landed as landed
    from sentinel.config import load_config
    from sentinel.model.cells import Dims
    from sentinel.model.train import PARAM_KEYS, TrainJob, train
    from sentinel.runtime.engine import train_settings

    torch.set_num_threads(1)
    cfg = load_config(ROOT / "config" / "replay.yaml")
    s = train_settings(cfg)  # the shipped defaults
    m = cfg.model
    rng = np.random.default_rng(0)
    L = 2048
    v = (10 + np.sin(2 * np.pi * np.arange(L) / 288)[None, :, None] + 0.1 * rng.standard_normal((1, L, 1))
         ).astype(np.float32)
    mask = np.ones((1, L), bool)
    dims = Dims(1, m.hidden, m.window, m.cell)  # the landed trainer knows no baseline/level term
    first = train(TrainJob(dims, [1], v, mask), s)
    champ = {k: first.params[k] for k in PARAM_KEYS} | {"mean": first.mean, "std": first.std}
    out = {}
    for name, mod, job_t in (("new", None, TrainJob), ("landed", landed, landed.TrainJob)):
        fn = train if mod is None else mod.train
        job = job_t(dims, [1], v, mask, champion=champ, has_champion=np.ones(1, bool))
        fn(job, s)  # warm
        t0 = time.process_time()  # CPU time: on a shared machine wall time moves with the others' load
        for _ in range(3):
            fn(job, s)
        out[name] = (time.process_time() - t0) / 3
    out["epochs"] = first.epochs
    return {"train_epochs": out["epochs"], "train_seconds": out["new"], "landed_train_seconds": out["landed"], "train_ratio": out["landed"] / out["new"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--long-rows", type=int, default=23000)
    ap.add_argument("--interval", type=float, default=300.0)
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--fleet-files", type=int, default=20)
    ap.add_argument("--fleet-rows", type=int, default=15000)
    ap.add_argument("--fleet-interval", type=float, default=60.0)
    ap.add_argument("--baseline", action="store_true", help="also replay the long series with the landed trainer")
    ap.add_argument("--skip", default="", help="comma-separated cases to skip: train,long,skab,fleet")
    a = ap.parse_args()
    import torch

    skip = set(filter(None, a.skip.split(",")))
    print(f"# machine: {platform.machine()} {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}, python "
          f"{platform.python_version()}, torch {torch.__version__}; config/replay.yaml as shipped")
    kv: dict[str, object] = {}
    if "train" not in skip:
        r = bench_train()
        print(f"# train: one stream, 2048 samples, shipped train settings ({r['train_epochs']} epochs run), "
              f"champion: {r['train_seconds']:.3f}s CPU "
              f"(landed trainer {r['landed_train_seconds']:.3f}s, {r['train_ratio']:.1f}x)")
        kv |= {k: f"{v:.3f}" if k.endswith("seconds") else f"{v:.1f}" if k == "train_ratio" else v
               for k, v in r.items()}
    with tempfile.TemporaryDirectory() as tmp:
        if "long" not in skip:
            p = Path(tmp) / "long" / "series.csv"
            p.parent.mkdir()
            write_series(p, a.long_rows, a.interval, 7)
            r = replay_files([p])
            print(f"# long: {r['rows']} rows at {a.interval:.0f}s: {r['seconds']:.1f}s wall ({r['cpu']:.1f}s CPU), "
                  f"{r['rows_per_s']:,.0f} rows/s, {r['trainings']} trainings ({r['train_seconds']:.1f}s)")
            kv |= {"long_rows": r["rows"], "long_seconds": f"{r['seconds']:.1f}", "long_cpu": f"{r['cpu']:.1f}",
                   "long_rows_per_s": f"{r['rows_per_s']:.0f}", "long_trainings": r["trainings"]}
            if a.baseline:
                import benchmarks._train_landed as landed

                b = replay_files([p], trainer=landed.train)
                print(f"# long with the landed trainer: {b['seconds']:.1f}s wall ({b['cpu']:.1f}s CPU), "
                      f"{b['trainings']} trainings ({b['train_seconds']:.1f}s)")
                kv |= {"long_landed_seconds": f"{b['seconds']:.1f}",
                       "long_ratio": f"{b['seconds'] / r['seconds']:.1f}"}
        if "skab" not in skip and Path(a.data).is_dir():
            from benchmarks.skab import skab_files

            r = replay_files(skab_files(a.data), train_rows=400)
            print(f"# skab: {r['rows']} rows of 34 files as one fleet: {r['seconds']:.1f}s wall ({r['cpu']:.1f}s CPU), "
                  f"{r['trainings']} trainings in {r['jobs']} batched jobs ({r['train_seconds']:.1f}s)")
            kv |= {"skab_seconds": f"{r['seconds']:.1f}", "skab_rows_per_s": f"{r['rows_per_s']:.0f}"}
        if "fleet" not in skip and a.fleet_files > 0:
            d = Path(tmp) / "fleet"
            d.mkdir()
            files = []
            for i in range(a.fleet_files):
                f = d / f"s{i:03d}.csv"
                write_series(f, a.fleet_rows, a.fleet_interval, 100 + i, kind=("spike", "level_shift", "drift")[i % 3])
                files.append(f)
            r = replay_files(files)
            print(f"# fleet: {a.fleet_files} files x {a.fleet_rows} rows at {a.fleet_interval:.0f}s: {r['seconds']:.1f}s "
                  f"wall ({r['cpu']:.1f}s CPU), {r['rows_per_s']:,.0f} rows/s, {r['trainings']} trainings in "
                  f"{r['jobs']} batched jobs ({r['train_seconds']:.1f}s)")
            kv |= {"fleet_files": a.fleet_files, "fleet_rows": r["rows"], "fleet_seconds": f"{r['seconds']:.1f}",
                   "fleet_rows_per_s": f"{r['rows_per_s']:.0f}"}
    print("RESULT " + " ".join(f"{k}={v}" for k, v in kv.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
