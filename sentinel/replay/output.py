"""The output CSV: ``timestamp,score,is_anomaly,error,threshold`` (DESIGN §4's contract), then the
input's label columns, then per field ``expected_<field>,lower_<field>,upper_<field>``: the expected
value and band in the field's own units (empty before the stream is scored, ``nan`` without a band)."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import numpy as np

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
        head = COLUMNS + [c for c in labels if c not in COLUMNS]
        fields = list(res.series.fields)
        w.writerow(head + band_columns(fields, set(head)))
        text = [res.series.label_text[c] for c in labels if c not in COLUMNS]
        F = len(fields)
        exp, lo, hi = (a if a.shape == (len(res.timestamps), F) else np.full((len(res.timestamps), F), np.nan)
                       for a in (res.expected, res.lower, res.upper))
        for i, stamp in enumerate(res.timestamps):
            scored = math.isfinite(res.threshold[i])
            band = [_band(x, scored) for j in range(F) for x in (exp[i, j], lo[i, j], hi[i, j])]
            w.writerow([stamp, f"{res.score[i]:.6f}", int(res.is_anomaly[i]), _fmt(res.error[i]),
                        _fmt(res.threshold[i]), *(t[i] for t in text), *band])
    tmp.replace(path)


def band_columns(fields: list[str], taken: set[str]) -> list[str]:
    """``expected_<f>,lower_<f>,upper_<f>`` per field (a name the input already uses gets a ``_band`` suffix)."""
    out = []
    for f in fields:
        for kind in ("expected", "lower", "upper"):
            name = f"{kind}_{f}"
            out.append(name + "_band" if name in taken else name)
    return out


def _band(x: float, scored: bool) -> str:
    if not math.isfinite(x):
        return "nan" if scored else ""
    return f"{x:.6g}"


def safe_name(name: str) -> str:
    """A file name for a series name (``valve1/1`` -> ``valve1_1``)."""
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", name).strip("_") or "series"
