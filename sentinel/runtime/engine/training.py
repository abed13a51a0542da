"""Training hand-off: which streams are due (:func:`due_training`), the job of a batch of them
(:func:`make_job`), and swapping accepted weights in with a recalibrated threshold
(:func:`apply_training`). No training happens here: jobs go out, results come back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING

import numpy as np
import torch

from ...config import SentinelConfig
from ...detect.level import (
    CALIBRATION_INFLATE,
    average_gain,
    average_run,
    level_statistic,
    sustained_statistic,
)
from ...model.cells import normalise_run
from ...model.train import TrainJob, TrainResult, TrainSettings
from ...types import StreamKey
from . import steps
from .group import Group

if TYPE_CHECKING:
    from .core import Engine

BURN_IN = 16  # ticks after a state reset whose errors are not used for calibration
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


def due_training(engine: Engine, now: float, *, clocks: Mapping[StreamKey, float] | None = None,
                 force: Collection[StreamKey] = ()) -> list[TrainJob]:
    """Jobs for streams that reached ``min_history`` (first training) or are due a retrain.

    ``clocks`` (replay of files that keep their own time): consider only these streams,
    each at its own time instead of ``now``. ``force``: streams that first-train now on
    whatever history they hold (at least 16 samples), whatever ``min_history`` and
    ``min_history_span`` say (replay's ``--history``/``--train-rows``).
    """
    t = engine.cfg.train
    jobs: list[TrainJob] = []
    for F, g in engine.groups.items():
        a = g.a
        C = g.capacity
        base = a["alive"][:C] & ~a["training"][:C]
        nowv = np.full(C, float(now))
        if clocks is not None:
            pick = np.zeros(C, bool)
            for key, at in clocks.items():
                loc = engine.index.get(key)
                if loc is not None and loc[0] == F:
                    pick[loc[1]], nowv[loc[1]] = True, at
            base &= pick
        forced = np.zeros(C, bool)
        for key in force:
            loc = engine.index.get(key)
            if loc is not None and loc[0] == F:
                forced[loc[1]] = True
        # A first model also needs min_history_span of time (a daily cycle by default): a model
        # trained on a few hours cannot know the rest of the day and alarms on it. A full
        # history buffer is enough when the buffer spans less than that.
        n = a["hist_n"][:C]
        oldest = g.oldest(C)
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
                jobs.append(make_job(engine.cfg, F, g, slots[i : i + t.batch_streams]))
    return jobs


def make_job(cfg: SentinelConfig, F: int, g: Group, slots: np.ndarray) -> TrainJob:
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
        dims=g.bank.dims, seeds=[stream_seed(k, cfg.train.seed) for k in keys if k is not None],
        values=v, loss_mask=~flags & ~np.isnan(v).all(-1), champion=champion, has_champion=has,
        tag={"F": F, "slots": slots.tolist(), "keys": [str(k) for k in keys],
             "hist_n": a["hist_n"][slots].tolist()},
    )


def apply_training(engine: Engine, job: TrainJob, res: TrainResult, now: float,
                   clocks: Mapping[StreamKey, float] | None = None) -> dict[str, int]:
    """Swap in accepted weights, re-warm their state and recalibrate thresholds. Returns counts."""
    tag = job.tag
    assert isinstance(tag, dict)
    g = engine.groups[tag["F"]]
    slots = np.asarray(tag["slots"], dtype=np.int64)
    same = np.array([g.keys[s] is not None and str(g.keys[s]) == k for s, k in zip(slots, tag["keys"], strict=True)])
    g.a["training"][slots] = False
    accepted = res.accepted & same
    rejected = ~res.accepted & same
    # each stream's own clock where given (a fleet replay), else ``now``
    keys = [g.keys[sl] for sl in slots]
    at = np.array([now if clocks is None or k is None else clocks.get(k, now) for k in keys], dtype=np.float64)
    g.a["trained_at"][slots[same]] = at[same]
    g.a["since_train"][slots[same]] = 0
    g.a["drift"][slots[same]] = False
    g.a["relearn"][slots[same]] = False
    sl = slots[accepted]
    counts = {"success": int(accepted.sum()), "rejected": int(rejected.sum())}
    if len(sl) == 0:
        return counts
    rows = np.flatnonzero(accepted)
    g.bank.load(sl, {k: torch.from_numpy(res.params[k][rows]) for k in ("W", "b", "D", "d")},
                torch.from_numpy(res.mean[rows]), torch.from_numpy(res.std[rows]),
                None if res.cond is None else torch.from_numpy(res.cond[rows]))
    # Re-warm: the new weights take the state they reach over the stream's history (the trainer
    # replayed the job's history through them), then only the samples that arrived while the job
    # ran are replayed here, so the swap neither stalls scoring nor causes an alert burst. The
    # threshold is recalibrated on the errors of that whole replay.
    new = g.a["hist_n"][sl] - np.asarray(tag["hist_n"], dtype=np.int64)[rows]
    if res.state is not None and res.errors is not None and int(new.max()) <= g.cap:
        g.bank.set_state(sl, {k: torch.from_numpy(v[rows]) for k, v in res.state.items()})
        calib = calibration_errors(res.errors[rows], job.loss_mask[rows], engine.settings.val_fraction)
        m = int(new.max())
        if m > 0:
            _ts, vn, fl = g.history(sl, last=m)
            older = np.arange(m)[None, :] < (m - new)[:, None]  # before the job's snapshot: done
            vn = np.where(older[..., None], np.nan, vn)
            _fe, en = g.bank.run_sequence(sl, vn, fl)
            ok = ~np.isnan(vn).all(-1) & ~fl
            calib = [np.concatenate((c, en.numpy()[i][ok[i]])) for i, c in enumerate(calib)]
        g.a["max_run"][sl] = longest_runs(np.where(job.loss_mask[rows][..., None], job.values[rows], np.nan))
        hist = None
    else:  # no state from the trainer, or the history moved on past the job: replay all of it here
        g.bank.reset_state(sl)
        _ts, v, flags = g.history(sl)
        err = g.bank.run_sequence(sl, v, flags)[1].numpy()
        calib = calibration_errors(err, ~np.isnan(v).all(-1) & ~flags)
        g.a["max_run"][sl] = longest_runs(np.where(flags[..., None], np.nan, v))
        hist = (v, flags)
    g.thr.calibrate(sl, calib)
    calibrate_level(g, sl, hist)
    g.a["threshold"][sl] = g.thr.threshold(sl)  # shown from the moment it is trained, not from its next tick
    alert_levels(engine.cfg, g, sl)
    # reference error level for drift: the larger of the in-sample error and the held-back loss
    insample = np.array([float(np.mean(c)) if len(c) else np.nan for c in calib])
    g.a["calib_err"][sl] = np.fmax(insample, res.val_loss[rows])
    g.a["err_ewma"][sl] = g.a["calib_err"][sl]
    g.a["ready"][sl] = True
    g.a["rewarm"][sl] = 0
    engine.model_version += 1
    g.a["version"][sl] = engine.model_version
    return counts


def calibrate_level(g: Group, sl: np.ndarray, hist: tuple[np.ndarray, np.ndarray] | None = None) -> None:
    """Fit the level statistic's own tail (:mod:`sentinel.detect.level`) to the stream's history as
    the new weights' normalisers see it (the moving baseline replayed over it, held where it
    alerted), scaled by ``CALIBRATION_INFLATE``; alerted and missing samples are left out, as for
    the error's tail. ``hist``: the ``(values, flags)`` of :meth:`Group.history` when already read."""
    if g.lthr is None:
        return
    v, flags = hist if hist is not None else g.history(sl)[1:]
    idx = torch.as_tensor(sl, dtype=torch.int64)
    mean, std = (g.bank.t[k][idx].float().cpu().numpy() for k in ("mean", "std"))
    lx = normalise_run(v, mean, std, g.bank.dims, hold=flags).x
    prec = steps.level_precision(g, sl)
    ok = ~np.isnan(v).all(-1) & ~flags
    stat = level_statistic(lx, None if prec is None else prec[:, None])[0]
    if g.level_alpha > 0:
        diff, fast, slow = average_run(lx, g.level_alpha, flags)
        gain = average_gain(diff, ok, g.level_alpha)
        g.a["lgain"][sl], g.a["lavg"][sl], g.a["lslow"][sl] = gain, fast, slow
        stat = np.maximum(stat, sustained_statistic(diff * gain[:, None])[0])
    g.lthr.calibrate(sl, [CALIBRATION_INFLATE * s[o] for s, o in zip(stat, ok, strict=True)])


def for_floor(ticks: int, within: float, interval: np.ndarray) -> np.ndarray:
    """Seconds a crossing must stay pending: ``ticks`` of each stream's cadence, or as many as fit in
    ``within`` (none for a stream slower than that, or of unknown cadence), less half a tick so
    jitter in the cadence does not cost one more.

    >>> for_floor(2, 60.0, np.array([1.0, 40.0, 300.0, 0.0])).tolist()
    [1.5, 20.0, 0.0, 0.0]
    """
    iv = np.where(interval > 0, interval, np.inf)
    n = np.minimum(ticks, np.floor(within / iv))
    return np.where(n >= 1, (n - 0.5) * np.where(np.isfinite(iv), iv, 0.0), 0.0)


def alert_levels(cfg: SentinelConfig, g: Group, slots: np.ndarray) -> None:
    """Per-stream enter level from ``alerts.false_alerts_per_day``, and the floors of
    ``alerts.resolve_for_ticks`` and ``alerts.for_ticks``, all from the stream's measured cadence."""
    iv = _floors(cfg, g, slots)
    budget = cfg.alerts.false_alerts_per_day
    if budget is None:
        return
    p = np.clip(budget * np.where(iv > 0, iv, 60.0) / 86400.0, 1e-12, 0.5)
    # The budget only ever raises the level above `enter`: on slow series it would ask for
    # tail probabilities near the fitted tail's base, where in-sample errors flatter the
    # fit most (measured: hourly public series, 13 false alarms instead of 2).
    enter = np.clip(-np.log10(p) / cfg.detect.score_decades, cfg.alerts.enter, 0.95)
    g.alerts.set_levels(slots, enter)


def tick_floors(engine: Engine) -> None:
    """Every trained stream's resolve and pending floors from ``alerts.resolve_for_ticks`` and
    ``alerts.for_ticks`` (a reload of ``alerts`` applies them to the running streams, whether or not
    ``alerts.false_alerts_per_day`` is set)."""
    for g in engine.groups.values():
        _floors(engine.cfg, g, np.flatnonzero(g.a["alive"][: g.capacity] & g.a["ready"][: g.capacity]))


def _floors(cfg: SentinelConfig, g: Group, slots: np.ndarray) -> np.ndarray:
    """Set ``slots``' resolve and pending floors from their cadence; returns that cadence."""
    a, iv = cfg.alerts, g.a["interval"][slots]
    g.alerts.set_resolve_floor(slots, a.resolve_for_ticks * np.where(iv > 0, iv, 0.0))
    g.alerts.set_for_floor(slots, for_floor(a.for_ticks, a.for_ticks_within, iv))
    return iv
