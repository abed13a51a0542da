"""What a backtest says: when each stream first trained, its alerts, and how they match the labels.

Point-wise scores count rows (precision, recall, F1; FAR = FP/(FP+TN) and MAR = FN/(FN+TP)
as the SKAB authors report them); event-wise, a labelled window is found when any of its
rows fires, and a firing span that touches no labelled window is one false alert. Only
rows after the history rows are scored (history is never scored).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from .run import FleetResult, StreamResult

LABEL_PREFERENCE = ("anomaly", "is_anomaly", "label")


def spans(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[start, end)`` of each run of True."""
    m = np.concatenate(([False], np.asarray(mask, bool), [False]))
    d = np.flatnonzero(np.diff(m.astype(np.int8)))
    return list(zip(d[::2].tolist(), d[1::2].tolist(), strict=True))


@dataclass
class Tally:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0
    events: int = 0
    found: int = 0
    false_alerts: int = 0
    seconds: float = 0.0

    def add(self, o: Tally) -> None:
        for k in self.__dataclass_fields__:
            setattr(self, k, getattr(self, k) + getattr(o, k))

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else math.nan

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else math.nan

    @property
    def f1(self) -> float:
        d = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / d if d else math.nan

    @property
    def far(self) -> float:
        return self.fp / (self.fp + self.tn) if self.fp + self.tn else math.nan

    @property
    def mar(self) -> float:
        return self.fn / (self.fn + self.tp) if self.fn + self.tp else math.nan

    @property
    def event_recall(self) -> float:
        return self.found / self.events if self.events else math.nan

    @property
    def false_alerts_per_day(self) -> float:
        return self.false_alerts / (self.seconds / 86400.0) if self.seconds > 0 else math.nan


def label_of(sr: StreamResult) -> str | None:
    labels = sr.series.labels
    for name in LABEL_PREFERENCE:
        for k in labels:
            if k.lower() == name:
                return k
    return next(iter(labels), None)


def tally(sr: StreamResult, label: str | None = None) -> Tally | None:
    """Scores of one stream's non-history rows against ``label`` (default: its anomaly label)."""
    label = label or label_of(sr)
    if label is None:
        return None
    y_all = sr.series.labels[label]
    part = np.arange(len(y_all)) >= sr.history_rows
    y = (y_all > 0.5) & part
    known = part & np.isfinite(y_all)
    p = (sr.is_anomaly == 1) & part
    t = Tally(tp=int((p & y).sum()), fp=int((p & ~y & known).sum()), fn=int((~p & y).sum()),
              tn=int((~p & ~y & known).sum()))
    windows = spans(y)
    t.events = len(windows)
    t.found = sum(1 for a, b in windows if p[a:b].any())
    t.false_alerts = sum(1 for a, b in spans(p) if not y[a:b].any())
    ts = sr.series.ts[part]
    ts = ts[np.isfinite(ts)]
    t.seconds = float(ts.max() - ts.min()) if len(ts) > 1 else 0.0
    return t


def _f(x: float, pct: bool = False) -> str:
    if not math.isfinite(x):
        return "-"
    return f"{100 * x:.1f}%" if pct else f"{x:.3f}"


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S") if math.isfinite(ts) else "-"


def first_training(sr: StreamResult) -> str:
    ft = sr.first_train
    if ft is None:
        return "never trained (not enough history: see train.min_history / --train-rows)"
    at = "on its history before scoring" if ft["row"] is None else f"after input row {sr.history_rows + ft['row'] + 1}"
    return (f"first trained at {_when(ft['ts'])} {at}, on {ft['samples']} samples "
            f"({ft['seconds']:.2f}s, with {ft['streams']} stream(s) in the batch)")


def summary_lines(fleet: FleetResult) -> list[str]:
    """The ``--report`` text: one block per stream, then the fleet's totals."""
    out: list[str] = []
    total = Tally()
    labelled = 0
    for sr in fleet.streams:
        s = sr.series
        nalerts = len(spans(sr.is_anomaly == 1))
        out.append(f"{s.name}: {len(s)} rows ({sr.history_rows} history, {sum(sr.bad.values())} bad), "
                   f"{sr.trainings} trainings, {nalerts} alerts, {int(sr.is_anomaly.sum())} rows firing")
        out.append(f"  {first_training(sr)}")
        t = tally(sr)
        if t is not None:
            labelled += 1
            total.add(t)
            out.append(f"  vs {label_of(sr)!r}: rows P={_f(t.precision)} R={_f(t.recall)} F1={_f(t.f1)} "
                       f"FAR={_f(t.far, True)} MAR={_f(t.mar, True)}; events found {t.found}/{t.events}, "
                       f"false alerts {t.false_alerts} ({_f(t.false_alerts_per_day)}/day)")
    if labelled > 1 or (labelled and len(fleet.streams) > 1):
        t = total
        out.append(f"all {labelled} labelled streams (rows concatenated): P={_f(t.precision)} R={_f(t.recall)} "
                   f"F1={_f(t.f1)} FAR={_f(t.far, True)} MAR={_f(t.mar, True)}; events found {t.found}/{t.events} "
                   f"({_f(t.event_recall)}), false alerts {t.false_alerts} ({_f(t.false_alerts_per_day)}/day)")
    return out
