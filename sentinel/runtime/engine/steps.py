"""The round's named steps: validate -> gaps -> history -> expect -> level -> model -> score -> band -> stuck
-> alert -> record.

A round is one sample for each of some streams of one :class:`~.group.Group` (``slots``
unique). Each step is a function over the group and the round's arrays, called in that
order by :meth:`Engine._round <sentinel.runtime.engine.core.Engine._round>`; each can be
run alone on a group.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ...alerts.state import FIRING, PENDING, Transition
from ...detect.band import Band, expected_band, scale_of
from ...detect.level import advance_averages, combine, larger, level_statistic, sustained_statistic
from ...detect.thresholds import score_from_p
from ...types import AlertEvent
from .group import Group, band_offset

STUCK_MIN = 8  # identical values in a row before a field can count as stuck
RELEARN_TICKS = 512  # fewest ticks an alert must last before its level can be learned as normal

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
Index = np.ndarray | slice  # the round's slots, or the same slots as a slice when they are a contiguous range


def span(slots: np.ndarray, is_sorted: bool = False) -> Index:
    """``slots`` as a slice when they are a contiguous ascending range (the usual tick of a fleet
    created in order: numpy then reads and writes views instead of gathering), else ``slots``.
    ``is_sorted``: the caller knows they ascend strictly (:func:`validate`'s output)."""
    n = len(slots)
    if n == 0 or int(slots[-1]) - int(slots[0]) + 1 != n:
        return slots
    if not is_sorted and n > 1 and not bool((slots[1:] > slots[:-1]).all()):
        return slots
    return slice(int(slots[0]), int(slots[0]) + n)


def _alerting(st: np.ndarray) -> np.ndarray:
    """Which of the states ``st`` are pending or firing."""
    return (st == PENDING) | (st == FIRING)


def validate(g: Group, idx: np.ndarray, slots: np.ndarray, ts: np.ndarray, v: np.ndarray,
             rejected: list[str | None], fence: np.ndarray | None = None) -> Arrays:
    """Drop samples not newer than their stream's last (``rejected[idx]`` names why); the rest
    as ``(idx, slots, ts, v)`` in slot order (sorted slots let the bank use views when it can).

    ``fence`` (per slot, see :mod:`.fuzzy`): a dropped sample above its slot's fence is one a fuzzy
    checkpoint already holds, marked ``"replayed"`` (not a rejection); a slot's fence goes once it
    takes a sample."""
    last = g.a["last_ts"][slots]
    bad = ts <= last
    if bad.any():
        seen = np.zeros(len(ts), bool)
        if fence is not None:
            inside = slots < len(fence)
            seen[inside] = ts[inside] > fence[slots[inside]]
        for j in np.flatnonzero(bad):
            rejected[idx[j]] = "replayed" if seen[j] else "duplicate" if ts[j] == last[j] else "out_of_order"
        keep = ~bad
        idx, slots, ts, v = idx[keep], slots[keep], ts[keep], v[keep]
    if fence is not None:
        fence[slots[slots < len(fence)]] = np.inf
    if len(slots) < 2 or bool((slots[1:] > slots[:-1]).all()):  # already in slot order (the usual tick)
        return idx, slots, ts, v
    order = np.argsort(slots, kind="stable")
    return idx[order], slots[order], ts[order], v[order]


def gaps(g: Group, slots: np.ndarray, ts: np.ndarray, max_gap_intervals: float, rewarm_samples: int,
         ix: Index | None = None) -> np.ndarray:
    """Track each stream's cadence; a gap of more than ``max_gap_intervals`` intervals resets a ready
    stream's hidden state and it re-warms for ``rewarm_samples`` before it may alert again.
    Returns which of ``slots`` are ready (have a model). ``ix``: ``slots`` as :func:`span` gives them."""
    a = g.a
    ix = slots if ix is None else ix
    dt = ts - a["last_ts"][ix]
    iv = a["interval"][ix]
    fin = np.isfinite(dt)
    gap = fin & (iv > 0) & (dt > max_gap_intervals * iv)
    a["interval"][ix] = np.where(fin & ~gap, np.where(iv > 0, 0.9 * iv + 0.1 * dt, dt), iv)
    a["last_ts"][ix] = ts
    ready = a["ready"][ix].copy()
    gs = slots[gap & ready]
    if len(gs):
        g.bank.reset_state(gs)
        if g.level_alpha > 0:
            g.a["lavg"][gs] = g.a["lslow"][gs] = 0.0
        a["rewarm"][gs] = rewarm_samples
    return ready


def append_history(g: Group, slots: np.ndarray, ts: np.ndarray, v: np.ndarray, ix: Index | None = None
                   ) -> np.ndarray:
    """Write the samples into the history ring (not flagged yet); returns their ring positions."""
    pos = g.append(slots, ts, v)
    g.a["since_train"][slots if ix is None else ix] += 1
    return pos


def expect(g: Group, rs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Before the bank steps: each ready stream's one-step prediction of this sample (normalised)
    and the baseline and scale the sample is normalised with, ``[n, F]`` each."""
    t, bank = g.bank.t, g.bank
    idx = torch.as_tensor(rs, dtype=torch.int64, device=bank.device)
    pred, base, spread, std = (t[k][idx].cpu().numpy() for k in ("pred", "base", "spread", "std"))
    return pred.reshape(len(rs), g.F), base, scale_of(std, spread, bank.dims.baseline_alpha)


def band(g: Group, pre: tuple[np.ndarray, np.ndarray, np.ndarray], v: np.ndarray, fe: np.ndarray,
         thr: np.ndarray) -> Band:
    """The expected value and band of the ready rows (:func:`sentinel.detect.band.expected_band`)."""
    pred, base, scale = pre
    return expected_band(v, pred, base, scale, fe, thr, g.bank.prediction_weight)


def model(g: Group, rs: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One bank step of the ready streams ``rs``: ``(error, per-field error, alerting)``; an alerting
    stream's slow baseline holds."""
    alerting = _alerting(g.alerts.state(rs))
    fe_t, e_t = g.bank.step(rs, v, alerting)
    return e_t.numpy().astype(np.float64), fe_t.numpy(), alerting


def level(g: Group, rs: np.ndarray, v: np.ndarray, pre: tuple[np.ndarray, np.ndarray, np.ndarray],
          alerting: np.ndarray, ix: Index | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """The level statistic of the ready rows and its per-field shares (:mod:`sentinel.detect.level`):
    each sample against the baseline and scale the bank normalised it with (``pre`` from
    :func:`expect`) or, where larger, the sustained level (the fast moving average of those against
    the slow one, which holds while ``alerting``). None when the group has no level tail."""
    if g.lthr is None:
        return None
    _pred, base, scale = pre
    lx = (v - base) / scale
    stat, shares = level_statistic(lx, level_precision(g, rs))
    if g.level_alpha > 0:
        ix = rs if ix is None else ix  # (advance_averages returns new arrays: the views it reads stay as read)
        fast, slow = advance_averages(g.a["lavg"][ix], g.a["lslow"][ix], lx, g.level_alpha, alerting)
        g.a["lavg"][ix], g.a["lslow"][ix] = fast, slow
        stat, shares = larger(stat, shares, *sustained_statistic((fast - slow) * g.a["lgain"][ix]))
    return stat, shares


def level_precision(g: Group, slots: np.ndarray) -> np.ndarray | None:
    """The streams' precision matrices for the level statistic (None: each field alone)."""
    if not g.bank.dims.conditional:
        return None
    return g.bank.t["cond"][torch.as_tensor(slots, dtype=torch.int64)].float().numpy()


def score(g: Group, rs: np.ndarray, e: np.ndarray, fe: np.ndarray, alerting: np.ndarray, score_decades: float,
          lv: tuple[np.ndarray, np.ndarray] | None = None, ix: Index | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Thresholds: ``(score, threshold)`` of the ready streams ``rs`` from their errors ``e`` (and the
    level statistic ``lv`` on its own tail, :func:`level`); warming streams score 0 and count down,
    and neither they nor alerting ones teach the thresholds. Also the per-field shares (of the
    level statistic where its tail is the rarer) and the error level that drift retraining watches.
    ``ix``: ``rs`` as :func:`span` gives them."""
    a = g.a
    ix = rs if ix is None else ix
    rw = a["rewarm"][ix]
    warming = rw > 0
    learn = ~warming & ~alerting
    p, t = g.thr.update(rs, e, learn=learn)
    tot = fe.sum(1, keepdims=True)
    share = np.where(tot > 0, fe / np.where(tot > 0, tot, 1), 0)
    if lv is not None and g.lthr is not None:
        # read, never taught: held as fitted at training (learning its peaks would follow a glide as
        # the moving average does)
        pl = g.lthr.tail_probability(rs, lv[0])
        by_level = (pl < p) & (lv[0] > 0)
        share = np.where(by_level[:, None], lv[1] / np.where(by_level, lv[0], 1.0)[:, None], share)
        p = combine(p, pl)
    sc = np.where(warming, 0.0, score_from_p(p, score_decades))
    if (rw != 0).any():  # else every count is 0 already
        a["rewarm"][ix] = np.maximum(rw - 1, 0)
    a["share"][ix] = share
    ew = a["err_ewma"][ix]
    a["err_ewma"][ix] = np.where(np.isnan(ew), e, 0.995 * ew + 0.005 * np.where(alerting, ew, e))
    return sc, t


def stuck(g: Group, slots: np.ndarray, v: np.ndarray, r: np.ndarray, score: np.ndarray, ix: Index | None = None
          ) -> None:
    """A flat line is easy to reconstruct, so the error cannot flag a stuck sensor: a field that
    repeats the same value for longer than twice its longest run in training (and at least
    ``STUCK_MIN`` samples) scores 1 (``score`` is set in place) and is named as the field that
    drove the alert. Runs are counted for every stream; only the ready rows ``r`` are scored."""
    a = g.a
    ix = slots if ix is None else ix
    nan_v = np.isnan(v)
    last, prev = a["last_v"][ix], a["run"][ix]
    if nan_v.any():
        same = (v == last) & ~nan_v
        run = np.where(same, prev + 1, np.where(nan_v, prev, 1))
        a["last_v"][ix] = np.where(nan_v, last, v)
    else:
        run = np.where(v == last, prev + 1, 1)
        a["last_v"][ix] = v
    a["run"][ix] = run
    if len(r) and int(run.max()) >= STUCK_MIN:  # below STUCK_MIN no field can count as stuck
        stuck_f = run[r] >= np.maximum(STUCK_MIN, 2 * a["max_run"][slots[r]])
        hit = stuck_f.any(1) & (a["rewarm"][slots[r]] == 0)
        if hit.any():
            ri = r[hit]
            score[ri] = 1.0
            sf = stuck_f[hit].astype(np.float32)
            a["share"][slots[ri]] = sf / sf.sum(1, keepdims=True)


def alert(g: Group, slots: np.ndarray, ts: np.ndarray, pos: np.ndarray, score: np.ndarray, relearn_after: float
          ) -> tuple[list[Transition], np.ndarray]:
    """Advance the alert machine; flag the round's history entries of alerting streams (they are
    not trained on; :func:`append_history` wrote them unflagged) and mark long-firing ones for a
    relearn. Returns ``(transitions, state)``."""
    transitions = g.alerts.advance(slots, ts, score)
    st = g.alerts.state(slots)
    flag = _alerting(st)
    if flag.any():
        g.a["hist_flag"][slots[flag], pos[flag]] = True
    relearn(g, slots, ts, st, relearn_after)
    return transitions, st


def relearn(g: Group, slots: np.ndarray, ts: np.ndarray, st: np.ndarray, after: float) -> None:
    """A new normal is learned, not alerted on forever: an alert firing for ``alerts.relearn_after``
    (and at least ``RELEARN_TICKS`` of the stream's ticks, so there is post-shift data to learn)
    marks its samples as normal operation and asks for a retrain of that stream; the retrained
    model and threshold take the shifted level as normal and the alert resolves."""
    firing = st == FIRING
    if after <= 0 or not firing.any():
        return
    if not firing.all():
        slots, ts, st = slots[firing], ts[firing], st[firing]
    a = g.a
    since = g.alerts.a["starts_at"][slots]
    wait = np.maximum(after, RELEARN_TICKS * a["interval"][slots])
    # at most once per `wait`: a stream still firing after its relearn retrain waits again
    long = (st == FIRING) & ~a["relearn"][slots] & (ts - since >= wait) & ~(ts - a["trained_at"][slots] < wait)
    if long.any():
        ls = slots[long]
        a["relearn"][ls] = True
        a["shifted"][ls] = True  # its resolve says so (a retrain asked for by feedback does not)
        a["hist_flag"][ls] = False


def chart_pos(g: Group, ix: Index) -> np.ndarray | int:
    """The chart-ring position of the streams' newest sample: one int when they are all at the same
    one (streams that tick together), so the rings take a strided write instead of a gather."""
    cpos = (g.a["hist_n"][ix] - 1) % g.chart
    if len(cpos) and cpos[0] == cpos[-1] and bool((cpos == cpos[0]).all()):
        return int(cpos[0])
    return cpos


def record(g: Group, slots: np.ndarray, score: np.ndarray, err: np.ndarray, thr: np.ndarray, st: np.ndarray,
           ix: Index | None = None, cpos: np.ndarray | int | None = None) -> None:
    """Keep the round's verdicts as the streams' last, and in the status page's chart rings.
    ``ix``: ``slots`` as :func:`span` gives them; ``cpos``: :func:`chart_pos`."""
    a = g.a
    ix = slots if ix is None else ix
    a["score"][ix], a["error"][ix], a["threshold"][ix] = score, err, thr
    cpos = chart_pos(g, ix) if cpos is None else cpos
    if isinstance(cpos, int):  # one column of each ring (a strided view), written at ix
        a["ch_score"][:, cpos][ix] = score
        a["ch_thr"][:, cpos][ix] = band_offset(thr)
        a["ch_err"][:, cpos][ix] = band_offset(err)
        a["ch_state"][:, cpos][ix] = st
        return
    a["ch_score"][slots, cpos] = score
    a["ch_thr"][slots, cpos] = band_offset(thr)
    a["ch_err"][slots, cpos] = band_offset(err)
    a["ch_state"][slots, cpos] = st


def record_band(g: Group, slots: np.ndarray, r: np.ndarray, b: Band | None, ix: Index | None = None,
                cpos: np.ndarray | int | None = None) -> None:
    """Keep the round's expected bands (rows ``r`` of ``slots`` are the ready ones; the others
    have none) as the streams' last and in the chart rings. ``ix``, ``cpos``: as :func:`record`'s."""
    a = g.a
    ix = slots if ix is None else ix
    n = len(slots)
    if b is not None and len(r) == n:  # every stream ready (r is 0..n-1): the band as it is, as float64
        exp, lo, hi = (np.asarray(x, np.float64).reshape(n, g.F) for x in (b.expected, b.lower, b.upper))
    else:
        exp, lo, hi = (np.full((n, g.F), np.nan) for _ in range(3))
        if b is not None and len(r):
            exp[r], lo[r], hi[r] = b.expected, b.lower, b.upper
    a["exp"][ix], a["lo"][ix], a["hi"][ix] = exp, lo, hi
    cpos = chart_pos(g, ix) if cpos is None else cpos
    if isinstance(cpos, int):
        a["ch_exp"][:, cpos][ix] = exp
        a["ch_lo"][:, cpos][ix], a["ch_hi"][:, cpos][ix] = band_offset(exp - lo), band_offset(hi - exp)
        return
    a["ch_exp"][slots, cpos] = exp
    a["ch_lo"][slots, cpos], a["ch_hi"][slots, cpos] = band_offset(exp - lo), band_offset(hi - exp)


def event(g: Group, tr: Transition, score: float, err: float, thr: float, enter: float, severity: str
          ) -> AlertEvent:
    """The alert event of a transition, with the stream's field shares and its severity."""
    key = g.keys[tr.slot]
    assert key is not None
    share = g.a["share"][tr.slot]
    names = g.fields[tr.slot]
    top = tuple(sorted(((names[i], round(float(share[i]), 4)) for i in range(len(names))),
                       key=lambda kv: -kv[1]))
    # severity is a label, so it is part of the alert's identity: fixed when the alert opens and kept
    # for its re-opens and its resolve (else Alertmanager sees the resolve as another alert)
    if tr.status == "firing" and tr.starts_at == tr.at:
        g.a["critical"][tr.slot] = score >= max(0.9, enter)
    sev = "critical" if g.a["critical"][tr.slot] else severity
    a = g.a
    expected = tuple((names[i], float(a["last_v"][tr.slot, i]), float(a["exp"][tr.slot, i]),
                      float(a["lo"][tr.slot, i]), float(a["hi"][tr.slot, i])) for i in range(len(names)))
    note = ""
    if tr.status == "resolved" and g.a["shifted"][tr.slot]:
        note = (f"baseline shifted: the level held for {_span(tr.at - tr.starts_at)} was relearned as the new "
                "normal (feedback can mark it an anomaly)")
    if tr.status == "resolved":
        g.a["shifted"][tr.slot] = False
    return AlertEvent(key=key, status=tr.status, starts_at=tr.starts_at,  # type: ignore[arg-type]
                      ends_at=tr.at if tr.status == "resolved" else None, at=tr.at,
                      score=float(score), threshold=float(thr) if np.isfinite(thr) else math.inf,
                      error=float(err) if np.isfinite(err) else 0.0, severity=sev, top_fields=top, note=note,
                      expected=expected)


def _span(seconds: float) -> str:
    """``3h 20m``, ``45m``, ``30s``: a duration for a person."""
    s = max(0, round(seconds))
    h, m = divmod(s // 60, 60)
    return f"{h}h {m}m" if h else (f"{m}m" if m else f"{s}s")
