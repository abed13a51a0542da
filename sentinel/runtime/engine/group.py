"""A group: every per-slot store of the streams with ``F`` fields, indexed by the same slot.

The bank (weights and state), the threshold object, the alert machine and the per-slot
arrays (:attr:`Group.a`: cadence, readiness, last verdict, history ring, stuck-sensor runs,
chart rings) grow together; :meth:`Group.history` reads the history ring in time order.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ...alerts.state import AlertMachine, AlertRules
from ...config import SentinelConfig
from ...detect.thresholds import SpotThresholds, make_thresholds
from ...model.bank import Bank
from ...model.cells import Dims
from ...slots import SlotArrays, Spec
from ...types import StreamKey


class Group:
    """All per-slot state of streams with ``F`` fields."""

    ARRAYS: ClassVar[dict[str, tuple[type, float]]] = {
        "last_ts": (np.float64, -np.inf), "interval": (np.float64, 0.0), "ready": (np.bool_, False),
        "rewarm": (np.int64, 0), "version": (np.int64, 0), "trained_at": (np.float64, np.nan),
        "training": (np.bool_, False), "err_ewma": (np.float64, np.nan), "calib_err": (np.float64, np.nan),
        "score": (np.float64, 0.0), "error": (np.float64, np.nan), "threshold": (np.float64, np.nan),
        "hist_n": (np.int64, 0), "since_train": (np.int64, 0), "alive": (np.bool_, False),
        "drift": (np.bool_, False), "critical": (np.bool_, False),
        "relearn": (np.bool_, False),  # a sustained shift: retrain on it as the new normal
        "shifted": (np.bool_, False),  # relearned: the alert's resolve says the baseline shifted
    }

    def band_spec(self, F: int) -> Spec:
        """The expected band (:mod:`sentinel.detect.band`): the last one and the chart rings (a checkpoint
        from before them restores them empty)."""
        last: Spec = {k: ((F,), np.float64, np.nan) for k in ("exp", "lo", "hi")}
        rings: Spec = {k: ((self.chart, F), np.float32, np.nan) for k in ("ch_exp", "ch_lo", "ch_hi")}
        return {**last, **rings}

    def __init__(self, F: int, cfg: SentinelConfig, device: str):
        self.F = F
        self.cap = cfg.streams.history_size
        self.chart = 120
        m = cfg.model
        # capacity 1, doubling as streams come (D4: 64 slots preallocated per field count let a few
        # odd lines with 2..59 fields reserve hundreds of MB)
        self.bank = Bank(Dims(F, m.hidden, m.window, m.cell, m.baseline_halflife, m.level_weight, m.level_k,
                              m.baseline_alerting_rate, m.level_halflife, m.level_shrink),
                         prediction_weight=m.prediction_weight, device=device, capacity=1,
                         weight_dtype=m.weight_dtype)
        self.thr = make_thresholds(cfg.detect.threshold)
        th = cfg.detect.threshold
        # the level statistic's own tail (sentinel.detect.level): SPOT, no moving average
        self.lthr = (SpotThresholds(th.risk, th.init_quantile, 0, th.max_peaks)
                     if cfg.detect.level_tail and m.level_weight > 0 else None)
        self.alerts = AlertMachine(AlertRules.from_config(cfg.alerts))
        self.keys: list[StreamKey | None] = []
        self.fields: list[tuple[str, ...]] = []
        spec: Spec = {k: ((), dt, fill) for k, (dt, fill) in self.ARRAYS.items()}
        spec.update({
            "hist_ts": ((self.cap,), np.float64, np.nan), "hist_v": ((self.cap, F), np.float32, np.nan),
            "hist_flag": ((self.cap,), np.bool_, False), "share": ((F,), np.float32, 0.0),
            # stuck-sensor check: current run of identical values per field, the last value,
            # and the longest run seen in the training history
            "run": ((F,), np.int64, 0), "last_v": ((F,), np.float64, np.nan), "max_run": ((F,), np.int64, 0),
            # recent score, threshold, error and alert state for the status page's charts
            # (the score in float16: display only, in [0, 1], 3 significant digits)
            "ch_score": ((self.chart,), np.float16, np.nan), "ch_thr": ((self.chart,), np.float32, np.nan),
            "ch_err": ((self.chart,), np.float32, np.nan), "ch_state": ((self.chart,), np.int8, 0),
        })
        spec.update(self.band_spec(F))
        self.slots = SlotArrays(spec, 0)
        self.a = self.slots.a
        self._ensure(1)

    @property
    def capacity(self) -> int:
        return self.slots.capacity

    def _ensure(self, cap: int) -> None:
        """Grow every per-slot store of the group together."""
        self.slots.ensure(cap)
        grow = self.slots.capacity - len(self.keys)
        self.keys.extend([None] * grow)
        self.fields.extend([()] * grow)
        self.thr.ensure(self.slots.capacity)
        if self.lthr is not None:
            self.lthr.ensure(self.slots.capacity)
        self.alerts.ensure(self.slots.capacity)

    def add(self, key: StreamKey, fields: tuple[str, ...]) -> int:
        slot = self.bank.add()
        self._ensure(self.bank.capacity)
        one = np.array([slot])
        self.slots.reset(one)
        self.a["alive"][slot] = True
        self.keys[slot] = key
        self.fields[slot] = fields
        self.thr.reset(one)
        if self.lthr is not None:
            self.lthr.reset(one)
        self.alerts.reset(one)
        return slot

    def remove(self, slot: int) -> None:
        self.a["alive"][slot] = False
        self.keys[slot] = None
        self.bank.remove(slot)

    def history(self, slots: np.ndarray, last: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ordered history of ``slots``: ``(ts [n,L], values [n,L,F], flags [n,L])``, NaN-padded on the left."""
        cap = self.cap
        L = cap if last is None else min(last, cap)
        n_tot = self.a["hist_n"][slots]
        # position of the oldest of the last L entries, per slot
        idx = (n_tot[:, None] - L + np.arange(L)[None, :]) % cap
        valid = (np.arange(L)[None, :] >= (L - np.minimum(n_tot, L))[:, None])
        ts = np.where(valid, self.a["hist_ts"][slots[:, None], idx], np.nan)
        v = np.where(valid[..., None], self.a["hist_v"][slots[:, None], idx], np.nan)
        fl = np.where(valid, self.a["hist_flag"][slots[:, None], idx], False)
        return ts, v.astype(np.float32), fl

