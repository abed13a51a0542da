"""Training: seconds per epoch per 1,000 streams (F = 1, H = 32, history 2048 by default).

Trains ``--streams`` synthetic streams (seasonal signal + noise) for ``--epochs`` epochs
through :func:`sentinel.model.train.train` with early stopping off, on ``--device``
(``auto``: CUDA when present, else CPU with ``--threads`` torch threads).

Run: ``.venv/bin/python benchmarks/bench_train.py [--streams 1000] [--history 2048] [--epochs 2]``
Ends with one line: ``RESULT device=... streams=... sec_per_epoch_per_1k=...``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from sentinel.model.cells import Dims
from sentinel.model.train import TrainJob, TrainSettings, resolve_device, train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--history", type=int, default=2048)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dev = resolve_device(a.device)
    rng = np.random.default_rng(0)
    t = np.arange(a.history)[None, :, None]
    values = (rng.uniform(-5, 5, (a.streams, 1, 1)) + rng.uniform(1, 3, (a.streams, 1, 1))
              * np.sin(2 * np.pi * t / rng.integers(12, 96, (a.streams, 1, 1)))
              + 0.1 * rng.standard_normal((a.streams, a.history, 1))).astype(np.float32)
    job = TrainJob(dims=Dims(1, a.hidden, a.window), seeds=list(range(a.streams)), values=values,
                   loss_mask=np.ones(values.shape[:2], bool))
    s = TrainSettings(epochs=a.epochs, patience=a.epochs + 1)
    print(f"# machine: {platform.machine()} cpus={os.cpu_count()} torch={torch.__version__} device={dev} "
          f"threads={torch.get_num_threads()} streams={a.streams} history={a.history} hidden={a.hidden} "
          f"bptt={s.bptt} segments={s.segments}"
          + (f" gpu={torch.cuda.get_device_name(0)}" if dev.type == "cuda" else ""))
    res = train(job, s, device=str(dev))
    per_epoch = res.seconds / res.epochs
    print(f"# {res.epochs} epochs in {res.seconds:.1f}s; mean held-back loss {float(np.mean(res.val_loss)):.4f}")
    print(f"RESULT device={dev.type} streams={a.streams} history={a.history} hidden={a.hidden} "
          f"epochs={res.epochs} threads={torch.get_num_threads()} sec_per_epoch={per_epoch:.2f} "
          f"sec_per_epoch_per_1k={per_epoch * 1000 / a.streams:.2f}")


if __name__ == "__main__":
    main()
