"""The engine: one synchronous code path from samples to scores and alert transitions.

``sentinel run`` and ``sentinel replay`` both drive an :class:`Engine`; only the
clock differs (wall time vs the file's timestamps). The engine owns, per group of
streams with the same field count: a :class:`~sentinel.model.bank.Bank`, a
threshold object, an :class:`~sentinel.alerts.state.AlertMachine` and bounded
per-stream history buffers, all indexed by the same slot. It does no I/O: training
is handed out as :class:`~sentinel.model.train.TrainJob` objects
(:meth:`Engine.due_training`) and results come back through
:meth:`Engine.apply_training`, so the daemon can train in another process and
replay can train inline.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from ..alerts.state import FIRING, PENDING, AlertMachine, AlertRules, Transition
from ..config import SentinelConfig
from ..detect.thresholds import make_thresholds, score_from_p
from ..model.bank import Bank
from ..model.cells import Dims
from ..model.train import TrainJob, TrainResult, TrainSettings
from ..slots import SlotArrays, Spec
from ..types import AlertEvent, Sample, StreamKey
from .views import ChartSeries, StreamView

REJECT_REASONS = ("out_of_order", "duplicate", "non_finite", "no_values", "max_streams", "bad_fields")
_INF = float("inf")
BURN_IN = 16  # ticks after a state reset whose errors are not used for calibration
STUCK_MIN = 8  # identical values in a row before a field can count as stuck
RELEARN_TICKS = 512  # fewest ticks an alert must last before its level can be learned as normal
MAX_INFLATE = 10.0  # most the in-sample calibration errors are scaled up by (see calibration_errors)


def calibration_errors(err: np.ndarray, usable: np.ndarray, held_out: float = 0.0) -> list[np.ndarray]:
    """Per stream, the errors a threshold is calibrated on: usable samples (not padding, not
    alerted), less the first ``BURN_IN`` after the zero state when there are enough of them.

    The model was fitted to all but the last ``held_out`` fraction of the columns, so its
    errors there are in-sample and flatter it: they are scaled up by how much larger the
    held-out errors are (the ratio of medians, between 1 and ``MAX_INFLATE``), so the tail
    fitted to them describes errors on data the model has not seen.
    """
    L = err.shape[1]
    n_val = round(L * held_out)
    out = []
    for e_row, ok in zip(err, usable, strict=True):
        e_row = e_row.astype(np.float64)
        if n_val >= 16:
            tr, va = e_row[: L - n_val][ok[: L - n_val]], e_row[L - n_val :][ok[L - n_val :]]
            if len(tr) >= 16 and len(va) >= 16:
                med = float(np.median(tr))
                r = float(np.median(va)) / med if med > 0 else 1.0
                e_row = e_row.copy()
                e_row[: L - n_val] *= min(max(r, 1.0), MAX_INFLATE)
        e = e_row[ok]
        out.append(e[BURN_IN:] if len(e) > 2 * BURN_IN else e)
    return out


def longest_runs(v: np.ndarray) -> np.ndarray:
    """Longest run of identical consecutive values per stream and field; ``v`` ``[n, L, F]`` (NaN = gap)."""
    n, L, F = v.shape
    best = np.zeros((n, F), dtype=np.int64)
    cur = np.zeros((n, F), dtype=np.int64)
    for i in range(1, L):
        same = (v[:, i] == v[:, i - 1]) & ~np.isnan(v[:, i])
        cur = np.where(same, cur + 1, 0)
        np.maximum(best, cur + 1, out=best, where=same)
    return np.maximum(best, 1)


def stream_seed(key: StreamKey, seed: int) -> int:
    h = hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & 0x7FFF_FFFF_FFFF_FFFF


def train_settings(cfg: SentinelConfig) -> TrainSettings:
    t = cfg.train
    return TrainSettings(epochs=t.epochs, bptt=t.bptt, segments=t.segments, lr=t.lr, weight_decay=t.weight_decay,
                         dropout=t.dropout, patience=t.patience, val_fraction=t.val_fraction,
                         prediction_weight=cfg.model.prediction_weight, seed=t.seed)


@dataclass
class TickOutput:
    """Per input sample (same order): verdicts; plus the alert events of this call."""

    score: np.ndarray
    error: np.ndarray
    threshold: np.ndarray
    firing: np.ndarray
    ready: np.ndarray
    rejected: list[str | None]
    state: np.ndarray  # AlertState after the sample (0 ok, 1 pending, 2 firing, 3 resolved)
    events: list[AlertEvent] = field(default_factory=list)


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
    }

    def __init__(self, F: int, cfg: SentinelConfig, device: str):
        self.F = F
        self.cap = cfg.streams.history_size
        self.chart = 120
        m = cfg.model
        self.bank = Bank(Dims(F, m.hidden, m.window, m.cell, m.baseline_halflife, m.level_weight, m.level_k,
                              m.baseline_alerting_rate, m.level_halflife),
                         prediction_weight=m.prediction_weight, device=device)
        self.thr = make_thresholds(cfg.detect.threshold)
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
            "ch_score": ((self.chart,), np.float32, np.nan), "ch_thr": ((self.chart,), np.float32, np.nan),
            "ch_err": ((self.chart,), np.float32, np.nan), "ch_state": ((self.chart,), np.int8, 0),
        })
        self.slots = SlotArrays(spec, 0)
        self.a = self.slots.a
        self._ensure(64)

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


class Engine:
    """Samples in, scores and alert transitions out. See the module docstring."""

    def __init__(self, cfg: SentinelConfig, device: str = "cpu"):
        self.cfg = cfg
        self.device = device
        self.groups: dict[int, Group] = {}
        self.index: dict[StreamKey, tuple[int, int]] = {}
        self.rejected: dict[str, int] = dict.fromkeys(REJECT_REASONS, 0)
        self.model_version = 0
        self.settings = train_settings(cfg)
        self.created: list[StreamKey] = []  # streams added since the caller last emptied this list

    # -- streams ---------------------------------------------------------------
    def _group(self, F: int) -> Group:
        g = self.groups.get(F)
        if g is None:
            g = self.groups[F] = Group(F, self.cfg, self.device)
        return g

    def _resolve(self, s: Sample) -> tuple[int, int] | None:
        loc = self.index.get(s.key)
        if loc is not None:
            return loc
        if len(self.index) >= self.cfg.streams.max_streams:
            return None
        F = len(s.fields)
        slot = self._group(F).add(s.key, s.fields)
        self.index[s.key] = (F, slot)
        self.created.append(s.key)
        return F, slot

    def remove_stream(self, key: StreamKey) -> bool:
        loc = self.index.pop(key, None)
        if loc is None:
            return False
        self.groups[loc[0]].remove(loc[1])
        return True

    @property
    def n_streams(self) -> int:
        return len(self.index)

    # -- scoring ---------------------------------------------------------------
    def process(self, samples: list[Sample]) -> TickOutput:
        """Score ``samples`` in arrival order (a stream's samples in one call are applied in turn)."""
        n = len(samples)
        out = TickOutput(np.zeros(n), np.full(n, np.nan), np.full(n, np.nan), np.zeros(n, bool),
                         np.zeros(n, bool), [None] * n, np.zeros(n, np.int8))
        # bucket by (group, round): round r holds each stream's r-th sample of this call
        buckets: dict[tuple[int, int], list[int]] = {}
        seen: dict[tuple[int, int], int] = {}
        locs: list[tuple[int, int] | None] = [None] * n
        vals: list[tuple[float, ...] | None] = [None] * n
        index = self.index
        for i, s in enumerate(samples):
            v = s.values  # plain-Python checks: far cheaper per sample than numpy calls
            if not v or all(x != x for x in v):
                out.rejected[i] = "no_values"  # checked before the key: a rejected sample creates no stream
                continue
            if any(x == _INF or x == -_INF for x in v):
                out.rejected[i] = "non_finite"
                continue
            loc = index.get(s.key) or self._resolve(s)
            if loc is None:
                out.rejected[i] = "max_streams"
                continue
            want = self.groups[loc[0]].fields[loc[1]]
            if s.fields != want:
                if len(s.fields) != len(want) or set(s.fields) != set(want):
                    out.rejected[i] = "bad_fields"
                    continue
                pos = {f: j for j, f in enumerate(s.fields)}
                v = tuple(v[pos[f]] for f in want)
            r = seen.get(loc, 0)
            seen[loc] = r + 1
            buckets.setdefault((loc[0], r), []).append(i)
            locs[i], vals[i] = loc, v
        for (F, _r), idx in sorted(buckets.items(), key=lambda kv: kv[0][1]):
            self._round(self.groups[F], np.array(idx), np.array([locs[i][1] for i in idx]),  # type: ignore[index]
                        np.array([samples[i].ts for i in idx], dtype=np.float64),
                        np.array([vals[i] for i in idx], dtype=np.float64).reshape(len(idx), F), samples, out)
        for reason in out.rejected:
            if reason is not None:
                self.rejected[reason] += 1
        return out

    def _round(self, g: Group, idx: np.ndarray, slots: np.ndarray, ts: np.ndarray, v: np.ndarray,
               samples: list[Sample], out: TickOutput) -> None:
        a = g.a
        last = a["last_ts"][slots]
        bad = ts <= last
        for j in np.flatnonzero(bad):
            out.rejected[idx[j]] = "duplicate" if ts[j] == last[j] else "out_of_order"
        keep = ~bad
        idx, slots, ts, v = idx[keep], slots[keep], ts[keep], v[keep]
        if len(slots) == 0:
            return
        order = np.argsort(slots, kind="stable")  # sorted slots let the bank use views when it can
        idx, slots, ts, v = idx[order], slots[order], ts[order], v[order]
        # gaps reset the hidden state; the stream re-warms before it may alert again
        dt = ts - a["last_ts"][slots]
        iv = a["interval"][slots]
        gap = np.isfinite(dt) & (iv > 0) & (dt > self.cfg.streams.max_gap_intervals * iv)
        a["interval"][slots] = np.where(np.isfinite(dt) & ~gap, np.where(iv > 0, 0.9 * iv + 0.1 * dt, dt), iv)
        a["last_ts"][slots] = ts
        ready = a["ready"][slots]
        gs = slots[gap & ready]
        if len(gs):
            g.bank.reset_state(gs)
            a["rewarm"][gs] = self.cfg.streams.rewarm_samples
        # history
        pos = a["hist_n"][slots] % g.cap
        a["hist_ts"][slots, pos] = ts
        a["hist_v"][slots, pos] = v
        a["hist_flag"][slots, pos] = False
        a["hist_n"][slots] += 1
        a["since_train"][slots] += 1

        score = np.zeros(len(slots))
        err = np.full(len(slots), np.nan)
        thr = np.full(len(slots), np.nan)
        r = np.flatnonzero(ready)
        if len(r):
            rs = slots[r]
            alerting = np.isin(g.alerts.state(rs), (PENDING, FIRING))
            fe_t, e_t = g.bank.step(rs, v[r], alerting)
            e = e_t.numpy().astype(np.float64)
            fe = fe_t.numpy()
            warming = a["rewarm"][rs] > 0
            p, t = g.thr.update(rs, e, learn=~warming & ~alerting)
            sc = np.where(warming, 0.0, score_from_p(p, self.cfg.detect.score_decades))
            a["rewarm"][rs] = np.maximum(a["rewarm"][rs] - 1, 0)
            score[r], err[r], thr[r] = sc, e, t
            tot = fe.sum(1, keepdims=True)
            a["share"][rs] = np.where(tot > 0, fe / np.where(tot > 0, tot, 1), 0)
            ew = a["err_ewma"][rs]
            a["err_ewma"][rs] = np.where(np.isnan(ew), e, 0.995 * ew + 0.005 * np.where(alerting, ew, e))
        # A flat line is easy to reconstruct, so the error cannot flag a stuck sensor: a field that
        # repeats the same value for longer than twice its longest run in training (and at least
        # STUCK_MIN samples) scores 1 and is named as the field that drove the alert.
        nan_v = np.isnan(v)
        same = (v == a["last_v"][slots]) & ~nan_v
        run = np.where(same, a["run"][slots] + 1, np.where(nan_v, a["run"][slots], 1))
        a["run"][slots] = run
        a["last_v"][slots] = np.where(nan_v, a["last_v"][slots], v)
        if len(r):
            stuck_f = run[r] >= np.maximum(STUCK_MIN, 2 * a["max_run"][slots[r]])
            stuck = stuck_f.any(1) & (a["rewarm"][slots[r]] == 0)
            if stuck.any():
                ri = r[stuck]
                score[ri] = 1.0
                sf = stuck_f[stuck].astype(np.float32)
                a["share"][slots[ri]] = sf / sf.sum(1, keepdims=True)
        a["score"][slots], a["error"][slots], a["threshold"][slots] = score, err, thr
        transitions = g.alerts.advance(slots, ts, score)
        st = g.alerts.state(slots)
        alerting_now = np.isin(st, (PENDING, FIRING))
        a["hist_flag"][slots, pos] = alerting_now
        self._relearn(g, slots, ts, st)
        cpos = (a["hist_n"][slots] - 1) % g.chart
        a["ch_score"][slots, cpos] = score
        a["ch_thr"][slots, cpos] = thr
        a["ch_err"][slots, cpos] = err
        a["ch_state"][slots, cpos] = st
        out.score[idx], out.error[idx], out.threshold[idx] = score, err, thr
        out.firing[idx] = st == FIRING
        out.state[idx] = st
        out.ready[idx] = ready
        if transitions:
            where = {int(s): j for j, s in enumerate(slots)}
            for tr in transitions:
                out.events.append(self._event(g, tr, where[tr.slot], score, err, thr))

    def _relearn(self, g: Group, slots: np.ndarray, ts: np.ndarray, st: np.ndarray) -> None:
        """A new normal is learned, not alerted on forever: an alert firing for ``alerts.relearn_after``
        (and at least ``RELEARN_TICKS`` of the stream's ticks, so there is post-shift data to learn)
        marks its samples as normal operation and asks for a retrain of that stream; the retrained
        model and threshold take the shifted level as normal and the alert resolves."""
        after = self.cfg.alerts.relearn_after
        if after <= 0:
            return
        a = g.a
        since = g.alerts.a["starts_at"][slots]
        wait = np.maximum(after, RELEARN_TICKS * a["interval"][slots])
        # at most once per `wait`: a stream still firing after its relearn retrain waits again
        long = (st == FIRING) & ~a["relearn"][slots] & (ts - since >= wait) & ~(ts - a["trained_at"][slots] < wait)
        if long.any():
            ls = slots[long]
            a["relearn"][ls] = True
            a["hist_flag"][ls] = False

    def _event(self, g: Group, tr: Transition, j: int, score: np.ndarray, err: np.ndarray, thr: np.ndarray
               ) -> AlertEvent:
        key = g.keys[tr.slot]
        assert key is not None
        share = g.a["share"][tr.slot]
        names = g.fields[tr.slot]
        top = tuple(sorted(((names[i], round(float(share[i]), 4)) for i in range(len(names))),
                           key=lambda kv: -kv[1]))
        # severity is a label, so it is part of the alert's identity: fixed when the alert opens and kept
        # for its re-opens and its resolve (else Alertmanager sees the resolve as another alert)
        if tr.status == "firing" and tr.starts_at == tr.at:
            g.a["critical"][tr.slot] = score[j] >= max(0.9, self.cfg.alerts.enter)
        sev = "critical" if g.a["critical"][tr.slot] else self.cfg.alerts.severity
        return AlertEvent(key=key, status=tr.status, starts_at=tr.starts_at,  # type: ignore[arg-type]
                          ends_at=tr.at if tr.status == "resolved" else None, at=tr.at,
                          score=float(score[j]), threshold=float(thr[j]) if np.isfinite(thr[j]) else math.inf,
                          error=float(err[j]) if np.isfinite(err[j]) else 0.0, severity=sev, top_fields=top)

    # -- history from a source -------------------------------------------------
    def load_history(self, samples: Iterable[Sample], create: bool = True) -> int:
        """Merge a source's historical samples into warming streams' buffers, without scoring them.

        Warm-up from a source's history query: at a fresh start for every stream (``create``
        adds the streams it has not seen), and for a stream first seen live, whose history up
        to its first live sample goes in front of what it holds — either way it trains at once
        instead of waiting for ``min_history`` live samples. Per stream, timestamps it already
        holds are skipped and the newest ``history_size`` samples are kept, in time order.
        Streams that are ready or training are left alone. Returns the samples taken.
        """
        by_key: dict[StreamKey, list[Sample]] = {}
        for smp in samples:
            by_key.setdefault(smp.key, []).append(smp)
        taken = 0
        for key, ss in by_key.items():
            loc = self.index.get(key) or (self._resolve(ss[0]) if create else None)
            if loc is None:
                continue
            g, slot = self.groups[loc[0]], loc[1]
            a = g.a
            if a["ready"][slot] or a["training"][slot]:
                continue
            n = int(min(a["hist_n"][slot], g.cap))
            if n:
                h_ts, h_v, h_fl = g.history(np.array([slot]), last=n)
                ts_old, v_old, fl_old = h_ts[0], h_v[0], h_fl[0]
            else:
                ts_old, v_old, fl_old = np.zeros(0), np.zeros((0, g.F), np.float32), np.zeros(0, bool)
            held = set(ts_old.tolist())
            new: dict[float, tuple[float, ...]] = {}
            for smp in ss:
                v = smp.values
                if (smp.ts not in held and len(v) == g.F and any(x == x for x in v)
                        and not any(x == _INF or x == -_INF for x in v)):
                    new[smp.ts] = v
            if not new:
                continue
            t_new = np.fromiter(new, dtype=np.float64, count=len(new))
            v_new = np.array(list(new.values()), dtype=np.float32).reshape(-1, g.F)
            ts = np.concatenate((t_new, ts_old))
            order = np.argsort(ts, kind="stable")[-g.cap :]
            vals = np.concatenate((v_new, v_old))[order]
            fl = np.concatenate((np.zeros(len(t_new), bool), fl_old))[order]
            ts = ts[order]
            L = len(ts)
            a["hist_ts"][slot, :L], a["hist_v"][slot, :L], a["hist_flag"][slot, :L] = ts, vals, fl
            a["hist_n"][slot] = L
            a["since_train"][slot] = L
            for k in ("ch_score", "ch_thr", "ch_err"):
                a[k][slot] = np.nan
            if L > 1:
                a["interval"][slot] = float(np.median(np.diff(ts)))
            a["last_ts"][slot] = max(float(a["last_ts"][slot]), float(ts[-1]))
            taken += len(t_new)
        return taken

    # -- training ----------------------------------------------------------------
    def due_training(self, now: float, *, clocks: Mapping[StreamKey, float] | None = None,
                     force: Collection[StreamKey] = ()) -> list[TrainJob]:
        """Jobs for streams that reached ``min_history`` (first training) or are due a retrain.

        ``clocks`` (replay of files that keep their own time): consider only these streams,
        each at its own time instead of ``now``. ``force``: streams that first-train now on
        whatever history they hold (at least 16 samples), whatever ``min_history`` and
        ``min_history_span`` say (replay's ``--history``/``--train-rows``).
        """
        t = self.cfg.train
        jobs: list[TrainJob] = []
        for F, g in self.groups.items():
            a = g.a
            C = g.capacity
            base = a["alive"][:C] & ~a["training"][:C]
            nowv = np.full(C, float(now))
            if clocks is not None:
                pick = np.zeros(C, bool)
                for key, at in clocks.items():
                    loc = self.index.get(key)
                    if loc is not None and loc[0] == F:
                        pick[loc[1]], nowv[loc[1]] = True, at
                base &= pick
            forced = np.zeros(C, bool)
            for key in force:
                loc = self.index.get(key)
                if loc is not None and loc[0] == F:
                    forced[loc[1]] = True
            # A first model also needs min_history_span of time (a daily cycle by default): a model
            # trained on a few hours cannot know the rest of the day and alarms on it. A full
            # history buffer is enough when the buffer spans less than that.
            n = a["hist_n"][:C]
            oldest = a["hist_ts"][np.arange(C), np.where(n >= g.cap, n % g.cap, 0)]
            span_ok = (n >= g.cap) | (a["last_ts"][:C] - oldest >= t.min_history_span)
            first = base & ~a["ready"][:C] & (((n >= t.min_history) & span_ok) | (forced & (n >= 16)))
            retrain = np.zeros(C, bool)
            if t.retrain_interval > 0:
                # and only once the stream has min_history new samples to learn from
                retrain = base & a["ready"][:C] & (nowv - a["trained_at"][:C] >= t.retrain_interval) & (
                    a["since_train"][:C] >= t.min_history)
            if t.drift_retrain:
                # error level well above what the model showed on held-back data, for long enough,
                # and not more often than a quarter of the retrain interval
                min_gap = t.retrain_interval / 4 if t.retrain_interval > 0 else 3600.0
                drift = base & a["ready"][:C] & (a["err_ewma"][:C] > 3.0 * a["calib_err"][:C]) & (
                    a["since_train"][:C] >= min(g.cap, t.min_history)) & (nowv - a["trained_at"][:C] >= min_gap)
                retrain |= drift
            retrain |= base & a["ready"][:C] & a["relearn"][:C]
            for mask in (first, retrain):
                slots = np.flatnonzero(mask)
                for i in range(0, len(slots), t.batch_streams):
                    jobs.append(self._job(F, g, slots[i : i + t.batch_streams]))
        return jobs

    def _job(self, F: int, g: Group, slots: np.ndarray) -> TrainJob:
        a = g.a
        a["training"][slots] = True
        # only as much history as the longest stream of the job has: no all-padding columns
        _ts, v, flags = g.history(slots, last=int(min(g.cap, a["hist_n"][slots].max())))
        has = a["ready"][slots] & ~a["relearn"][slots]  # a relearn is accepted: no champion to beat
        champion = None
        if has.any():
            p = g.bank.params(slots)
            champion = {k: t.cpu().numpy() for k, t in p.items()}
        keys = [g.keys[s] for s in slots]
        return TrainJob(
            dims=g.bank.dims, seeds=[stream_seed(k, self.cfg.train.seed) for k in keys if k is not None],
            values=v, loss_mask=~flags & ~np.isnan(v).all(-1), champion=champion, has_champion=has,
            tag={"F": F, "slots": slots.tolist(), "keys": [str(k) for k in keys],
                 "hist_n": a["hist_n"][slots].tolist()},
        )

    def apply_training(self, job: TrainJob, res: TrainResult, now: float) -> dict[str, int]:
        """Swap in accepted weights, re-warm their state and recalibrate thresholds. Returns counts."""
        tag = job.tag
        assert isinstance(tag, dict)
        g = self.groups[tag["F"]]
        slots = np.asarray(tag["slots"], dtype=np.int64)
        same = np.array([g.keys[s] is not None and str(g.keys[s]) == k for s, k in zip(slots, tag["keys"], strict=True)])
        g.a["training"][slots] = False
        accepted = res.accepted & same
        rejected = ~res.accepted & same
        g.a["trained_at"][slots[same]] = now
        g.a["since_train"][slots[same]] = 0
        g.a["drift"][slots[same]] = False
        g.a["relearn"][slots[same]] = False
        sl = slots[accepted]
        counts = {"success": int(accepted.sum()), "rejected": int(rejected.sum())}
        if len(sl) == 0:
            return counts
        rows = np.flatnonzero(accepted)
        g.bank.load(sl, {k: torch.from_numpy(res.params[k][rows]) for k in ("W", "b", "D", "d")},
                    torch.from_numpy(res.mean[rows]), torch.from_numpy(res.std[rows]))
        # Re-warm: the new weights take the state they reach over the stream's history (the trainer
        # replayed the job's history through them), then only the samples that arrived while the job
        # ran are replayed here, so the swap neither stalls scoring nor causes an alert burst. The
        # threshold is recalibrated on the errors of that whole replay.
        new = g.a["hist_n"][sl] - np.asarray(tag["hist_n"], dtype=np.int64)[rows]
        if res.state is not None and res.errors is not None and int(new.max()) <= g.cap:
            g.bank.set_state(sl, {k: torch.from_numpy(v[rows]) for k, v in res.state.items()})
            calib = calibration_errors(res.errors[rows], job.loss_mask[rows], self.settings.val_fraction)
            m = int(new.max())
            if m > 0:
                _ts, vn, fl = g.history(sl, last=m)
                older = np.arange(m)[None, :] < (m - new)[:, None]  # before the job's snapshot: done
                vn = np.where(older[..., None], np.nan, vn)
                _fe, en = g.bank.run_sequence(sl, vn, fl)
                ok = ~np.isnan(vn).all(-1) & ~fl
                calib = [np.concatenate((c, en.numpy()[i][ok[i]])) for i, c in enumerate(calib)]
            g.a["max_run"][sl] = longest_runs(job.values[rows])
        else:  # no state from the trainer, or the history moved on past the job: replay all of it here
            g.bank.reset_state(sl)
            _ts, v, flags = g.history(sl)
            err = g.bank.run_sequence(sl, v, flags)[1].numpy()
            calib = calibration_errors(err, ~np.isnan(v).all(-1) & ~flags)
            g.a["max_run"][sl] = longest_runs(v)
        g.thr.calibrate(sl, calib)
        self._alert_levels(g, sl)
        # reference error level for drift: the larger of the in-sample error and the held-back loss
        insample = np.array([float(np.mean(c)) if len(c) else np.nan for c in calib])
        g.a["calib_err"][sl] = np.fmax(insample, res.val_loss[rows])
        g.a["err_ewma"][sl] = g.a["calib_err"][sl]
        g.a["ready"][sl] = True
        g.a["rewarm"][sl] = 0
        self.model_version += 1
        g.a["version"][sl] = self.model_version
        return counts

    def _alert_levels(self, g: Group, slots: np.ndarray) -> None:
        """Per-stream enter level from ``alerts.false_alerts_per_day`` and the stream's cadence."""
        budget = self.cfg.alerts.false_alerts_per_day
        if budget is None:
            return
        iv = g.a["interval"][slots]
        p = np.clip(budget * np.where(iv > 0, iv, 60.0) / 86400.0, 1e-12, 0.5)
        # The budget only ever raises the level above `enter`: on slow series it would ask for
        # tail probabilities near the fitted tail's base, where in-sample errors flatter the
        # fit most (measured: hourly public series, 13 false alarms instead of 2).
        enter = np.clip(-np.log10(p) / self.cfg.detect.score_decades, self.cfg.alerts.enter, 0.95)
        g.alerts.set_levels(slots, enter)

    # -- views: the engine's read API (nobody outside the engine touches Group.a) -----------
    def iter_streams(self) -> Iterator[tuple[Group, int, StreamKey]]:
        for g in self.groups.values():
            for slot in np.flatnonzero(g.a["alive"][: g.capacity]):
                key = g.keys[slot]
                if key is not None:
                    yield g, int(slot), key

    def _view(self, g: Group, slot: int, key: StreamKey) -> StreamView:
        a, al = g.a, g.alerts.a
        return StreamView(key, g.fields[slot], bool(a["ready"][slot]), int(al["state"][slot]),
                          float(a["score"][slot]), float(a["error"][slot]), float(a["threshold"][slot]),
                          int(a["version"][slot]), float(a["last_ts"][slot]), int(al["fired"][slot]))

    def stream_views(self) -> Iterator[StreamView]:
        """Every stream as of its last sample."""
        for g, slot, key in self.iter_streams():
            yield self._view(g, slot, key)

    def stream_view(self, key: StreamKey) -> StreamView | None:
        loc = self.index.get(key)
        return None if loc is None else self._view(self.groups[loc[0]], loc[1], key)

    def chart_series(self, key: StreamKey) -> ChartSeries | None:
        """The stream's last ``Group.chart`` points: values from its history, verdicts from the chart rings."""
        loc = self.index.get(key)
        if loc is None:
            return None
        g, slot = self.groups[loc[0]], loc[1]
        total = int(g.a["hist_n"][slot])
        n = min(total, g.chart)
        ts, v, _fl = g.history(np.array([slot]), last=n)
        cp = (total - n + np.arange(n)) % g.chart
        return ChartSeries(g.fields[slot], ts[0].tolist(), v[0].tolist(), g.a["ch_score"][slot, cp].tolist(),
                           g.a["ch_thr"][slot, cp].tolist(), g.a["ch_err"][slot, cp].tolist(),
                           g.a["ch_state"][slot, cp].tolist())

    def state_counts(self) -> dict[str, int]:
        counts = {"warming": 0, "ready": 0, "ok": 0, "pending": 0, "firing": 0}
        for g in self.groups.values():
            C = g.capacity
            alive = g.a["alive"][:C]
            ready = g.a["ready"][:C] & alive
            st = g.alerts.a["state"][:C]
            counts["warming"] += int((alive & ~ready).sum())
            counts["ready"] += int(ready.sum())
            counts["pending"] += int((ready & (st == PENDING)).sum())
            counts["firing"] += int((ready & (st == FIRING)).sum())
        counts["ok"] = counts["ready"] - counts["pending"] - counts["firing"]
        return counts

    def take_created(self) -> list[StreamKey]:
        """The streams added since the last call (live samples or history), oldest first."""
        out, self.created = self.created, []
        return out

    def set_trained_at(self, t: float) -> None:
        """Mark every stream as trained at ``t`` (``-inf``: every ready stream is due a retrain now)."""
        for g in self.groups.values():
            g.a["trained_at"][:] = t

    def release_job(self, job: TrainJob) -> None:
        """A job that will not come back (its training failed): its streams may be scheduled again."""
        tag = job.tag
        assert isinstance(tag, dict)
        self.groups[tag["F"]].a["training"][np.asarray(tag["slots"], dtype=np.int64)] = False

    def reconfigure(self, cfg: SentinelConfig) -> None:
        """Apply a reloaded config's live sections: train settings, alert rules, threshold risk.

        The caller (:mod:`sentinel.runtime.reload`) decides which sections may change live and
        passes a config whose other sections are the running ones.
        """
        self.cfg = cfg
        self.settings = train_settings(cfg)
        rules = AlertRules.from_config(cfg.alerts)
        for g in self.groups.values():
            g.alerts.rules = rules
            g.thr.risk = cfg.detect.threshold.risk
            ready = np.flatnonzero(g.a["alive"][: g.capacity] & g.a["ready"][: g.capacity])
            if cfg.alerts.false_alerts_per_day is None:  # back to the rules' own levels
                g.alerts.set_levels(ready, np.full(len(ready), np.nan))
            else:  # per-stream levels follow the new budget and enter level
                self._alert_levels(g, ready)

    # -- checkpoints ---------------------------------------------------------------
    def snapshot(self) -> tuple[dict, dict[str, torch.Tensor]]:
        """Everything needed to resume: ``(meta as plain data, tensors)``."""
        meta: dict = {"model_version": self.model_version, "rejected": dict(self.rejected), "groups": {},
                      "dims": {}}
        tensors: dict[str, torch.Tensor] = {}
        for F, g in self.groups.items():
            C = g.bank.capacity
            g._ensure(C)
            meta["groups"][str(F)] = {
                "capacity": C, "free": list(g.bank._free),
                "keys": [str(k) if k is not None else None for k in g.keys[:C]],
                "fields": [list(f) for f in g.fields[:C]],
            }
            meta["dims"][str(F)] = [g.bank.dims.fields, g.bank.dims.hidden, g.bank.dims.window, g.bank.dims.cell]
            for k, t in g.bank.t.items():
                tensors[f"g{F}.bank.{k}"] = t[:C]
            for prefix, arrays in (("a", g.a), ("thr", g.thr.snapshot()), ("alert", g.alerts.snapshot())):
                for k, arr in arrays.items():
                    tensors[f"g{F}.{prefix}.{k}"] = torch.from_numpy(np.ascontiguousarray(arr[:C]))
        return meta, tensors

    def restore(self, meta: dict, tensors: dict[str, torch.Tensor]) -> None:
        """Load a snapshot into this (fresh) engine. Raises ValueError when it does not fit the config."""
        self.model_version = int(meta.get("model_version", 0))
        for r, v in meta.get("rejected", {}).items():
            if r in self.rejected:
                self.rejected[r] = int(v)
        m = self.cfg.model
        for Fs, gm in meta["groups"].items():
            F = int(Fs)
            dims = meta["dims"][Fs]
            want = [F, m.hidden, m.window, m.cell]
            if list(dims) != want:
                raise ValueError(f"checkpoint model dims (fields, hidden, window, cell) {dims} differ from the config's {want}")
            g = self._group(F)
            C = int(gm["capacity"])
            if g.bank.capacity < C:
                g.bank._grow(C)
            g.bank._free = [int(s) for s in gm["free"]]
            g._ensure(C)
            hist = tensors[f"g{F}.a.hist_ts"]
            if hist.shape[1] != g.cap:
                raise ValueError(f"checkpoint history_size {hist.shape[1]} differs from the config's {g.cap}")
            for k in g.bank.t:
                g.bank.t[k][:C] = tensors[f"g{F}.bank.{k}"].to(g.bank.device)
            for k in g.a:
                g.a[k][:C] = tensors[f"g{F}.a.{k}"].numpy()
            g.thr.restore({k[len(f"g{F}.thr."):]: v.numpy() for k, v in tensors.items() if k.startswith(f"g{F}.thr.")})
            g.alerts.restore({k[len(f"g{F}.alert."):]: v.numpy() for k, v in tensors.items()
                              if k.startswith(f"g{F}.alert.")})
            g.a["training"][:C] = False  # jobs in flight at the checkpoint are simply re-issued
            for slot, (ks, fs) in enumerate(zip(gm["keys"], gm["fields"], strict=True)):
                if ks is None:
                    continue
                key = StreamKey.parse(ks)
                g.keys[slot] = key
                g.fields[slot] = tuple(fs)
                self.index[key] = (F, slot)
