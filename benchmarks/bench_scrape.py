"""``/metrics`` at scale: one scrape of the per-stream families (score, error, threshold, alert state,
alerts, and the expected band per field), rendered from the engine's arrays, vs the landed path (a
``StreamView`` and a ``StreamRow`` per stream, one prometheus_client sample each, and the
``BandCollector`` over the views) on the same engine in the same process.

An engine with ``--streams`` streams (one field, created through ``Engine.process``); 1 % of them
are put in pending or firing so ``non_ok`` has rows. Each figure is the best of ``--repeat`` runs of
the daemon's scrape function (:func:`sentinel.metrics.exposition`, text 0.0.4 and OpenMetrics), plus
gzip (level 1, as the server does) of the text body (what a scraper sending ``Accept-Encoding: gzip`` gets).

Run: ``.venv/bin/python benchmarks/bench_scrape.py [--streams 100000] [--repeat 3]``
Ends with ``RESULT streams=... all_s=... non_ok_s=... landed_all_s=... ratio_all=... ...``.
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric

from sentinel.band_metrics import BandCollector
from sentinel.columns import Columns, SeriesTable
from sentinel.config import load_config_text
from sentinel.metrics import Metrics, exposition, stream_rows
from sentinel.runtime.engine import Engine
from sentinel.types import Sample, StreamKey


class Landed:
    """The landed collector: rows from views, one Metric sample per row and family."""

    def __init__(self, rows):
        self.rows = rows

    def collect(self):
        fams = [Metric("sentinel_anomaly_score", "a", "gauge"), Metric("sentinel_reconstruction_error", "e", "gauge"),
                Metric("sentinel_threshold", "t", "gauge"), Metric("sentinel_alert_state", "s", "gauge"),
                Metric("sentinel_alerts", "n", "counter")]
        for r in self.rows():
            fams[0].add_sample("sentinel_anomaly_score", r.labels, r.score)
            fams[1].add_sample("sentinel_reconstruction_error", r.labels, r.error)
            fams[2].add_sample("sentinel_threshold", r.labels, r.threshold)
            fams[3].add_sample("sentinel_alert_state", r.labels, float(r.alert_state))
            fams[4].add_sample("sentinel_alerts_total", r.labels, float(r.alerts_total))
        yield from fams


def best(f, repeat: int) -> tuple[float, object]:
    out, dt = None, 1e9
    for _ in range(repeat):
        t = time.perf_counter()
        out = f()
        dt = min(dt, time.perf_counter() - t)
    return dt, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    n = args.streams
    e = Engine(load_config_text(f"streams: {{max_streams: {n}, history_size: 64}}\n", source="bench.yaml"))
    keys = [StreamKey.of("pump", site=f"s{i % 16}", pump=f"p{i}") for i in range(n)]
    rng = np.random.default_rng(0)
    batch = [Sample(k, 1.0, ("temp",), (float(x),)) for k, x in zip(keys, rng.standard_normal(n), strict=True)]
    e.process(Columns.from_samples(batch, SeriesTable()))
    g = e.groups[1]
    sl = np.flatnonzero(g.a["alive"][: g.capacity])
    g.a["ready"][sl] = True
    g.a["score"][sl] = rng.random(len(sl))
    g.a["error"][sl] = rng.random(len(sl)) * 3
    g.a["threshold"][sl] = 2.0
    hot = sl[:: 100]
    g.alerts.a["state"][hot] = rng.integers(1, 3, len(hot))
    g.alerts.a["fired"][hot] = 1
    res = {}
    for mode in ("all", "non_ok"):
        m = Metrics(CollectorRegistry())
        m.add_stream_collector(columns=lambda mode=mode: e.stream_columns(mode))
        res[f"{mode}_s"], body = best(lambda m=m: exposition(m.registry, "")[0], args.repeat)
        res[f"{mode}_bytes"] = len(body)  # type: ignore[arg-type]
        res[f"{mode}_om_s"], _ = best(lambda m=m: exposition(m.registry, "application/openmetrics-text")[0],
                                      args.repeat)
        res[f"{mode}_gzip_s"], gz = best(lambda body=body: gzip.compress(body, compresslevel=1), 1)  # type: ignore[arg-type]
        res[f"{mode}_gzip_bytes"] = len(gz)  # type: ignore[arg-type]
        ref = CollectorRegistry()
        ref.register(Landed(lambda mode=mode: stream_rows(e.stream_views(), mode)))  # type: ignore[arg-type]
        ref.register(BandCollector(e.stream_views, lambda mode=mode: mode))  # the band families, per view
        res[f"landed_{mode}_s"], _ = best(lambda ref=ref: generate_latest(ref), 1 if mode == "all" else args.repeat)
    print(f"machine: {platform.processor() or platform.machine()}, cpus={os.cpu_count()} (a shared VM: compare the "
          f"ratios, measured in this run), python {platform.python_version()}; {n} streams, {len(hot)} non-ok")
    for mode in ("all", "non_ok"):
        print(f"{mode:>7}: arrays {res[f'{mode}_s'] * 1e3:9.1f} ms ({res[f'{mode}_bytes'] / 1e6:.1f} MB; OpenMetrics "
              f"{res[f'{mode}_om_s'] * 1e3:.1f} ms; gzip +{res[f'{mode}_gzip_s'] * 1e3:.1f} ms -> "
              f"{res[f'{mode}_gzip_bytes'] / 1e6:.2f} MB)   landed {res[f'landed_{mode}_s'] * 1e3:9.1f} ms   "
              f"x{res[f'landed_{mode}_s'] / res[f'{mode}_s']:.1f}")
    print(f"RESULT streams={n} all_s={res['all_s']:.3f} non_ok_s={res['non_ok_s']:.4f} "
          f"all_openmetrics_s={res['all_om_s']:.3f} all_gzip_s={res['all_gzip_s']:.3f} "
          f"landed_all_s={res['landed_all_s']:.3f} landed_non_ok_s={res['landed_non_ok_s']:.4f} "
          f"ratio_all={res['landed_all_s'] / res['all_s']:.1f} ratio_non_ok={res['landed_non_ok_s'] / res['non_ok_s']:.1f} "
          f"target_all_s=1 target_non_ok_s=0.05 meets_target={int(res['all_s'] <= 1 and res['non_ok_s'] <= 0.05)}")


if __name__ == "__main__":
    main()
