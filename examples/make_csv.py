"""Write a labelled univariate test series as `timestamp,value` CSV (for `sentinel replay`).

    python examples/make_csv.py --rows 20000 --kind level_shift --out /tmp/series.csv

The labels go to a second file (`<out>.labels.csv`: timestamp,is_anomaly) so the replay
input stays the plain `timestamp,value` a user would have.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from sentinel.sources.simulator import ANOMALY_KINDS, make_series


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--kind", choices=ANOMALY_KINDS, default="spike")
    ap.add_argument("--anomalies", type=int, default=4)
    ap.add_argument("--interval", type=float, default=60.0, help="seconds between rows")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    ts, values, labels = make_series(a.kind, a.rows, a.seed, interval=a.interval, n_anomalies=a.anomalies)
    with open(a.out, "w") as f, open(a.out + ".labels.csv", "w") as g:
        f.write("timestamp,value\n")
        g.write("timestamp,is_anomaly\n")
        for t, v, lab in zip(ts, values[:, 0], labels, strict=True):
            stamp = datetime.fromtimestamp(float(t), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            f.write(f"{stamp},{v:.5f}\n")
            g.write(f"{stamp},{int(lab)}\n")


if __name__ == "__main__":
    main()
