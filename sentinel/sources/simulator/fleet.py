"""A fleet of synthetic sensors with seasonality, drift, regime changes and labelled anomalies.

Everything here is a pure function of ``(seed, time)``: a value is computed from
hashes of ``(seed, stream, tick, field)``, never from a random generator's running
state, so ``Fleet.samples(a, b) + Fleet.samples(b, c) == Fleet.samples(a, c)``
and a restarted source continues exactly where its cursor says.

Signal of stream ``s``, field ``f`` at tick ``k`` (time ``t = k * interval``)::

    value = base[s,f] + scale[s,f] * (coupling[s,f] * load[s](t) + 0.15 * own[s,f](t) + trend[s](t))
            + regime[s,f](t) + noise_sd[s,f] * N(0, 1)

    load[s](t) = daily sine + weekly sine + slow smooth noise + a fast "machine cycle" sine

``load`` is shared by a stream's fields, so they are correlated (current and temp
rise together). ``regime`` is a piecewise-constant level that changes at random
(``regime_rate`` per sensor per day) and persists: it is the new normal, never
labelled. Anomalies (``ANOMALY_KINDS``) are injected on top, only at or after the
fleet's ``start`` (history before it is clean, so warm-up trains on normal data),
and at most one per sensor per anomaly bucket (an hour, or longer for slow
intervals), so one sensor's anomalies never overlap.

Ticks sit on the absolute grid ``k * interval`` (independent of ``start``); a
range ``[t0, t1)`` holds the ticks with ``t0 <= k * interval < t1``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import get_args

import numpy as np

from ...config.source_simulator import AnomalyKind, SimulatorSourceConfig
from ...types import Sample, StreamKey
from .hashing import _TWO_PI, _normal, _uniform

ANOMALY_KINDS: tuple[str, ...] = tuple(get_args(AnomalyKind))
"""spike, dip, level_shift, variance_burst, drift, stuck, frequency_change, correlation_break."""

# Duration range of each kind, in ticks (inclusive).
_DURATION: dict[str, tuple[int, int]] = {
    "spike": (1, 3),
    "dip": (3, 12),
    "level_shift": (30, 120),
    "variance_burst": (30, 120),
    "drift": (60, 240),
    "stuck": (30, 120),
    "frequency_change": (60, 240),
    "correlation_break": (60, 240),
}
_MAX_DURATION = max(hi for _, hi in _DURATION.values())
_DAY, _WEEK, _HOUR = 86400.0, 604800.0, 3600.0
_REGIME_FORCED = 16  # every 16th regime bucket is a change point, so a level is found <= 16 buckets back

# Hash salts: one per independent random quantity.
(_S_BASE, _S_SCALE, _S_COUP, _S_NSD, _S_AD, _S_AW, _S_AN, _S_AC, _S_CYC, _S_PD, _S_PW, _S_PC, _S_AT, _S_PT,
 _S_FT, _S_OWN, _S_SLOW, _S_NOISE_A, _S_NOISE_B, _S_RFLAG, _S_RCUT, _S_RLEV, _S_RAMP, _S_AOCC, _S_AOFF,
 _S_AKIND, _S_ADUR, _S_AFLD, _S_AALL, _S_AMAG, _S_ASGN, _S_AFAC, _S_VB, _S_ALT) = range(1, 35)


@dataclass(frozen=True)
class Anomaly:
    """A labelled injected anomaly: stream ``key``, ``kind``, ``[start, end)`` epoch seconds, fields hit."""

    key: StreamKey
    kind: str
    start: float
    end: float
    fields: tuple[str, ...]


@dataclass(frozen=True)
class _Injection:
    """An anomaly with everything needed to render it. Ticks ``[k0, k1)``; ``fidx`` field indices."""

    stream: int
    kind: str
    k0: int
    k1: int
    fidx: tuple[int, ...]
    mag: float      # uniform draw in [0, 1) that picks the size within the kind's range
    sign: float     # +1 or -1
    factor: float   # uniform draw in [0, 1) for frequency_change


class Fleet:
    """``cfg.streams`` synthetic sensors with ``len(cfg.fields)`` correlated fields each.

    ``keys[i]`` is ``StreamKey.of(cfg.measurement, site="site-N", sensor="s-NNNN")``;
    ``start`` (epoch seconds) is the earliest time an anomaly may begin.
    """

    def __init__(self, cfg: SimulatorSourceConfig, start: float):
        self.cfg = cfg
        self.start = float(start)
        self.interval = float(cfg.interval)
        self.fields: tuple[str, ...] = tuple(cfg.fields)
        self.keys: list[StreamKey] = [
            StreamKey.of(cfg.measurement, site=f"site-{i % cfg.sites}", sensor=f"s-{i:04d}")
            for i in range(cfg.streams)
        ]
        self.index_of: dict[StreamKey, int] = {k: i for i, k in enumerate(self.keys)}
        kinds = [k for k in cfg.anomaly_kinds if k != "correlation_break" or len(self.fields) >= 2]
        self._kinds: tuple[str, ...] = tuple(kinds) or ("spike",)
        self._seed = int(cfg.seed)
        # Anomaly buckets hold at most one anomaly per sensor, starting in the bucket's first half,
        # and are at least twice the longest anomaly: a sensor's anomalies never overlap.
        self._abucket = max(_HOUR, 2.0 * _MAX_DURATION * self.interval)
        self._aprob = min(1.0, cfg.anomaly_rate * self._abucket / _HOUR)
        self._params(np.arange(cfg.streams, dtype=np.int64))

    # ------------------------------------------------------------------ parameters
    def _params(self, s: np.ndarray) -> None:
        seed, nf = self._seed, len(self.fields)
        sf = (s[:, None], np.arange(nf)[None, :])
        u = lambda salt, *p: _uniform(seed, salt, *p)  # noqa: E731
        self.base = 10.0 + 90.0 * u(_S_BASE, *sf)                      # [S, F]
        self.scale = self.base * (0.05 + 0.10 * u(_S_SCALE, *sf))      # [S, F] size of normal variation
        self.coupling = 0.6 + 0.4 * u(_S_COUP, *sf)                   # [S, F] share of the load signal
        self.noise_sd = self.scale * (0.04 + 0.08 * u(_S_NSD, *sf))   # [S, F]
        self.a_daily = 0.5 + 0.5 * u(_S_AD, s)
        self.a_weekly = 0.1 + 0.2 * u(_S_AW, s)
        self.a_slow = 0.2 + 0.2 * u(_S_AN, s)
        self.a_cycle = 0.4 + 0.3 * u(_S_AC, s)
        self.cycle_ticks = 20.0 + 40.0 * u(_S_CYC, s)
        self.ph_daily = _TWO_PI * u(_S_PD, s)
        self.ph_weekly = _TWO_PI * u(_S_PW, s)
        self.ph_cycle = _TWO_PI * u(_S_PC, s)
        self.a_trend = 0.2 + 0.3 * u(_S_AT, s)
        self.trend_period = _DAY * (30.0 + 90.0 * u(_S_PT, s))
        self.ph_trend = _TWO_PI * u(_S_FT, s)
        self.regime_amp = 1.0 + 1.0 * u(_S_RAMP, *sf)                 # [S, F] in units of scale
        self._slow_knot = max(900.0, 30.0 * self.interval)
        self._regime_cache: tuple | None = None

    # ------------------------------------------------------------------ signal
    def _ticks(self, t0: float, t1: float) -> np.ndarray:
        """Integer tick indices k with t0 <= k*interval < t1."""
        iv = self.interval

        def first_at_or_after(t: float) -> int:
            k = math.ceil(t / iv)
            while k * iv < t:
                k += 1
            while (k - 1) * iv >= t:
                k -= 1
            return k

        if not t1 > t0:
            return np.zeros(0, dtype=np.int64)
        return np.arange(first_at_or_after(t0), first_at_or_after(t1), dtype=np.int64)

    def _smooth(self, salt: int, t: np.ndarray, *parts: np.ndarray) -> np.ndarray:
        """Smooth value noise, shape [T, *P]: cubic-eased between N(0,1) knots every ``_slow_knot`` s.

        ``t`` is [T]; ``parts`` broadcast to shape P. Knots are hashed once per knot, not per tick.
        """
        x = t / self._slow_knot
        j = np.floor(x).astype(np.int64)
        w = x - j
        w = w * w * (3.0 - 2.0 * w)
        jmin = int(j.min())
        knots = np.arange(jmin, int(j.max()) + 2, dtype=np.int64)
        pdim = np.broadcast_shapes(*(np.shape(p) for p in parts))
        kn = _normal(self._seed, salt, *parts, knots.reshape((-1,) + (1,) * len(pdim)))  # [J, *P]
        n0, n1 = kn[j - jmin], kn[j - jmin + 1]
        return n0 + (n1 - n0) * w.reshape((-1,) + (1,) * len(pdim))

    def _load(self, s: np.ndarray, k: np.ndarray, alt: bool = False) -> np.ndarray:
        """Shared load signal, shape [T, S'] for streams ``s`` [S'] and ticks ``k`` [T].

        ``alt=True`` gives an independent load of the same kind (other phases and slow noise):
        what a decoupled field follows during a correlation_break.
        """
        t = (k * self.interval)[:, None]
        kf = k.astype(np.float64)[:, None]
        # Phase shifts in [0.6pi, 1.4pi]: the decoupled field's cycle runs against the others'.
        shift = math.pi * (0.6 + 0.8 * _uniform(self._seed, _S_ALT, s)) if alt else 0.0
        return (
            self.a_daily[s] * np.sin(_TWO_PI * t / _DAY + self.ph_daily[s] + shift)
            + self.a_weekly[s] * np.sin(_TWO_PI * t / _WEEK + self.ph_weekly[s] + shift)
            + self.a_slow[s] * self._smooth(_S_SLOW + (500 if alt else 0), t[:, 0], s)
            + self.a_cycle[s] * np.sin(_TWO_PI * kf / self.cycle_ticks[s] + self.ph_cycle[s] + shift)
        )

    def _regime(self, s: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Regime level, shape [T, S', F]: constant between change points, in value units."""
        nf = len(self.fields)
        if self.cfg.regime_rate <= 0:
            return np.zeros((len(t), len(s), nf))
        b = np.floor(t / _DAY).astype(np.int64)                               # [T]
        buckets = np.arange(b.min() - 1 - _REGIME_FORCED, b.max() + 1)         # [B]
        ck = (int(buckets[0]), len(buckets), len(s), hash(s.tobytes()))
        if self._regime_cache is not None and self._regime_cache[0] == ck:
            last, cut = self._regime_cache[1]
        else:
            flag = (buckets % _REGIME_FORCED == 0)[None, :] | (
                _uniform(self._seed, _S_RFLAG, s[:, None], buckets[None, :]) < self.cfg.regime_rate)
            cut = (buckets * _DAY)[None, :] + _DAY * _uniform(self._seed, _S_RCUT, s[:, None], buckets[None, :])
            last = np.maximum.accumulate(np.where(flag, np.arange(len(buckets))[None, :], -1), axis=1)
            self._regime_cache = (ck, (last, cut))
        bi = (b - buckets[0])[:, None]                                        # [T, 1]
        cols = np.arange(len(s))[None, :]
        eff = bi - (t[:, None] < cut[cols, bi])                               # [T, S']
        lb = buckets[last[cols, eff]]                                         # [T, S'] bucket of the level
        seg = np.concatenate(([0], np.cumsum(np.any(lb[1:] != lb[:-1], axis=1))))  # levels change rarely
        rows = lb[np.concatenate(([True], seg[1:] != seg[:-1]))]
        inv = seg
        lev = _normal(self._seed, _S_RLEV, s[None, :, None], rows[:, :, None], np.arange(nf)[None, None, :])
        return lev[inv.reshape(-1)] * (self.regime_amp[s] * self.scale[s])[None, :, :]

    def _clean(self, s: np.ndarray, k: np.ndarray) -> np.ndarray:
        """Values without anomalies, shape [T, S', F]."""
        nf = len(self.fields)
        t = k * self.interval
        load = self._load(s, k)[:, :, None]
        f3 = np.arange(nf)[None, None, :]
        own = self._smooth(_S_OWN, t, s[:, None], np.arange(nf)[None, :])
        trend = (self.a_trend[s] * np.sin(_TWO_PI * t[:, None] / self.trend_period[s] + self.ph_trend[s]))
        eps = _normal(self._seed, _S_NOISE_A, s[None, :, None], k[:, None, None], f3)
        scale = self.scale[s][None]
        return (self.base[s][None] + scale * (self.coupling[s][None] * load + 0.15 * own + trend[:, :, None])
                + self._regime(s, t) + self.noise_sd[s][None] * eps)

    # ------------------------------------------------------------------ anomalies
    def _injections(self, s: np.ndarray, t0: float, t1: float) -> list[_Injection]:
        """Injected anomalies of streams ``s`` overlapping ``[t0, t1)``, stuck ones last."""
        if self._aprob <= 0 or not t1 > t0 or len(s) == 0:
            return []
        seed, iv, hb = self._seed, self.interval, self._abucket
        lo = max(t0 - _MAX_DURATION * iv, self.start)
        if lo >= t1:
            return []
        h = np.arange(math.floor(lo / hb), math.floor(t1 / hb) + 1, dtype=np.int64)
        occ = _uniform(seed, _S_AOCC, s[:, None], h[None, :]) < self._aprob
        si, hi = np.nonzero(occ)
        out: list[_Injection] = []
        nf = len(self.fields)
        for st, hh in zip(s[si].tolist(), h[hi].tolist(), strict=True):
            u = lambda salt: float(_uniform(seed, salt, st, hh))  # noqa: E731,B023
            kind = self._kinds[min(int(u(_S_AKIND) * len(self._kinds)), len(self._kinds) - 1)]
            k0 = math.ceil((hh * hb + u(_S_AOFF) * hb / 2.0) / iv)
            lo_d, hi_d = _DURATION[kind]
            k1 = k0 + lo_d + min(int(u(_S_ADUR) * (hi_d - lo_d + 1)), hi_d - lo_d)
            if k0 * iv < self.start or k0 * iv >= t1 or k1 * iv <= t0:
                continue
            f = min(int(u(_S_AFLD) * nf), nf - 1)
            all_fields = kind not in ("correlation_break", "frequency_change") and u(_S_AALL) < 0.3
            fidx = tuple(range(nf)) if all_fields else (f,)
            out.append(_Injection(st, kind, k0, k1, fidx, u(_S_AMAG), 1.0 if u(_S_ASGN) < 0.5 else -1.0,
                                  u(_S_AFAC)))
        out.sort(key=lambda a: (a.kind == "stuck", a.k0, a.stream))
        return out

    def _apply(self, vals: np.ndarray, s: np.ndarray, k: np.ndarray, injs: Iterable[_Injection]) -> None:
        """Add injections to ``vals`` [T, S', F] (ticks ``k`` contiguous, streams ``s``) in place."""
        if len(k) == 0:
            return
        col = {int(x): i for i, x in enumerate(s.tolist())}
        kfirst, mag_all = int(k[0]), float(self.cfg.anomaly_magnitude)
        for a in injs:
            c = col.get(a.stream)
            r0, r1 = max(a.k0 - kfirst, 0), min(a.k1 - kfirst, len(k))
            if c is None or r0 >= r1:
                continue
            kk = k[r0:r1]
            st = np.array([a.stream])
            sc = self.scale[a.stream]
            m = mag_all
            for f in a.fidx:
                view = vals[r0:r1, c, f]
                if a.kind == "spike":
                    view += a.sign * m * (6.0 + 3.0 * a.mag) * sc[f]
                elif a.kind == "dip":
                    view -= m * (4.0 + 2.0 * a.mag) * sc[f]
                elif a.kind == "level_shift":
                    view += a.sign * m * (2.5 + 1.5 * a.mag) * sc[f]
                elif a.kind == "variance_burst":
                    eps = _normal(self._seed, _S_VB, a.stream, kk, f)
                    view += eps * m * (0.8 + 0.4 * a.mag) * sc[f]
                elif a.kind == "drift":
                    ramp = (kk - a.k0 + 1) / float(a.k1 - a.k0)
                    view += a.sign * m * (3.0 + 2.0 * a.mag) * sc[f] * ramp
                elif a.kind == "stuck":
                    view[:] = self._clean(st, np.array([a.k0]))[0, 0, f]
                elif a.kind == "frequency_change":
                    cyc, ph = self.cycle_ticks[a.stream], self.ph_cycle[a.stream]
                    new_cyc = cyc * (0.25 + 0.15 * a.factor)
                    kf = kk.astype(np.float64)
                    amp = sc[f] * self.coupling[a.stream, f] * self.a_cycle[a.stream]
                    view += amp * (1.5 * m * np.sin(_TWO_PI * kf / new_cyc + ph) - np.sin(_TWO_PI * kf / cyc + ph))
                elif a.kind == "correlation_break":
                    diff = self._load(st, kk, alt=True)[:, 0] - self._load(st, kk)[:, 0]
                    view += m * sc[f] * self.coupling[a.stream, f] * diff

    def _anomaly(self, a: _Injection) -> Anomaly:
        return Anomaly(self.keys[a.stream], a.kind, a.k0 * self.interval, a.k1 * self.interval,
                       tuple(self.fields[f] for f in a.fidx))

    # ------------------------------------------------------------------ public API
    def _select(self, keys: Iterable[StreamKey] | None) -> np.ndarray:
        if keys is None:
            return np.arange(len(self.keys), dtype=np.int64)
        idx = sorted({self.index_of[k] for k in keys if k in self.index_of})
        return np.asarray(idx, dtype=np.int64)

    def render(self, s: np.ndarray, t0: float, t1: float) -> tuple[np.ndarray, np.ndarray]:
        """Tick times [T] and values [T, S', F] of streams ``s`` (indices) in ``[t0, t1)``."""
        k = self._ticks(t0, t1)
        if len(k) == 0 or len(s) == 0:
            return k * self.interval, np.zeros((len(k), len(s), len(self.fields)))
        vals = self._clean(s, k)
        self._apply(vals, s, k, self._injections(s, t0, t1))
        return k * self.interval, vals

    def samples(self, t0: float, t1: float, keys: Iterable[StreamKey] | None = None) -> list[Sample]:
        """Every sample with ``t0 <= ts < t1``, in time order (streams in index order within a tick).

        ``keys`` restricts to those streams (unknown keys are ignored).
        """
        s = self._select(keys)
        ts, vals = self.render(s, t0, t1)
        if len(ts) == 0 or len(s) == 0:
            return []
        skeys, fields = [self.keys[i] for i in s.tolist()], self.fields
        out: list[Sample] = []
        append = out.append
        for t, row in zip(ts.tolist(), vals.tolist(), strict=True):
            for key, v in zip(skeys, row, strict=True):
                append(Sample(key, t, fields, tuple(v)))
        return out

    def anomalies(self, t0: float, t1: float) -> list[Anomaly]:
        """Labels of the anomalies overlapping ``[t0, t1)``, ordered by start then stream."""
        injs = self._injections(np.arange(len(self.keys), dtype=np.int64), t0, t1)
        return [self._anomaly(a) for a in sorted(injs, key=lambda a: (a.k0, a.stream))]

    def array(self, key_index: int, t0: float, t1: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One stream as arrays: ts [N] (s), values [N, F], is_anomaly [N] bool (any field)."""
        s = np.array([key_index], dtype=np.int64)
        k = self._ticks(t0, t1)
        vals = self._clean(s, k) if len(k) else np.zeros((0, 1, len(self.fields)))
        injs = self._injections(s, t0, t1)
        self._apply(vals, s, k, injs)
        labels = np.zeros(len(k), dtype=bool)
        for a in injs:
            labels[(k >= a.k0) & (k < a.k1)] = True
        return k * self.interval, vals[:, 0, :], labels


def make_series(kind: str, n: int, seed: int, interval: float = 60.0, n_anomalies: int = 3,
                fields: int = 1, regime_rate: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A single labelled series for benchmarks: ts [n], values [n, fields], labels [n] bool.

    The first 40% of rows are clean (a training part); ``n_anomalies`` anomalies of
    exactly ``kind`` sit in the rest, one per equal segment, never overlapping.
    ``correlation_break`` needs ``fields >= 2``. Deterministic in ``seed``.
    """
    if kind not in ANOMALY_KINDS:
        raise ValueError(f"unknown anomaly kind {kind!r}; expected one of {ANOMALY_KINDS}")
    if kind == "correlation_break" and fields < 2:
        raise ValueError("correlation_break needs fields >= 2")
    if n < 10 or n_anomalies < 0 or fields < 1:
        raise ValueError("need n >= 10, n_anomalies >= 0, fields >= 1")
    names = ["value"] if fields == 1 else [f"x{i}" for i in range(fields)]
    cfg = SimulatorSourceConfig.model_validate({"streams": 1, "fields": names, "interval": interval,
                                                "anomaly_rate": 0.0, "regime_rate": regime_rate, "seed": seed})
    k0 = math.ceil(1_600_000_000.0 / interval)
    fleet = Fleet(cfg, start=k0 * interval)
    k = np.arange(k0, k0 + n, dtype=np.int64)
    s = np.array([0], dtype=np.int64)
    vals = fleet._clean(s, k)
    rng = np.random.default_rng(seed)
    train = math.ceil(0.4 * n)
    seg = (n - train) // max(n_anomalies, 1)
    injs, labels = [], np.zeros(n, dtype=bool)
    lo_d, hi_d = _DURATION[kind]
    for i in range(n_anomalies if seg >= 4 else 0):
        dur = min(int(rng.integers(lo_d, hi_d + 1)), max(1, seg // 3))
        first = train + i * seg + seg // 5
        last = train + (i + 1) * seg - dur - 1
        r = int(rng.integers(first, max(first, last) + 1))
        f = int(rng.integers(0, fields))
        injs.append(_Injection(0, kind, k0 + r, k0 + r + dur, (f,), float(rng.random()),
                               1.0 if rng.random() < 0.5 else -1.0, float(rng.random())))
        labels[r:r + dur] = True
    injs.sort(key=lambda a: (a.kind == "stuck", a.k0))
    fleet._apply(vals, s, k, injs)
    return k * interval, vals[:, 0, :], labels
