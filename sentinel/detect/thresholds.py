"""Per-stream streaming thresholds, vectorised over streams (numpy, no torch, no I/O).

Two methods share one interface: :meth:`calibrate` from a stream's recent normal
errors, then :meth:`update` with each new error, which returns the error's tail
probability ``p`` under the stream's normal behaviour (before the error is learned)
and the current threshold (the error at which ``p == risk``).

- :class:`SpotThresholds` — SPOT/DSPOT (Siffer et al., KDD 2017): errors above an
  initial quantile ``t`` are *peaks*; a generalised Pareto distribution fitted to
  the peaks gives the tail. DSPOT first subtracts a moving average of recent
  normal errors, so the threshold follows drift. Errors beyond the threshold are
  anomalies and are *not* learned (the detector is protected from what it flags).
  Peaks are kept in a bounded ring per stream; the GPD is refitted by
  probability-weighted moments (Hosking & Wallis 1987), vectorised over the
  streams that got a new peak.
- :class:`QuantileThresholds` — an exponentially forgetting histogram of log-error
  per stream; ``p`` is the decayed mass above the error.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..slots import SlotArrays, Spec

# The GPD shape is kept >= -0.2. A bounded tail (shape < 0) estimated from a few dozen peaks puts a
# hard end on the error distribution: an error beyond it gets p ~ 0 and a score near 1, though real
# errors' tails are heavier than the fit. Measured with the floor at -0.45 and at -0.2
# (benchmarks/calibration.py, quality.py, skab.py --seeds 3): SKAB's pre-fault normal rows crossed
# s >= 0.5 515x -> 8.7x as often as nominal (s >= 0.7: 19,900x -> 207x); simulator false alarm runs
# 6 -> 2, event F1 0.90 -> 0.94, NAB 84.2 -> 84.6; SKAB FAR 12.3 -> 5.5 % with F1 0.65 -> 0.60 (the
# recall that lived on the overconfident end). At 0: SKAB F1 0.49, simulator drift found 2/6.
GAMMA_BOUNDS = (-0.2, 0.45)
SLICE = 8192  # rows per slice of a per-stream window reduction (bounded temporaries, as Bank.step's)


class _Slots(SlotArrays):
    """Per-slot threshold state; subclasses declare ``_arrays()`` (a :data:`~sentinel.slots.Spec`)."""

    def __init__(self, capacity: int = 64):
        super().__init__(self._arrays(), capacity)

    def _arrays(self) -> Spec:
        raise NotImplementedError


class SpotThresholds(_Slots):
    """SPOT (``depth=0``) or DSPOT (``depth>0``) per slot."""

    def __init__(self, risk: float = 1e-4, init_quantile: float = 0.98, depth: int = 32, max_peaks: int = 256,
                 capacity: int = 64, sigma_floor: float = 1e-12):
        self.risk, self.init_quantile, self.depth, self.max_peaks = risk, init_quantile, depth, max_peaks
        self.sigma_floor = sigma_floor  # the least scale the fitted tail may have, in the value's units
        super().__init__(capacity)

    def _arrays(self) -> Spec:
        return {
            "t": ((), np.float64, np.inf),       # initial threshold (peaks are excesses over it)
            "n": ((), np.float64, 0.0),          # observations seen (scaled down with nt)
            "nt": ((), np.float64, 0.0),         # peaks seen
            # excesses kept in float32 (they are refitted in float64): 1 KB a stream at 256 instead of 2
            "peaks": ((self.max_peaks,), np.float32, np.nan),
            "ppos": ((), np.int64, 0),
            "gamma": ((), np.float64, 0.0),
            "sigma": ((), np.float64, 1.0),
            "z": ((), np.float64, np.inf),       # threshold on the (drift-removed) error
            "mwin": ((max(1, self.depth),), np.float64, np.nan),
            "mpos": ((), np.int64, 0),
            "m": ((), np.float64, 0.0),          # DSPOT moving average of normal errors
            "ready": ((), np.bool_, False),
        }

    # -- tail model ----------------------------------------------------------
    def _quantile(self, idx: np.ndarray) -> np.ndarray:
        a = self.a
        t, g, s = a["t"][idx], a["gamma"][idx], a["sigma"][idx]
        r = self.risk * a["n"][idx] / np.maximum(a["nt"][idx], 1.0)
        with np.errstate(all="ignore"):
            zg = t + s / np.where(np.abs(g) < 1e-6, 1.0, g) * (np.power(r, -g) - 1.0)
            z0 = t - s * np.log(r)
        return np.where(np.abs(g) < 1e-6, z0, zg)

    def _fit(self, idx: np.ndarray) -> None:
        """Refit the GPD of ``idx`` by probability-weighted moments over their stored peaks."""
        if len(idx) == 0:
            return
        self._fit_peaks(idx, self.a["peaks"][idx])

    def _fit_peaks(self, idx: np.ndarray, peaks: np.ndarray) -> None:
        """Fit the GPD of ``idx`` to ``peaks`` (``[len(idx), max_peaks]`` float32, NaN where empty)."""
        P = np.sort(peaks.astype(np.float64), axis=1)  # NaNs sort last
        k = (~np.isnan(P)).sum(1).astype(np.float64)
        ranks = np.arange(P.shape[1])[None, :]
        valid = ranks < k[:, None]
        Pz = np.where(valid, P, 0.0)
        b0 = Pz.sum(1) / np.maximum(k, 1)
        # b1 = mean of x_(i) * (k - i) / (k - 1) over ascending order statistics (i from 1)
        w = np.where(valid, (k[:, None] - 1 - ranks) / np.maximum(k[:, None] - 1, 1), 0.0)
        b1 = (Pz * w).sum(1) / np.maximum(k, 1)
        with np.errstate(all="ignore"):
            # Hosking & Wallis: k = b0/(b0-2b1) - 2, alpha = 2 b0 b1/(b0-2b1); SPOT's shape gamma = -k
            gamma = np.clip(np.nan_to_num(2.0 - b0 / (b0 - 2 * b1), nan=0.0), *GAMMA_BOUNDS)
            sig = 2 * b0 * b1 / (b0 - 2 * b1)
        few = k < 8  # too few peaks for two parameters: exponential tail with the mean excess
        sigma = np.where(few | ~np.isfinite(sig) | (sig <= 0), np.maximum(b0, 1e-12), sig)
        gamma = np.where(few | ~np.isfinite(sig) | (sig <= 0), 0.0, gamma)
        self.a["gamma"][idx] = gamma
        self.a["sigma"][idx] = np.maximum(sigma, max(self.sigma_floor, 1e-12))
        self.a["z"][idx] = self._quantile(idx)

    # -- public ----------------------------------------------------------------
    def calibrate(self, slots: np.ndarray, errors: list[np.ndarray]) -> None:
        """Initialise each slot's tail from its normal errors (one 1-d array per slot)."""
        self.ensure(int(np.max(slots)) + 1 if len(slots) else 0)
        self.reset(slots)
        a = self.a
        for slot, e in zip(slots, errors, strict=True):
            e = np.asarray(e, dtype=np.float64)
            e = e[np.isfinite(e)]
            if len(e) < 8:
                continue
            if self.depth > 0:
                # DSPOT: residuals against the moving average of the previous `depth` errors
                d = self.depth
                csum = np.concatenate(([0.0], np.cumsum(e)))
                idx = np.arange(len(e))
                lo = np.maximum(0, idx - d)
                cnt = idx - lo
                mov = np.where(cnt > 0, (csum[idx] - csum[lo]) / np.maximum(cnt, 1), e[0])
                x = e - mov
                tail = e[-d:]
                a["mwin"][slot, : len(tail)] = tail
                a["mpos"][slot] = len(tail) % d
                a["m"][slot] = tail.mean()
            else:
                x = e
            t = float(np.quantile(x, self.init_quantile))
            exc = x[x > t] - t
            a["t"][slot] = t
            a["n"][slot] = len(x)
            a["nt"][slot] = len(exc)
            keep = exc[-self.max_peaks :]
            a["peaks"][slot, : len(keep)] = keep
            a["ppos"][slot] = len(keep) % self.max_peaks
            a["ready"][slot] = True
        self._fit(np.asarray(slots)[a["ready"][slots]])

    def tail_probability(self, slots: np.ndarray, e: np.ndarray) -> np.ndarray:
        """``P(E > e)`` under each slot's current model (1.0 where not calibrated)."""
        a = self.a
        x = e - (a["m"][slots] if self.depth > 0 else 0.0)
        t, g, s = a["t"][slots], a["gamma"][slots], a["sigma"][slots]
        q0 = np.maximum(a["nt"][slots], 0.5) / np.maximum(a["n"][slots], 1.0)
        with np.errstate(all="ignore"):
            y = np.maximum(x - t, 0.0)
            tail_g = q0 * np.power(np.maximum(1.0 + g * y / s, 1e-300), -1.0 / np.where(np.abs(g) < 1e-6, 1.0, g))
            tail_0 = q0 * np.exp(-y / s)
            tail = np.where(np.abs(g) < 1e-6, tail_0, tail_g)
            tail = np.where((g < 0) & (1.0 + g * y / s <= 0), 0.0, tail)
            # below t: log-linear from p=1 at x<=0 (or at the lower end) to p=q0 at t
            frac = np.clip(x / np.where(t > 0, t, 1.0), 0.0, 1.0)
            below = np.where(t > 0, np.power(q0, frac), np.where(x >= t, q0, 1.0))
        p = np.where(x > t, tail, below)
        return np.where(a["ready"][slots], np.clip(p, 0.0, 1.0), 1.0)

    def threshold(self, slots: np.ndarray) -> np.ndarray:
        """The current threshold in error units (``inf`` where not calibrated)."""
        a = self.a
        return np.where(a["ready"][slots], a["z"][slots] + (a["m"][slots] if self.depth > 0 else 0.0), np.inf)

    def update(self, slots: np.ndarray, e: np.ndarray, learn: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Score then learn ``e`` for ``slots`` (unique). Returns ``(p, threshold)`` before learning.

        ``learn`` (bool per slot) can forbid learning (e.g. while an alert is firing).
        """
        slots = np.asarray(slots)
        e = np.asarray(e, dtype=np.float64)
        p = self.tail_probability(slots, e)
        thr = self.threshold(slots)
        a = self.a
        ok = a["ready"][slots] & np.isfinite(e) & (e <= thr)
        if learn is not None:
            ok &= learn
        s = slots[ok]
        ev = e[ok]
        x = ev - a["m"][s] if self.depth > 0 else ev
        a["n"][s] += 1
        peak = x > a["t"][s]
        ps = s[peak]
        if len(ps):
            pos = a["ppos"][ps]
            a["peaks"][ps, pos] = x[peak] - a["t"][ps]
            a["ppos"][ps] = (pos + 1) % self.max_peaks
            a["nt"][ps] += 1
            # keep the observed peak rate over a bounded memory: rescale n and nt together
            big = ps[a["nt"][ps] > 4 * self.max_peaks]
            if len(big):
                f = (2.0 * self.max_peaks) / a["nt"][big]
                a["nt"][big] *= f
                a["n"][big] *= f
        if self.depth > 0 and len(s):
            pos = a["mpos"][s]
            a["mwin"][s, pos] = ev
            a["mpos"][s] = (pos + 1) % self.depth
            with np.errstate(all="ignore"):  # in slices: nanmean's temporaries are several [n, depth] copies
                for i in range(0, len(s), SLICE):
                    a["m"][s[i : i + SLICE]] = np.nanmean(a["mwin"][s[i : i + SLICE]], axis=1)
        # Refit where a peak arrived, and (DSPOT) where the moving mean moved the quantile.
        self._fit(ps)  # DSPOT's moving mean shifts the threshold by itself (threshold = z + m)
        return p, thr


class HeldTail(SpotThresholds):
    """A SPOT tail (no moving average) fitted once per training and then only read: the level
    statistic's (:mod:`sentinel.detect.level`, ``Group.lthr``). It keeps the fitted parameters and
    not the peaks (``max_peaks`` float32 per stream, 1 KB at 256): :meth:`calibrate` fits exactly as
    :meth:`SpotThresholds.calibrate` with ``depth=0`` does, so :meth:`tail_probability` and
    :meth:`threshold` give the same numbers; :meth:`update` scores without learning. A checkpoint
    written while it was a :class:`SpotThresholds` restores: the arrays it no longer has are dropped."""

    def __init__(self, risk: float = 1e-4, init_quantile: float = 0.98, max_peaks: int = 256,
                 capacity: int = 64, sigma_floor: float = 1e-12):
        super().__init__(risk, init_quantile, 0, max_peaks, capacity, sigma_floor)

    def _arrays(self) -> Spec:
        return {k: v for k, v in super()._arrays().items() if k in self.KEPT}

    KEPT = ("t", "n", "nt", "gamma", "sigma", "z", "ready")

    def calibrate(self, slots: np.ndarray, errors: list[np.ndarray]) -> None:
        """Fit each slot's tail to its normal errors (one 1-d array per slot), as SPOT would; keep no peaks."""
        self.ensure(int(np.max(slots)) + 1 if len(slots) else 0)
        self.reset(slots)
        a = self.a
        slots = np.asarray(slots)
        peaks = np.full((len(slots), self.max_peaks), np.nan, dtype=np.float32)
        for i, (slot, e) in enumerate(zip(slots, errors, strict=True)):
            x = np.asarray(e, dtype=np.float64)
            x = x[np.isfinite(x)]
            if len(x) < 8:
                continue
            t = float(np.quantile(x, self.init_quantile))
            exc = x[x > t] - t
            a["t"][slot], a["n"][slot], a["nt"][slot] = t, len(x), len(exc)
            keep = exc[-self.max_peaks:]
            peaks[i, : len(keep)] = keep
            a["ready"][slot] = True
        ok = a["ready"][slots]
        if ok.any():
            self._fit_peaks(slots[ok], peaks[ok])

    def update(self, slots: np.ndarray, e: np.ndarray, learn: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """``(p, threshold)`` of ``e``; nothing is learned (the tail is held as fitted)."""
        slots = np.asarray(slots)
        return self.tail_probability(slots, np.asarray(e, dtype=np.float64)), self.threshold(slots)

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        super().restore({k: v for k, v in arrays.items() if k in self.a})


class QuantileThresholds(_Slots):
    """Streaming quantile of the error per slot: a decayed histogram over log-spaced bins."""

    EDGES = np.concatenate(([0.0], np.logspace(-6, 6, 97)))  # 97 edges above 0 -> 97 bins (+ overflow)

    def __init__(self, risk: float = 1e-4, decay: float = 0.999, capacity: int = 64):
        self.risk, self.decay = risk, decay
        super().__init__(capacity)

    def _arrays(self) -> Spec:
        return {"h": ((len(self.EDGES),), np.float64, 0.0), "ready": ((), np.bool_, False)}

    def _bins(self, e: np.ndarray) -> np.ndarray:
        return np.clip(np.searchsorted(self.EDGES, e, side="right") - 1, 0, len(self.EDGES) - 1)

    def calibrate(self, slots: np.ndarray, errors: list[np.ndarray]) -> None:
        self.ensure(int(np.max(slots)) + 1 if len(slots) else 0)
        self.reset(slots)
        for slot, e in zip(slots, errors, strict=True):
            e = np.asarray(e, dtype=np.float64)
            e = e[np.isfinite(e)]
            if len(e) < 8:
                continue
            w = self.decay ** np.arange(len(e))[::-1]
            np.add.at(self.a["h"][slot], self._bins(e), w)
            self.a["ready"][slot] = True

    TAIL = 0.1  # above the histogram's 90% quantile the tail is exponential (GPD with shape 0)

    def _tail(self, h: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per row of ``h``: (mass >= each bin, the tail's start u, its mass pu, its scale)."""
        tot = np.maximum(h.sum(1), 1e-12)
        above = np.cumsum(h[:, ::-1], 1)[:, ::-1]
        frac = above / tot[:, None]
        q = np.maximum(np.argmax(frac <= self.TAIL, axis=1) - 1, 0)  # last bin still holding >= TAIL
        u = self.EDGES[q]
        centers = np.concatenate((self.EDGES[:1] / 2, np.sqrt(self.EDGES[1:] * np.roll(self.EDGES, -1)[1:])))
        centers[-1] = self.EDGES[-1]
        in_tail = np.arange(h.shape[1])[None, :] >= q[:, None]
        w = np.where(in_tail, h, 0.0)
        mass = np.maximum(w.sum(1), 1e-12)
        scale = np.maximum((w * np.maximum(centers[None, :] - u[:, None], 0.0)).sum(1) / mass, 1e-12)
        return above, u, mass / tot, scale

    def tail_probability(self, slots: np.ndarray, e: np.ndarray) -> np.ndarray:
        """Histogram mass above ``e`` in the body; an exponential tail fitted above the 90% quantile,
        so probabilities far below ``1 - decay`` (what the decayed counts can hold) are expressible."""
        h = self.a["h"][slots]
        e = np.asarray(e, dtype=np.float64)
        tot = h.sum(1)
        b = self._bins(e)
        above, u, pu, scale = self._tail(h)
        nb = h.shape[1]
        mass_above = np.where(b + 1 < nb, above[np.arange(len(b)), np.minimum(b + 1, nb - 1)], 0.0)
        body = (mass_above + 0.5) / (tot + 1.0)
        tail = pu * np.exp(-np.maximum(e - u, 0.0) / scale)
        p = np.where(e > u, np.minimum(body, tail), body)
        return np.where(self.a["ready"][slots], np.clip(p, 0, 1), 1.0)

    def threshold(self, slots: np.ndarray) -> np.ndarray:
        """The error whose tail probability is ``risk``."""
        h = self.a["h"][slots]
        _above, u, pu, scale = self._tail(h)
        thr = u + scale * np.log(np.maximum(pu / self.risk, 1.0))
        return np.where(self.a["ready"][slots], thr, np.inf)

    def update(self, slots: np.ndarray, e: np.ndarray, learn: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        slots = np.asarray(slots)
        e = np.asarray(e, dtype=np.float64)
        p = self.tail_probability(slots, e)
        thr = self.threshold(slots)
        # A quantile at risk 1e-4 cannot be learned from below itself: learn every error the
        # caller allows (the engine forbids learning while an alert is pending or firing).
        ok = self.a["ready"][slots] & np.isfinite(e)
        if learn is not None:
            ok &= learn
        s = slots[ok]
        self.a["h"][s] *= self.decay
        self.a["h"][s, self._bins(e[ok])] += 1.0
        return p, thr


def make_thresholds(th: Any) -> SpotThresholds | QuantileThresholds:
    """The thresholds a ``detect.threshold`` config section asks for (the section passed whole)."""
    if th.method == "quantile":
        return QuantileThresholds(risk=th.risk, decay=th.decay)
    return SpotThresholds(risk=th.risk, init_quantile=th.init_quantile, depth=th.depth if th.method == "dspot" else 0,
                          max_peaks=th.max_peaks)


KNEE = 0.8  # score above which -log10(p)/decades is compressed towards 1 instead of clipped


def score_from_p(p: np.ndarray, decades: float) -> np.ndarray:
    """Calibrated score in [0, 1): ``s = -log10(p) / decades`` up to ``KNEE``, then compressed.

    A global level means the same rarity on every stream: score 0.5 with 8 decades
    is an error exceeded by one normal tick in 10^4 on that stream. Above ``KNEE``
    the score approaches 1 as ``1 - w / (1 + (s - KNEE) / w)`` with ``w = 1 - KNEE``
    (continuous, slope 1 at the knee), so events far rarer than ``10^-decades``
    still keep their order instead of all reading 1.0.

    >>> [round(float(x), 3) for x in score_from_p(np.array([1.0, 1e-4, 1e-8, 1e-16, 1e-40]), 8.0)]
    [0.0, 0.5, 0.9, 0.971, 0.991]
    """
    with np.errstate(divide="ignore"):
        s = np.maximum(-np.log10(np.maximum(p, 1e-300)) / decades, 0.0)
    w = 1.0 - KNEE
    return np.where(s <= KNEE, s, 1.0 - w / (1.0 + (s - KNEE) / w)) + 0.0  # + 0.0 turns -0.0 into 0.0
