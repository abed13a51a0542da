"""Cost of the write-ahead log per fsync policy: appends/s and acknowledgement latency.

Each configuration appends ``--records`` records of ``--size`` bytes (a line-protocol
body of ~50 streams × 2 fields is about 3 KB) from ``--writers`` threads into a fresh
log in ``--dir`` (default: a temp directory beside this script, so on the disk the
daemon would use, not a tmpfs), and reports throughput and the p50/p99 time from
calling :meth:`WriteAheadLog.append` to its return (the receiver's added latency).

    .venv/bin/python benchmarks/bench_wal.py [--records 4000] [--writers 1,8] [--size 3000]

Ends with ``RESULT`` for the default receiver setting (batch, 5 ms, 8 writers) and
the ratios of ``always``/``batch`` to ``off``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sentinel.state.wal import WriteAheadLog


def run_one(directory: Path, policy: str, delay: float, writers: int, records: int, size: int) -> dict:
    d = directory / f"{policy}-{delay}-{writers}"
    payload = os.urandom(size)
    lat: list[list[float]] = [[] for _ in range(writers)]
    per = records // writers
    with WriteAheadLog(d, fsync=policy, fsync_delay=delay, segment_bytes=16 << 20, max_bytes=1 << 40) as w:  # type: ignore[arg-type]
        def work(k: int) -> None:
            mine = lat[k]
            for _ in range(per):
                t = time.perf_counter()
                w.append(payload)
                mine.append(time.perf_counter() - t)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(writers)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        fsyncs = w.fsyncs
    shutil.rmtree(d, ignore_errors=True)
    xs = sorted(x for m in lat for x in m)
    n = len(xs)
    return {"policy": policy, "delay_ms": delay * 1e3, "writers": writers, "appends_per_s": n / wall,
            "mb_per_s": n * size / wall / 1e6, "p50_ms": statistics.median(xs) * 1e3,
            "p99_ms": xs[min(n - 1, int(n * 0.99))] * 1e3, "fsyncs": fsyncs,
            "records_per_fsync": n / fsyncs if fsyncs else float("inf")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=4000)
    ap.add_argument("--size", type=int, default=3000)
    ap.add_argument("--writers", default="1,8")
    ap.add_argument("--dir", default=None)
    a = ap.parse_args()
    base = Path(a.dir) if a.dir else Path(__file__).resolve().parent
    work = Path(tempfile.mkdtemp(prefix=".bench-wal-", dir=base))
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}")
    print(f"# dir={work} records={a.records} size={a.size}")
    configs = [("off", 0.0), ("always", 0.0), ("batch", 0.001), ("batch", 0.005), ("batch", 0.02)]
    rows = []
    try:
        for writers in (int(x) for x in a.writers.split(",")):
            for policy, delay in configs:
                r = run_one(work, policy, delay, writers, a.records, a.size)
                rows.append(r)
                print(f"policy={policy:6s} delay_ms={r['delay_ms']:5.1f} writers={writers:2d} "
                      f"appends/s={r['appends_per_s']:9.0f} MB/s={r['mb_per_s']:7.1f} p50_ms={r['p50_ms']:7.3f} "
                      f"p99_ms={r['p99_ms']:7.3f} records/fsync={r['records_per_fsync']:6.1f}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    w = max(r["writers"] for r in rows)

    def pick(policy: str, delay: float) -> dict:
        return next(r for r in rows if r["writers"] == w and r["policy"] == policy and r["delay_ms"] == delay * 1e3)

    off, always, batch = pick("off", 0.0), pick("always", 0.0), pick("batch", 0.005)
    print(f"RESULT writers={w} size={a.size} off_appends_per_s={off['appends_per_s']:.0f} "
          f"always_appends_per_s={always['appends_per_s']:.0f} batch5ms_appends_per_s={batch['appends_per_s']:.0f} "
          f"off_p99_ms={off['p99_ms']:.3f} always_p99_ms={always['p99_ms']:.3f} batch5ms_p99_ms={batch['p99_ms']:.3f} "
          f"always_vs_off={always['appends_per_s'] / off['appends_per_s']:.3f} "
          f"batch5ms_vs_off={batch['appends_per_s'] / off['appends_per_s']:.3f} "
          f"batch5ms_records_per_fsync={batch['records_per_fsync']:.1f}")


if __name__ == "__main__":
    main()
