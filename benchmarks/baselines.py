"""Baseline detectors for the detection-quality benchmark, a fair threshold, and the public data.

A baseline scores a whole series at once, online (row i's score uses rows < i only
for fitting): ``score(values[N, F]) -> scores[N]``, higher = more anomalous, NaN
fields ignored. Baselines are fitted on nothing but the series itself, like
Sentinel in replay, so they are compared on equal terms.

- :class:`RollingZScore`: max over fields of |z| against the previous ``window`` rows.
- :class:`HalfSpaceTrees`: River's ``HalfSpaceTrees`` after an online ``MinMaxScaler``;
  :func:`half_space_trees` returns None when ``river`` is not installed, and the
  benchmark reports the baseline as skipped.
- :func:`pick_threshold`: the score quantile on the clean training part that gives
  every detector the same false-alarm rate there.
- :func:`load_public`: the small, permissively licensed labelled series shipped in
  ``benchmarks/data/`` (see its README for source and license).
"""

from __future__ import annotations

import csv
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import numpy as np

DATA_DIR = Path(__file__).resolve().parent / "data"


class Baseline(Protocol):
    name: str

    def score(self, values: np.ndarray) -> np.ndarray:
        """values [N, F] (or [N]) -> scores [N], float64, finite, >= 0."""
        ...


def _as_2d(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    return v[:, None] if v.ndim == 1 else v


class RollingZScore:
    """|x - mean| / std over the previous ``window`` rows, max over fields.

    Rows with fewer than ``min_periods`` finite values of history score 0. A flat
    history (std 0) uses a tiny floor, so any change from a flatline scores high.

    >>> import numpy as np
    >>> RollingZScore(window=3, min_periods=2).score(np.array([1.0, 2.0, 3.0, 10.0])).round(2).tolist()
    [0.0, 0.0, 2.12, 8.0]
    """

    name = "rolling_zscore"

    def __init__(self, window: int = 100, min_periods: int = 10):
        self.window = window
        self.min_periods = max(2, min_periods)

    def score(self, values: np.ndarray) -> np.ndarray:
        v = _as_2d(values)
        n = len(v)
        out = np.zeros(n)
        for x in v.T:
            ok = np.isfinite(x)
            if not ok.any():
                continue
            x = x - x[ok][0]  # centre for numerically stable running sums
            xs = np.where(ok, x, 0.0)

            def past(a: np.ndarray) -> np.ndarray:
                c = np.concatenate(([0.0], np.cumsum(a)))
                i = np.arange(n)
                return c[i] - c[np.maximum(i - self.window, 0)]

            cnt, s1, s2 = past(ok.astype(np.float64)), past(xs), past(xs * xs)
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = s1 / cnt
                var = np.maximum(s2 / cnt - mean * mean, 0.0) * cnt / (cnt - 1)
                sd = np.maximum(np.sqrt(var), 1e-9 * np.maximum(1.0, np.abs(mean)))
                z = np.abs(x - mean) / sd
            z = np.where(ok & (cnt >= self.min_periods), z, 0.0)
            out = np.maximum(out, np.nan_to_num(z, nan=0.0, posinf=1e12))
        return out


class HalfSpaceTrees:
    """River's Half-Space Trees (Tan et al. 2011) on min-max scaled fields: score, then learn, per row."""

    name = "half_space_trees"

    def __init__(self, seed: int = 0, n_trees: int = 10, height: int = 8, window_size: int = 250):
        from river import anomaly, preprocessing

        self._make = lambda: preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(
            n_trees=n_trees, height=height, window_size=window_size, seed=seed)

    def score(self, values: np.ndarray) -> np.ndarray:
        v = _as_2d(values)
        model = self._make()
        out = np.zeros(len(v))
        names = [f"f{j}" for j in range(v.shape[1])]
        for i, row in enumerate(v.tolist()):
            x = {k: val for k, val in zip(names, row, strict=True) if math.isfinite(val)}
            if not x:
                continue
            out[i] = model.score_one(x)
            model.learn_one(x)
        return out


def half_space_trees(seed: int = 0, **kw: int) -> HalfSpaceTrees | None:
    """A :class:`HalfSpaceTrees` baseline, or None when ``river`` cannot be imported."""
    try:
        import river  # noqa: F401
    except ImportError:
        return None
    return HalfSpaceTrees(seed=seed, **kw)


def baselines(seed: int = 0) -> dict[str, Baseline | None]:
    """Every baseline by name; a value of None means "skipped: dependency missing"."""
    return {RollingZScore.name: RollingZScore(), HalfSpaceTrees.name: half_space_trees(seed)}


def pick_threshold(scores: np.ndarray, n_train: int, false_alarm_rate: float = 0.01) -> float:
    """The threshold giving ``false_alarm_rate`` of alarms on the clean first ``n_train`` rows.

    Predictions are ``scores > threshold``. Using the same rate for every detector
    (Sentinel included) compares them at equal cost in false alarms.

    >>> pick_threshold(np.arange(101.0), 101, 0.1)
    90.0
    """
    train = np.asarray(scores, dtype=np.float64)[:n_train]
    train = train[np.isfinite(train)]
    if not len(train):
        return math.inf
    return float(np.quantile(train, 1.0 - false_alarm_rate))


# ---------------------------------------------------------------------- public data
def _epoch(text: str) -> float:
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def load_csv(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A ``timestamp,...,label`` CSV -> ts [N] (epoch s), values [N, F], labels [N] bool.

    Every column other than ``timestamp`` and ``label`` is a value field; rows are sorted by time.
    """
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise ValueError(f"{path}: no rows")
    fields = [c for c in rows[0] if c not in ("timestamp", "label")]
    ts = np.array([_epoch(r["timestamp"]) for r in rows])
    vals = np.array([[float(r[f]) if r[f] not in ("", None) else math.nan for f in fields] for r in rows])
    labels = np.array([r["label"].strip() not in ("0", "", "0.0") for r in rows])
    order = np.argsort(ts, kind="stable")
    return ts[order], vals[order], labels[order]


def load_public() -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """The shipped public labelled series: ``[(name, ts [N], values [N, F], labels [N] bool)]``.

    The list is empty when ``benchmarks/data`` holds no CSV (e.g. in a trimmed checkout).
    """
    out = []
    for path in sorted(DATA_DIR.glob("*.csv")):
        ts, vals, labels = load_csv(path)
        out.append((path.stem, ts, vals, labels))
    return out
