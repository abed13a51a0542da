"""Scoring step: stream-ticks/s of ``Bank.step`` vs the naive per-stream loop and vs the memory roofline.

For each (streams S, hidden H) the bank holds S univariate streams (F = 1, contiguous
slots) and every stream ticks each round. The baseline, in the same process, is what
a tutorial would write: one ``nn.LSTM`` + ``nn.Linear`` per stream, stepped in a Python
loop (measured on ``--naive-streams`` streams, expressed per stream-tick). The
roofline is the bytes the step must move per stream-tick (weights + normalisers read,
recurrent state read and written) over the machine's read bandwidth, measured here
with a ``torch.sum`` over an array much larger than cache.

Each configuration runs with the weights stored in every ``--weight-dtypes`` (``model.weight_dtype``:
float32, bfloat16, float16), in the same process one after the other, and reports each one's rate as a
ratio of the float32 rate of the same run.

Run: ``.venv/bin/python benchmarks/bench_step.py [--streams 1000,10000,100000] [--hidden 32,64]
[--threads 2] [--device cpu] [--weight-dtypes float32,bfloat16,float16]``. One ``RESULT`` line per
configuration and dtype; the last lines are the 10k/H=32 configuration when it was measured.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from torch import nn

from sentinel.model.bank import Bank
from sentinel.model.cells import Dims


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def read_bandwidth(dev: torch.device, mib: int = 512, reps: int = 5) -> float:
    """Best read bandwidth in bytes/s: ``sum`` over a ``mib`` MiB float32 tensor (far beyond cache)."""
    x = torch.ones(mib * 1024 * 1024 // 4, device=dev)
    x.sum()
    sync(dev)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        x.sum()
        sync(dev)
        best = min(best, time.perf_counter() - t)
    n = x.numel() * 4
    del x
    return n / best


def make_bank(S: int, H: int, window: int, dev: torch.device, weight_dtype: str = "float32") -> Bank:
    """A bank with S live, contiguous slots and random weights (no per-slot Python work)."""
    bank = Bank(Dims(1, H, window), device=dev, capacity=S, weight_dtype=weight_dtype)
    bank._free.clear()  # every slot live: slots 0..S-1 (state is already reset by allocation)
    g = torch.Generator(device=dev).manual_seed(0)
    for k in ("W", "D"):
        t = bank.t[k]
        t.normal_(0.0, 1.0 / H**0.5, generator=g)
    return bank


def time_bank(bank: Bank, S: int, rounds: int, dev: torch.device) -> float:
    slots = np.arange(S)
    x = torch.randn(S, 1, device=dev)
    for _ in range(3):  # warm-up (allocator, kernels)
        bank.step(slots, x)
    sync(dev)
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        bank.step(slots, x)
        sync(dev)
        best = min(best, time.perf_counter() - t)
    return S / best


class NaiveStream(nn.Module):
    """The tutorial model: one LSTM and one linear decoder per stream."""

    def __init__(self, H: int, window: int):
        super().__init__()
        self.lstm = nn.LSTM(1, H, batch_first=True)
        self.dec = nn.Linear(H, window + 1)


def time_naive(n: int, H: int, window: int, rounds: int, threads: int = 1) -> float:
    """Stream-ticks/s of stepping ``n`` per-stream models one at a time in a Python loop (CPU).

    Runs with ``threads`` torch threads (default 1, the loop's best setting: with 2 threads
    every tiny op pays a thread hand-off, measured 5-9x slower on a busy 2-core machine).
    """
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _time_naive(n, H, window, rounds)
    finally:
        torch.set_num_threads(prev)


def _time_naive(n: int, H: int, window: int, rounds: int) -> float:
    models = [NaiveStream(H, window).eval() for _ in range(n)]
    states = [(torch.zeros(1, 1, H), torch.zeros(1, 1, H)) for _ in range(n)]
    wins = [torch.zeros(window) for _ in range(n)]
    xs = torch.randn(rounds + 1, n)
    with torch.inference_mode():
        best = float("inf")
        for r in range(rounds + 1):
            t = time.perf_counter()
            for i, m in enumerate(models):
                x = xs[r, i]
                out, states[i] = m.lstm(x.view(1, 1, 1), states[i])
                y = m.dec(out[0, 0])
                wins[i] = torch.cat((wins[i][1:], x.view(1)))
                float(((y[:window] - wins[i]) ** 2).mean())  # the score, as a Python float per stream
            if r:  # round 0 is warm-up
                best = min(best, time.perf_counter() - t)
    return n / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", default="1000,10000,100000")
    ap.add_argument("--hidden", default="32,64")
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--rounds", type=int, default=0, help="timed rounds per config (0: by size)")
    ap.add_argument("--naive-streams", type=int, default=300)
    ap.add_argument("--naive-rounds", type=int, default=3)
    ap.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    ap.add_argument("--max-gib", type=float, default=8.0, help="skip configs whose bank exceeds this")
    ap.add_argument("--weight-dtypes", default="float32,bfloat16,float16",
                    help="model.weight_dtype settings to run each configuration with (float32 first: the ratios' base)")
    a = ap.parse_args()
    dev = torch.device("cuda" if a.device == "auto" and torch.cuda.is_available() else
                       ("cpu" if a.device == "auto" else a.device))
    torch.set_num_threads(a.threads)
    print(f"# machine: {platform.machine()} {platform.processor() or ''} cpus={os.cpu_count()} "
          f"torch={torch.__version__} device={dev} torch.get_num_threads()={torch.get_num_threads()}")
    bw = read_bandwidth(dev)
    print(f"# measured read bandwidth: {bw / 1e9:.1f} GB/s (sum over 512 MiB)")
    naive: dict[int, float] = {}
    for H in (int(h) for h in a.hidden.split(",")):
        naive[H] = time_naive(a.naive_streams, H, a.window, a.naive_rounds)
        print(f"# naive loop H={H}: {naive[H]:,.0f} stream-ticks/s over {a.naive_streams} streams (1 thread)")
    results = []
    for S in (int(s) for s in a.streams.split(",")):
        for H in (int(h) for h in a.hidden.split(",")):
            probe = Bank(Dims(1, H, a.window), capacity=1).bytes_per_stream()
            gib = S * (probe["model"] + probe["state"]) / 2**30
            if gib > a.max_gib:
                print(f"# skip S={S} H={H}: {gib:.1f} GiB > --max-gib {a.max_gib}")
                continue
            base = None
            for wd in a.weight_dtypes.split(","):
                bank = make_bank(S, H, a.window, dev, wd)
                rounds = a.rounds or max(5, min(30, 400_000 // S))
                tps = time_bank(bank, S, rounds, dev)
                base = base or tps
                b = bank.bytes_per_stream()
                moved = b["model"] + 2 * b["state"]  # weights read once, state read and written
                frac = tps * moved / bw
                ratio = tps / naive[H]
                line = (f"RESULT streams={S} hidden={H} weight_dtype={wd} threads={torch.get_num_threads()} "
                        f"device={dev.type} ticks_per_s={tps:.0f} ratio_vs_float32={tps / base:.2f} "
                        f"naive_ticks_per_s={naive[H]:.0f} naive_threads=1 ratio_vs_naive={ratio:.1f} "
                        f"bytes_per_tick={moved} achieved_gb_per_s={tps * moved / 1e9:.2f} "
                        f"bandwidth_gb_per_s={bw / 1e9:.1f} roofline_fraction={frac:.2f} "
                        f"bytes_per_stream={b['model'] + b['state']} model_bytes={b['model']} state_bytes={b['state']}")
                results.append(((S, H), line))
                print(line, flush=True)
                del bank
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
    # the headline configuration last, so `tail -1` finds it
    for key, line in results:
        if key == (10_000, 32):
            print(line)


if __name__ == "__main__":
    main()
