"""``sentinel replay``: backtest a CSV through the same engine the daemon runs.

The file's own timestamps are the clock: warm-up, first training, scheduled and
drift retraining, and threshold adaptation happen as they would live. Output has
one row per input row, in order: ``timestamp,score,is_anomaly,error,threshold``
(``timestamp`` echoed as given). Bad rows are counted by reason, get
``score=0,is_anomaly=0`` and never reach the engine's state.
"""

from __future__ import annotations

import csv
import io
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from .config import SentinelConfig
from .errors import InputError
from .model.train import train
from .runtime.engine import Engine
from .types import Sample, StreamKey

REPLAY_KEY = StreamKey("replay")


def parse_timestamp(text: str) -> float:
    """ISO 8601 (naive = UTC) or epoch seconds -> epoch seconds. Raises ValueError."""
    t = text.strip()
    if not t:
        raise ValueError("empty timestamp")
    try:
        x = float(t)
    except ValueError:
        pass
    else:
        if not math.isfinite(x):
            raise ValueError("non-finite timestamp")
        return x
    dt = datetime.fromisoformat(t)  # 3.11: accepts "Z", offsets, a space separator
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


@dataclass
class ReplayResult:
    timestamps: list[str]
    values: np.ndarray          # [N, F] (NaN for bad rows)
    ts: np.ndarray              # [N] epoch seconds (NaN for bad rows)
    score: np.ndarray
    is_anomaly: np.ndarray
    error: np.ndarray
    threshold: np.ndarray
    bad: dict[str, int] = field(default_factory=dict)
    trainings: int = 0
    seconds: float = 0.0


class _Progress:
    def __init__(self, total: int, enabled: bool, stream=sys.stderr):
        self.total, self.enabled, self.stream = total, enabled, stream
        self.interactive = enabled and stream.isatty()
        self.last = 0.0

    def __call__(self, i: int, note: str = "") -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.last < (0.2 if self.interactive else 5.0) and i < self.total:
            return
        self.last = now
        pct = 100.0 * i / max(self.total, 1)
        msg = f"replay: {i}/{self.total} rows ({pct:5.1f}%) {note}"
        if self.interactive:
            self.stream.write("\r" + msg.ljust(78))
            if i >= self.total:
                self.stream.write("\n")
        else:
            self.stream.write(msg + "\n")
        self.stream.flush()


def read_rows(path: str | Path, fields: list[str]) -> tuple[list[str], list[list[str]]]:
    """Read the header-checked CSV: returns the raw timestamp column and the value columns per row."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror or e}") from None
    reader = csv.reader(io.StringIO(text))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise InputError(f"{path}: empty file (a header row with 'timestamp' and {fields} is required)") from None
    if "timestamp" not in header:
        raise InputError(f"{path}: header has no 'timestamp' column: {header}")
    missing = [f for f in fields if f not in header]
    if missing:
        raise InputError(f"{path}: header lacks value column(s) {missing} (config 'fields'); header: {header}")
    ti = header.index("timestamp")
    vi = [header.index(f) for f in fields]
    stamps, rows = [], []
    for row in reader:
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank line
        stamps.append(row[ti] if ti < len(row) else "")
        rows.append([row[j] if j < len(row) else "" for j in vi])
    return stamps, rows


def replay(cfg: SentinelConfig, input_path: str | Path, *, progress: bool = True,
           on_train: Callable[[int, float], None] | None = None) -> ReplayResult:
    t0 = time.perf_counter()
    # Replay's tensors are tiny: extra threads only spin (and crawl on a busy machine).
    torch.set_num_threads(max(1, cfg.model.score_threads))
    fields = list(cfg.fields)
    stamps, rows = read_rows(input_path, fields)
    N, F = len(rows), len(fields)
    engine = Engine(cfg, device="cpu")
    res = ReplayResult(stamps, np.full((N, F), np.nan), np.full(N, np.nan), np.zeros(N), np.zeros(N, dtype=np.int8),
                       np.full(N, np.nan), np.full(N, np.nan))
    bad: dict[str, int] = {}
    prog = _Progress(N, progress)
    for i, (stamp, raw) in enumerate(zip(stamps, rows, strict=True)):
        prog(i)
        try:
            ts = parse_timestamp(stamp)
        except (ValueError, OverflowError):
            bad["bad_timestamp"] = bad.get("bad_timestamp", 0) + 1
            continue
        vals = []
        reason = None
        for x in raw:
            x = x.strip()
            if x == "" or x.lower() in ("nan", "null", "none"):
                vals.append(math.nan)  # a missing field: masked, not fed to the model
                continue
            try:
                fx = float(x)
            except ValueError:
                reason = "non_numeric"
                break
            if not math.isfinite(fx):
                reason = "non_finite"
                break
            vals.append(fx)
        if reason is None:
            # all-missing, duplicate and out-of-order rows are the engine's own rejections
            out = engine.process([Sample(REPLAY_KEY, ts, tuple(fields), tuple(vals))])
            reason = out.rejected[0]
        if reason is not None:
            bad[reason] = bad.get(reason, 0) + 1
            continue
        res.ts[i] = ts
        res.values[i] = vals
        res.score[i] = out.score[0]
        res.is_anomaly[i] = int(out.firing[0])
        res.error[i] = out.error[0]
        res.threshold[i] = out.threshold[0]
        for job in engine.due_training(ts):
            r = train(job, engine.settings, device="cpu")
            engine.apply_training(job, r, ts)
            res.trainings += 1
            if on_train is not None:
                on_train(i, r.seconds)
    prog(N)
    res.bad = bad
    res.seconds = time.perf_counter() - t0
    return res


def _fmt(x: float) -> str:
    return "nan" if not math.isfinite(x) else f"{x:.6g}"


def write_output(res: ReplayResult, path: str | Path) -> None:
    tmp = Path(str(path) + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["timestamp", "score", "is_anomaly", "error", "threshold"])
        for i, stamp in enumerate(res.timestamps):
            w.writerow([stamp, f"{res.score[i]:.6f}", int(res.is_anomaly[i]), _fmt(res.error[i]), _fmt(res.threshold[i])])
    tmp.replace(path)


def plot(res: ReplayResult, fields: list[str], path: str | Path, enter: float) -> None:
    """Value(s), score with the alert level, error with threshold, and shaded firing spans."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    ok = np.isfinite(res.ts)
    x = np.array([datetime.fromtimestamp(t, tz=UTC) if np.isfinite(t) else None for t in res.ts], dtype=object)
    fig, axes = plt.subplots(3, 1, figsize=(12, 7), sharex=True, gridspec_kw={"height_ratios": [2, 1, 1]})
    for j, name in enumerate(fields):
        axes[0].plot(x[ok], res.values[ok, j], lw=0.8, label=name)
    axes[0].set_ylabel("value")
    axes[0].legend(loc="upper left", fontsize=8)
    axes[1].plot(x[ok], res.score[ok], lw=0.8, color="tab:purple", label="score")
    axes[1].axhline(enter, color="tab:red", lw=0.8, ls="--", label=f"alert level {enter}")
    axes[1].set_ylim(-0.02, 1.02)
    axes[1].set_ylabel("score")
    axes[1].legend(loc="upper left", fontsize=8)
    axes[2].plot(x[ok], res.error[ok], lw=0.6, color="tab:gray", label="error")
    axes[2].plot(x[ok], res.threshold[ok], lw=0.8, color="tab:red", label="threshold")
    axes[2].set_yscale("log")
    axes[2].set_ylabel("error")
    axes[2].legend(loc="upper left", fontsize=8)
    # alert spans
    fire = (res.is_anomaly == 1) & ok
    idx = np.flatnonzero(fire)
    if len(idx):
        breaks = np.flatnonzero(np.diff(idx) > 1)
        starts = np.concatenate(([idx[0]], idx[breaks + 1]))
        ends = np.concatenate((idx[breaks], [idx[-1]]))
        for s, e in zip(starts, ends, strict=True):
            for ax in axes:
                ax.axvspan(x[s], x[e], color="tab:red", alpha=0.15, lw=0)
    axes[2].xaxis.set_major_formatter(mdates.ConciseDateFormatter(axes[2].xaxis.get_major_locator()))
    fig.suptitle(f"sentinel replay: {int(ok.sum())} rows, {len(idx)} rows firing", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
