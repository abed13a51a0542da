"""The ``--plot`` PNG: values with their expected band (shaded), score with the alert level, error
with threshold; labelled windows shaded green, firing spans red."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from .report import label_of, spans
from .run import StreamResult


def plot(res: StreamResult, path: str | Path, enter: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    s = res.series
    ts = s.ts
    ok = np.isfinite(ts)
    x = np.array([datetime.fromtimestamp(t, tz=UTC) if np.isfinite(t) else None for t in ts], dtype=object)
    fig, axes = plt.subplots(3, 1, figsize=(12, 7), sharex=True, gridspec_kw={"height_ratios": [2, 1, 1]})
    F = len(s.fields)
    has_band = res.lower.shape == s.values.shape
    for j, name in enumerate(s.fields):
        v = s.values[ok, j]
        mu, sd = 0.0, 1.0
        if F > 1:  # several sensors of different units: each standardised to share one axis
            mu, sd = float(np.nanmean(v)), float(np.nanstd(v)) or 1.0
            v = (v - mu) / sd
        line = axes[0].plot(x[ok], v, lw=0.8, label=name)
        if has_band:
            lo, hi = (res.lower[ok, j] - mu) / sd, (res.upper[ok, j] - mu) / sd
            banded = np.isfinite(lo) & np.isfinite(hi)
            axes[0].fill_between(x[ok], lo, hi, where=banded, color=line[0].get_color(), alpha=0.2, lw=0,
                                 label=f"{name} expected band" if j == 0 else None)
    axes[0].set_ylabel("value" if F == 1 else "value (standardised)")
    axes[0].legend(loc="upper left", fontsize=7, ncol=min(F, 4))
    scored = ok & np.isfinite(res.threshold)
    axes[1].plot(x[scored], res.score[scored], lw=0.8, color="tab:purple", label="score")
    axes[1].axhline(enter, color="tab:red", lw=0.8, ls="--", label=f"alert level {enter}")
    axes[1].set_ylim(-0.02, 1.02)
    axes[1].set_ylabel("score")
    axes[1].legend(loc="upper left", fontsize=8)
    axes[2].plot(x[scored], res.error[scored], lw=0.6, color="tab:gray", label="error")
    axes[2].plot(x[scored], res.threshold[scored], lw=0.8, color="tab:red", label="threshold")
    if scored.any() and np.nanmin(res.error[scored]) > 0:
        axes[2].set_yscale("log")
    axes[2].set_ylabel("error")
    axes[2].legend(loc="upper left", fontsize=8)

    def shade(mask: np.ndarray, color: str, alpha: float, where: list) -> int:
        n = 0
        last = np.flatnonzero(ok)[-1] if ok.any() else 0
        for a, b in spans(mask & ok):
            idx = np.flatnonzero(ok[a:b]) + a
            nxt = np.flatnonzero(ok[idx[-1] + 1 :])  # up to the next row, so one row shows too
            end = x[idx[-1] + 1 + nxt[0]] if len(nxt) else x[last]
            for ax in where:
                ax.axvspan(x[idx[0]], end, color=color, alpha=alpha, lw=0)
            n += 1
        return n

    lab = label_of(res)
    nwin = shade(s.labels[lab] > 0.5, "tab:green", 0.18, list(axes)) if lab else 0
    nfire = shade(res.is_anomaly == 1, "tab:red", 0.15, list(axes))
    if res.history_rows:
        h = np.flatnonzero(ok[: res.history_rows])
        if len(h):
            axes[0].axvspan(x[h[0]], x[h[-1]], color="tab:blue", alpha=0.07, lw=0, label="history")
    axes[2].xaxis.set_major_formatter(mdates.ConciseDateFormatter(axes[2].xaxis.get_major_locator()))
    extra = f", {nwin} labelled windows (green, {lab!r})" if lab else ""
    fig.suptitle(f"sentinel replay {s.name}: {int(ok.sum())} rows, {nfire} alerts (red){extra}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
