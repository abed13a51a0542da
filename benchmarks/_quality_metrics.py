"""Detection-quality scores: point-wise, event-wise and NAB-style windowed. Pure numpy, no I/O.

Every function takes per-row ground truth ``labels`` and ``preds`` (bool arrays of
equal length N, row order = time order); the event score also takes ``ts`` [N]
(epoch seconds). A *run* is a maximal stretch of consecutive True rows: a labelled
run is one anomaly window, a predicted run is one alarm.

- :func:`point_scores`: precision/recall/F1 over rows.
- :func:`event_scores`: a window is detected if any prediction falls inside it, or
  within ``tolerance`` seconds of its start for windows shorter than that; every
  predicted run touching no (extended) window is one false alarm.
- :func:`nab_score`: the Numenta Anomaly Benchmark's scoring with the "standard"
  profile (Lavin & Ahmad 2015), normalised to 0 (null detector) .. 100 (perfect).
  Each predicted row is a detection, as in NAB: pass ``onsets(preds)`` to score
  alert *onsets* instead of every row an alert is firing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

__all__ = [
    "NAB_STANDARD",
    "PRF",
    "EventScores",
    "NabProfile",
    "NabResult",
    "event_scores",
    "nab_combine",
    "nab_score",
    "nab_windows",
    "onsets",
    "point_scores",
    "runs",
    "scaled_sigmoid",
]


def _bool(a: object, name: str, n: int | None = None) -> np.ndarray:
    arr = np.asarray(a).astype(bool).reshape(-1)
    if n is not None and len(arr) != n:
        raise ValueError(f"{name} has {len(arr)} rows, expected {n}")
    return arr


def runs(mask: object) -> list[tuple[int, int]]:
    """``[start, end)`` row ranges of the True runs of ``mask``.

    >>> runs([0, 1, 1, 0, 1])
    [(1, 3), (4, 5)]
    """
    m = _bool(mask, "mask").astype(np.int8)
    edges = np.diff(np.concatenate(([0], m, [0])))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True))


def onsets(preds: object) -> np.ndarray:
    """Only the first row of each predicted run is True: an alert's onset.

    >>> onsets([0, 1, 1, 0, 1]).astype(int).tolist()
    [0, 1, 0, 0, 1]
    """
    p = _bool(preds, "preds")
    out = p.copy()
    out[1:] &= ~p[:-1]
    return out


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


@dataclass(frozen=True)
class PRF:
    """Point-wise scores; precision (recall) is 0.0 when nothing is predicted (labelled)."""

    precision: float
    recall: float
    f1: float
    tp: int
    fp: int
    fn: int


def point_scores(labels: object, preds: object) -> PRF:
    """Row-wise precision, recall and F1."""
    y = _bool(labels, "labels")
    p = _bool(preds, "preds", len(y))
    tp, fp, fn = int((y & p).sum()), int((~y & p).sum()), int((y & ~p).sum())
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    return PRF(prec, rec, _f1(prec, rec), tp, fp, fn)


@dataclass(frozen=True)
class EventScores:
    """Event-wise scores. ``mean_delay`` is seconds from window start to first detection (NaN if none)."""

    precision: float
    recall: float
    f1: float
    detected: int
    missed: int
    false_alarms: int
    mean_delay: float


def event_scores(labels: object, preds: object, ts: object, tolerance: float = 0.0) -> EventScores:
    """Event-wise precision/recall/F1 over labelled windows and predicted runs.

    A window ``[a, b)`` (rows) is detected if a prediction lies at a time in
    ``[ts[a], max(ts[b-1], ts[a] + tolerance)]``. Precision is
    ``detected / (detected + false_alarms)``, where a false alarm is a predicted
    run with no row in any such extended window.
    """
    y = _bool(labels, "labels")
    p = _bool(preds, "preds", len(y))
    t = np.asarray(ts, dtype=np.float64).reshape(-1)
    if len(t) != len(y):
        raise ValueError(f"ts has {len(t)} rows, expected {len(y)}")
    in_window = np.zeros(len(y), dtype=bool)
    detected, delays = 0, []
    for a, b in runs(y):
        lo, hi = t[a], max(t[b - 1], t[a] + tolerance)
        ext = (t >= lo) & (t <= hi)
        in_window |= ext
        hit = np.flatnonzero(ext & p)
        if len(hit):
            detected += 1
            delays.append(float(t[hit[0]] - lo))
    n_windows = len(runs(y))
    false_alarms = sum(1 for a, b in runs(p) if not in_window[a:b].any())
    prec = detected / (detected + false_alarms) if detected + false_alarms else 0.0
    rec = detected / n_windows if n_windows else 0.0
    return EventScores(prec, rec, _f1(prec, rec), detected, n_windows - detected, false_alarms,
                       float(np.mean(delays)) if delays else math.nan)


# ---------------------------------------------------------------------- NAB
@dataclass(frozen=True)
class NabProfile:
    """NAB application profile weights (A_TP, A_FP, A_FN)."""

    tp: float = 1.0
    fp: float = 0.11
    fn: float = 1.0


NAB_STANDARD = NabProfile()


def scaled_sigmoid(x: float) -> float:
    """NAB's reward curve: 2*sigmoid(-5x) - 1 (x <= 3), -1 beyond.

    ``x`` is -1 at a window's first row, ~0 at its last, positive after it.

    >>> round(scaled_sigmoid(-1.0), 5), scaled_sigmoid(0.0), scaled_sigmoid(4.0)
    (0.98661, 0.0, -1.0)
    """
    if x > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * x)) - 1.0


def nab_windows(labels: object, window_fraction: float = 0.1) -> list[tuple[int, int]]:
    """NAB windows, inclusive row ranges ``[lo, hi]``.

    Window size is ``int(window_fraction * N / n_labelled_runs)`` rows; each window
    spans half of that before the run's first row and at least half after it
    (longer runs are covered whole). Windows are clipped to the data and
    overlapping ones merged, as NAB does.
    """
    y = _bool(labels, "labels")
    rs = runs(y)
    if not rs:
        return []
    half = int(window_fraction * len(y) / len(rs)) // 2
    wins: list[list[int]] = []
    for a, b in rs:
        lo, hi = max(0, a - half), min(len(y) - 1, max(b - 1, a + half))
        if wins and lo <= wins[-1][1]:
            wins[-1][1] = max(wins[-1][1], hi)
        else:
            wins.append([lo, hi])
    return [(lo, hi) for lo, hi in wins]


@dataclass(frozen=True)
class NabResult:
    """One series' NAB score. ``score`` is normalised: 0 = null detector, 100 = perfect.

    ``raw``, ``null`` and ``perfect`` are the unnormalised sums, so results over many
    series are combined by :func:`nab_combine` as NAB does (sum, then normalise).
    """

    score: float
    raw: float
    null: float
    perfect: float
    windows: int
    detected: int
    false_positives: int


def _normalise(raw: float, null: float, perfect: float) -> float:
    return 100.0 * (raw - null) / (perfect - null) if perfect != null else math.nan


def nab_score(labels: object, preds: object, profile: NabProfile = NAB_STANDARD,
              window_fraction: float = 0.1) -> NabResult:
    """NAB windowed score of one series (``score`` is NaN when there are no labelled windows).

    In a window ``[lo, hi]`` only the first detection counts, rewarded
    ``A_TP * scaled_sigmoid(-(hi - i + 1) / (hi - lo + 1))``; later ones are ignored.
    A detection outside every window costs ``A_FP`` times ``scaled_sigmoid`` of its
    distance past the previous window's end in window lengths (``(i - hi) / (len - 1)``),
    or the full ``A_FP`` before the first window. Each missed window costs ``A_FN``.
    """
    y = _bool(labels, "labels")
    p = _bool(preds, "preds", len(y))
    wins = nab_windows(y, window_fraction)
    raw, detected, fps = 0.0, 0, 0
    win_of = np.full(len(y), -1, dtype=np.int64)
    for j, (lo, hi) in enumerate(wins):
        win_of[lo:hi + 1] = j
    done = [False] * len(wins)
    prev: tuple[int, int] | None = None
    wi = 0
    for i in np.flatnonzero(p).tolist():
        while wi < len(wins) and wins[wi][1] < i:
            prev = wins[wi]
            wi += 1
        j = int(win_of[i])
        if j >= 0:
            if not done[j]:
                lo, hi = wins[j]
                raw += profile.tp * scaled_sigmoid(-(hi - i + 1) / (hi - lo + 1))
                done[j] = True
                detected += 1
            continue
        fps += 1
        if prev is None:
            raw -= profile.fp
        else:
            lo, hi = prev
            raw += profile.fp * scaled_sigmoid((i - hi) / max(hi - lo, 1))
    raw -= profile.fn * (len(wins) - detected)
    null = -profile.fn * len(wins)
    perfect = profile.tp * scaled_sigmoid(-1.0) * len(wins)
    return NabResult(_normalise(raw, null, perfect), raw, null, perfect, len(wins), detected, fps)


def nab_combine(results: Iterable[NabResult]) -> float:
    """Normalised NAB score over many series: sums of raw, null and perfect, then 0..100."""
    rs = list(results)
    return _normalise(sum(r.raw for r in rs), sum(r.null for r in rs), sum(r.perfect for r in rs))
