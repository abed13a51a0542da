"""The output CSV: ``timestamp,score,is_anomaly,error,threshold`` then the input's label columns."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

from .run import StreamResult

COLUMNS = ["timestamp", "score", "is_anomaly", "error", "threshold"]


def _fmt(x: float) -> str:
    return "nan" if not math.isfinite(x) else f"{x:.6g}"


def write_output(res: StreamResult, path: str | Path) -> None:
    """One row per input row, same order (written to a temp file, then renamed)."""
    labels = list(res.series.label_text)
    tmp = Path(str(path) + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS + [c for c in labels if c not in COLUMNS])
        text = [res.series.label_text[c] for c in labels if c not in COLUMNS]
        for i, stamp in enumerate(res.timestamps):
            w.writerow([stamp, f"{res.score[i]:.6f}", int(res.is_anomaly[i]), _fmt(res.error[i]),
                        _fmt(res.threshold[i]), *(t[i] for t in text)])
    tmp.replace(path)


def safe_name(name: str) -> str:
    """A file name for a series name (``valve1/1`` -> ``valve1_1``)."""
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", name).strip("_") or "series"
