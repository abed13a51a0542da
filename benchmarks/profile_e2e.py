"""Where the end-to-end time goes: ``bench_e2e.py``'s sustained phase under cProfile, per thread.

Runs one ``bench_e2e`` configuration in this process with two profilers: one around every
scoring tick on the engine thread (``Tick.__call__``) and one on the event loop thread (HTTP
handling, parsing, queues), both only during the sustained phase. Prints the top functions of
each by cumulative and by own time, then ``RESULT`` with the two threads' profiled seconds.

Run: ``.venv/bin/python benchmarks/profile_e2e.py --streams 10000 [--ticks 40] [--wal off]
[--path columns] [--ingest-workers 0] [--top 30]``
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_e2e


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=10_000)
    ap.add_argument("--ticks", type=int)
    ap.add_argument("--wal", default="off")
    ap.add_argument("--path", default="columns")
    ap.add_argument("--ingest-workers", type=int, default=0)
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args()

    from sentinel.runtime.tick import Tick

    tick_prof, loop_prof = cProfile.Profile(), cProfile.Profile()
    on = [False]
    calls = [0]
    orig_call = Tick.__call__

    def profiled_call(self, batches):
        if not on[0]:
            return orig_call(self, batches)
        tick_prof.enable()
        try:
            return orig_call(self, batches)
        finally:
            tick_prof.disable()

    Tick.__call__ = profiled_call  # type: ignore[method-assign]
    orig_rss = bench_e2e.rss_bytes

    def rss_marks() -> int:  # called: started daemon, after make_ready (go), after the sustained phase
        calls[0] += 1
        if calls[0] == 2:
            on[0] = True
            loop_prof.enable()
        elif calls[0] == 3:
            on[0] = False
            loop_prof.disable()
        return orig_rss()

    bench_e2e.rss_bytes = rss_marks
    res = bench_e2e.run_one(args.streams, args.ticks or bench_e2e.default_ticks(args.streams), args.wal, args.path,
                            "float32", **({"ingest_workers": args.ingest_workers} if args.ingest_workers else {}))
    out = {}
    for name, prof in (("tick", tick_prof), ("loop", loop_prof)):
        s = io.StringIO()
        st = pstats.Stats(prof, stream=s)
        out[name] = st.total_tt
        st.sort_stats("cumulative").print_stats(args.top)
        st.sort_stats("tottime").print_stats(args.top)
        print(f"==================== {name} thread ====================")
        print(s.getvalue())
    print(f"RESULT streams={args.streams} samples_per_s={res['samples_per_s']} score_busy_s={res['score_busy_s']} "
          f"parse_busy_s={res['parse_busy_s']} tick_profiled_s={out['tick']:.3f} loop_profiled_s={out['loop']:.3f}")


if __name__ == "__main__":
    main()
