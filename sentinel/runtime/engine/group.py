"""A group: every per-slot store of the streams with ``F`` fields, indexed by the same slot.

The bank (weights and state), the threshold object, the alert machine and the per-slot
arrays (:attr:`Group.a`: cadence, readiness, last verdict, history ring, stuck-sensor runs,
chart rings) grow together; :meth:`Group.history` reads the history ring in time order (its compact
layout: :mod:`.ring`).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ...alerts.state import AlertMachine, AlertRules
from ...config import SentinelConfig
from ...detect import level
from ...detect.thresholds import HeldTail, make_thresholds
from ...model.bank import Bank
from ...model.cells import Dims
from ...slots import SlotArrays, Spec
from ...types import StreamKey
from . import ring

F16_MAX = 65504.0
CHART = 120  # the status page's chart: at most this many recent points (Group.chart)


def band_offset(x: np.ndarray) -> np.ndarray:
    """A chart ring's float16 value (clipped to float16's range, NaN kept)."""
    return np.clip(x, -F16_MAX, F16_MAX).astype(np.float16)


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
        from before them restores them empty). The rings hold the expected value and, in float16, how
        far below and above it the band reaches (display only: 3 significant digits of the half-widths)."""
        last: Spec = {k: ((F,), np.float64, np.nan) for k in ("exp", "lo", "hi")}
        rings: Spec = {"ch_exp": ((self.chart, F), np.float32, np.nan),
                       **{k: ((self.chart, F), np.float16, np.nan) for k in ("ch_lo", "ch_hi")}}
        return {**last, **rings}

    def __init__(self, F: int, cfg: SentinelConfig, device: str):
        self.F = F
        self.cap = cfg.streams.history_size
        # the chart rings: the last 120 verdicts, no more than the history ring holds (the chart's values come
        # from it; at history_size 64 the other 56 entries were 840 B a stream never shown)
        self.chart = min(CHART, self.cap)
        m = cfg.model
        # capacity 1, growing as streams come (slots.grown; D4: 64 slots preallocated per field count let a few
        # odd lines with 2..59 fields reserve hundreds of MB)
        self.bank = Bank(Dims(F, m.hidden, m.window, m.cell, m.baseline_halflife, m.level_weight, m.level_k,
                              m.baseline_alerting_rate, m.level_halflife, m.level_shrink),
                         prediction_weight=m.prediction_weight, device=device, capacity=1,
                         weight_dtype=m.weight_dtype)
        self.bank.max_capacity = cfg.streams.max_streams
        self.thr = make_thresholds(cfg.detect.threshold)
        th = cfg.detect.threshold
        # the level statistic's own tail (sentinel.detect.level): SPOT, no moving average; and the pace of
        # its sustained part. Fitted at training and only read between (HeldTail: the fit, not the peaks)
        self.lthr = (HeldTail(th.risk, th.init_quantile, th.max_peaks, sigma_floor=level.SIGMA_FLOOR)
                     if cfg.detect.level_tail and m.level_weight > 0 else None)
        self.level_alpha = level.average_alpha(cfg.detect.level_halflife) if self.lthr is not None else 0.0
        self.alerts = AlertMachine(AlertRules.from_config(cfg.alerts))
        self.keys: list[StreamKey | None] = []
        self.fields: list[tuple[str, ...]] = []
        spec: Spec = {k: ((), dt, fill) for k, (dt, fill) in self.ARRAYS.items()}
        spec.update(ring.spec(self.cap, F, cfg.streams.history_dtype))
        spec.update({
            "share": ((F,), np.float32, 0.0),
            # stuck-sensor check: current run of identical values per field, the last value,
            # and the longest run seen in the training history
            "run": ((F,), np.int64, 0), "last_v": ((F,), np.float64, np.nan), "max_run": ((F,), np.int64, 0),
            # recent score, threshold, error and alert state for the status page's charts
            # (float16: display only, 3 significant digits; error and threshold clipped to float16's range)
            "ch_score": ((self.chart,), np.float16, np.nan), "ch_thr": ((self.chart,), np.float16, np.nan),
            "ch_err": ((self.chart,), np.float16, np.nan), "ch_state": ((self.chart,), np.int8, 0),
        })
        spec.update(self.band_spec(F))
        # the sustained level's moving averages of the normalised samples and the gain that scales their
        # difference to unit spread (sentinel.detect.level.average_gain; 0 until trained, and in a checkpoint
        # from before it)
        if self.level_alpha > 0:
            spec.update({k: ((F,), np.float32, 0.0) for k in ("lavg", "lslow", "lgain")})
        self.slots = SlotArrays(spec, 0)
        # every per-slot store grows as the bank does, to at most max_streams slots
        self.slots.limit = self.thr.limit = self.alerts.limit = cfg.streams.max_streams
        if self.lthr is not None:
            self.lthr.limit = cfg.streams.max_streams
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

    def reserve(self, n: int) -> None:
        """Make room for ``n`` slots at once (a fleet of known size: no growth copies later)."""
        if n > self.bank.capacity:
            self.bank.restore_slots(n, sorted(set(self.bank.free_slots()) | set(range(self.bank.capacity, n)),
                                              reverse=True))
            self._ensure(self.bank.capacity)

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

    # -- the history ring (layout: .ring) ------------------------------------------
    def history(self, slots: np.ndarray, last: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ordered history of ``slots``: ``(ts [n,L], values [n,L,F], flags [n,L])``, NaN-padded on the left."""
        cap = self.cap
        L = cap if last is None else min(last, cap)
        n_tot = self.a["hist_n"][slots]
        # position of the oldest of the last L entries, per slot
        idx = (n_tot[:, None] - L + np.arange(L)[None, :]) % cap
        valid = (np.arange(L)[None, :] >= (L - np.minimum(n_tot, L))[:, None])
        ts, v = ring.decode(self.a, slots, idx)
        ts = np.where(valid, ts, np.nan)
        v = np.where(valid[..., None], v, np.nan)
        fl = np.where(valid, self.a["hist_flag"][slots[:, None], idx], False)
        return ts, v.astype(np.float32), fl

    def times(self, slot: int) -> np.ndarray:
        """Timestamps of ``slot``'s ring in ring order ``[cap]`` (NaN where never written)."""
        ts, _v = ring.decode(self.a, np.array([slot]), np.arange(self.cap)[None, :])
        return np.where(np.arange(self.cap) < self.a["hist_n"][slot], ts[0], np.nan)

    def oldest(self, C: int) -> np.ndarray:
        """Timestamp of the oldest entry each of the first ``C`` slots holds (NaN when empty)."""
        n = self.a["hist_n"][:C]
        sl = np.arange(C)
        ts, _v = ring.decode(self.a, sl, np.where(n >= self.cap, n % self.cap, 0)[:, None])
        return np.where(n > 0, ts[:, 0], np.nan)

    def append(self, slots: np.ndarray, ts: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Write one sample per slot (``slots`` unique) at the ring's head, not flagged; returns the positions."""
        a = self.a
        pos = a["hist_n"][slots] % self.cap
        ring.write(a, self.cap, slots, pos, ts, v)
        a["hist_flag"][slots, pos] = False
        a["hist_n"][slots] += 1
        n = a["hist_n"][slots]
        w = (n % self.cap == 0) | ((n < self.cap) & (n & (n - 1) == 0) & (n >= 2))  # a wrap; 2, 4, 8, .. before
        if w.any():
            ring.wrapped(a, self.cap, slots[w], ts[w])
        return pos

    def set_histories(self, slots: np.ndarray, ts: np.ndarray, v: np.ndarray, flags: np.ndarray,
                      n: np.ndarray) -> None:
        """Replace ``slots``' rings: row ``i`` holds ``n[i]`` (<= cap) entries of ``ts`` ``[m, L]`` (time
        order, NaN after them), ``v`` ``[m, L, F]``, ``flags`` ``[m, L]``."""
        ring.encode_rows(self.a, slots, np.asarray(ts, np.float64), np.asarray(v, np.float64))
        self.a["hist_flag"][slots, : ts.shape[1]] = flags
        self.a["hist_n"][slots] = n

    def quantize(self, ts: np.ndarray) -> np.ndarray:
        """``ts`` as the ring would give them back (for comparing with what it holds)."""
        return np.rint(np.asarray(ts, np.float64) * ring.RESOLUTIONS[0]) / ring.RESOLUTIONS[0]

    def restore_arrays(self, C: int, arrays: dict[str, np.ndarray]) -> None:
        """Load a checkpoint's per-slot arrays into the first ``C`` slots; a ring of the older layout
        (``hist_ts`` float64, ``hist_v`` float32) or of the other value dtype is converted.
        Raises ValueError when its history_size differs from the config's."""
        cap = arrays["hist_flag"].shape[1] if "hist_flag" in arrays else self.cap
        if cap != self.cap:
            raise ValueError(f"checkpoint history_size {cap} differs from the config's {self.cap}")
        legacy = "hist_ts" in arrays or ("hist_v" in arrays and arrays["hist_v"].dtype != self.a["hist_v"].dtype)
        arrays = dict(arrays)
        if "ch_lo" in arrays and arrays["ch_lo"].dtype != np.float16:  # the band's bounds, before they were offsets
            for k, sign in (("ch_lo", 1.0), ("ch_hi", -1.0)):
                arrays[k] = band_offset(sign * (arrays["ch_exp"][:C] - arrays[k][:C]))
        for k, x in arrays.items():
            if k.startswith("ch_") and k in self.a and x.ndim > 1 and x.shape[1] != self.chart:
                arrays[k] = self._rechart(k, x[:C], arrays["hist_n"][:C])  # chart rings of another length
        for k in self.a:
            if k in arrays and not (legacy and k.startswith("hist_") and k not in ("hist_n", "hist_flag")):
                self.a[k][:C] = arrays[k]  # else an array newer than the checkpoint (the band's): its default
        if legacy:
            self._convert_ring(C, arrays)

    def _rechart(self, k: str, old: np.ndarray, n: np.ndarray) -> np.ndarray:
        """A chart ring of another length (before it was capped at ``history_size``) as this one: the
        newest ``min(both)`` entries, each at the position its count gives it here."""
        W, c, C = old.shape[1], self.chart, len(old)
        _shape, dtype, fill = self.slots.spec[k]
        new = np.full((C, c, *old.shape[2:]), fill, dtype=dtype)
        L = min(W, c)
        q = np.asarray(n, np.int64)[:, None] - L + np.arange(L)[None, :]  # the entries' counts, oldest first
        r, i = np.nonzero(q >= 0)
        new[r, q[r, i] % c] = old[r, q[r, i] % W]
        return new

    def _convert_ring(self, C: int, arrays: dict[str, np.ndarray]) -> None:
        cap, sl = self.cap, np.arange(C)
        n = np.minimum(arrays["hist_n"][:C], cap)
        if "hist_ts" in arrays:
            ts, v = arrays["hist_ts"][:C].astype(np.float64), arrays["hist_v"][:C].astype(np.float64)
        else:  # this layout with the other value dtype
            old = {k: np.asarray(x[:C]) for k, x in arrays.items() if k.startswith("hist_")}
            ts, v32 = ring.decode(old, sl, np.broadcast_to(np.arange(cap), (C, cap)))
            v = v32.astype(np.float64)
        valid = np.arange(cap)[None, :] < n[:, None]  # ring positions kept: hist_n and the chart rings still agree
        ring.encode_rows(self.a, sl, np.where(valid, ts, np.nan), np.where(valid[..., None], v, np.nan))
