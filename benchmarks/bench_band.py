"""What the expected band costs per scoring round: the band's steps against the rest of ``Engine.process``.

``--streams`` univariate streams (default 10,000) are trained on 70 samples (1 epoch: the weights'
quality does not change the cost), then ``--rounds`` rounds of one sample per stream are scored,
each engine step timed separately. The band is three steps of the round (``expect``: the bank's
prediction and normalisation before it steps; ``band``: :func:`sentinel.detect.band.expected_band`;
``record_band``: the last band and the chart rings); the baseline is the bank step (``model``) and
the whole round, in the same process.

Run: ``OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_band.py [--streams 10000] [--rounds 40]``.
Ends with ``RESULT streams=... band_ms=... model_ms=... round_ms=... band_fraction_of_round=...``.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from sentinel.config import SentinelConfig
from sentinel.model.train import train
from sentinel.runtime.engine import Engine, steps
from sentinel.types import Sample, StreamKey

BAND_STEPS = ("expect", "band", "record_band")
OTHER_STEPS = ("validate", "gaps", "append_history", "model", "score", "stuck", "alert", "record")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=40)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = SentinelConfig.model_validate({"train": {"min_history": 64, "min_history_span": 0, "epochs": 1},
                                         "streams": {"history_size": 128}})
    e = Engine(cfg)
    keys = [StreamKey.of("m", id=str(i)) for i in range(args.streams)]
    rng = np.random.default_rng(0)
    for t in range(70):
        e.process([Sample(k, float(t), ("v",), (float(rng.normal()),)) for k in keys])
    for job in e.due_training(70.0):
        e.apply_training(job, train(job, e.settings), 70.0)
    acc: dict[str, float] = {}
    for name in BAND_STEPS + OTHER_STEPS:
        f = getattr(steps, name)

        def timed(*a, _f=f, _n=name, **k):  # type: ignore[no-untyped-def]
            t0 = time.perf_counter()
            r = _f(*a, **k)
            acc[_n] = acc.get(_n, 0.0) + time.perf_counter() - t0
            return r

        setattr(steps, name, timed)
    batches = [[Sample(k, float(t), ("v",), (float(rng.normal()),)) for k in keys]
               for t in range(70, 70 + args.rounds)]
    t0 = time.perf_counter()
    for b in batches:
        e.process(b)
    round_ms = (time.perf_counter() - t0) / args.rounds * 1e3
    per = {k: v / args.rounds * 1e3 for k, v in acc.items()}
    band_ms = sum(per[k] for k in BAND_STEPS)
    print(f"machine: {platform.machine()} {platform.processor() or ''}, torch {torch.__version__}, 1 thread")
    for k, v in sorted(per.items(), key=lambda kv: -kv[1]):
        print(f"  {k:15s} {v:8.2f} ms/round")
    print(f"round (Engine.process) {round_ms:.2f} ms; band steps {band_ms:.2f} ms")
    print(f"RESULT streams={args.streams} band_ms={band_ms:.3f} model_ms={per['model']:.3f} round_ms={round_ms:.3f} "
          f"band_fraction_of_round={band_ms / round_ms:.4f} band_vs_model={band_ms / per['model']:.4f}")


if __name__ == "__main__":
    main()
