"""What one engine round costs outside the bank step: CPU ms per round of ``Engine.process`` on a
column batch, less the CPU of ``Bank.step`` inside it, at ``--streams`` univariate streams.

The streams are made ready as ``bench_e2e.py`` does (random LSTM weights, thresholds calibrated on
their normal signal; no training). Each round is one :class:`~sentinel.columns.Columns` batch of one
sample per stream in slot order (the daemon's usual tick); ``--spikes`` streams per round get a
spike, so some alerts go pending, fire and resolve. CPU is this thread's (``time.thread_time``), so
other jobs on a shared machine weigh less than on wall-clock figures; the median and the best round
are reported.

Run: ``.venv/bin/python benchmarks/bench_round.py [--streams 10000] [--rounds 60] [--spikes 5]``.
Ends with ``RESULT streams=... round_ms=... step_ms=... outside_step_ms=... outside_step_best_ms=...``.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import bench_e2e
from sentinel.columns import Columns, SeriesTable
from sentinel.config import SentinelConfig
from sentinel.runtime.engine import Engine
from sentinel.types import StreamKey


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--spikes", type=int, default=5, help="streams spiked per round")
    args = ap.parse_args()
    torch.set_num_threads(1)  # as `sentinel run` scores (model.score_threads)
    S = args.streams
    cfg = SentinelConfig.model_validate({
        "streams": {"history_size": 64, "history_lookback": 0, "max_streams": max(S, 1)},
        "train": {"min_history": 1_000_000, "retrain_interval": 0, "drift_retrain": False, "progress": False},
        "alerts": {"for": 0, "for_ticks": 0, "cooldown": 0}})
    e = Engine(cfg)
    table = SeriesTable()
    sid = np.array([table.id_of(StreamKey.of("pump", site=f"s{i % 16}", pump=f"p{i}"), ("temp",)) for i in range(S)])
    T0 = bench_e2e.T0
    streams = np.arange(S)

    def batch(k: int, spikes: np.ndarray | None = None) -> Columns:
        x = 10.0 + np.sin(2 * np.pi * (k + bench_e2e.CALIB_STEPS + streams % 20) / 20.0) + 0.05 * np.sin(
            (k + bench_e2e.CALIB_STEPS) * 1.7 + streams)
        if spikes is not None:
            x[spikes] = 60.0
        return Columns(table, sid, np.full(S, float(T0 + k)), np.round(x, 4)[:, None])

    e.process(batch(0))  # creates every stream (the object path), warming
    bench_e2e.make_ready(e, float(T0))
    g = e.groups[1]
    step_cpu = [0.0]
    orig = g.bank.step

    def timed_step(*a, **k):  # type: ignore[no-untyped-def]
        t = time.thread_time()
        try:
            return orig(*a, **k)
        finally:
            step_cpu[0] += time.thread_time() - t

    g.bank.step = timed_step  # type: ignore[method-assign]
    warm = 5
    batches = [batch(k, (k * args.spikes + np.arange(args.spikes)) % S if args.spikes else None)
               for k in range(1, args.rounds + warm + 1)]
    rounds, steps_ms, events = [], [], 0
    for j, b in enumerate(batches):
        step_cpu[0] = 0.0
        t = time.thread_time()
        out = e.process(b)
        dt = time.thread_time() - t
        events += len(out.events)
        if j >= warm:
            rounds.append(dt * 1e3)
            steps_ms.append(step_cpu[0] * 1e3)
    r, s = np.array(rounds), np.array(steps_ms)
    outside = r - s
    print(f"# machine: {platform.machine()} {platform.processor() or ''}, torch {torch.__version__}, 1 thread; "
          f"{S} streams, {args.rounds} rounds (after {warm}), {args.spikes} spikes/round, {events} alert events")
    print(f"# round {np.median(r):.2f} ms (best {r.min():.2f}); Bank.step {np.median(s):.2f} ms; "
          f"outside the step {np.median(outside):.2f} ms (best {outside.min():.2f}) CPU per round")
    print(f"RESULT streams={S} rounds={args.rounds} round_ms={np.median(r):.3f} step_ms={np.median(s):.3f} "
          f"outside_step_ms={np.median(outside):.3f} outside_step_best_ms={outside.min():.3f} "
          f"outside_step_us_per_stream={np.median(outside) / S * 1e3:.3f} events={events}")


if __name__ == "__main__":
    main()
