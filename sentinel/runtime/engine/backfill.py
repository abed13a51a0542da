"""History from a source merged into warming streams' rings (:meth:`Engine.load_history`).

Per stream, a Python pass picks the samples to take (timestamps the ring already holds, to its
millisecond, and unusable values are skipped); the sorting, the newest-``history_size`` cut and
the ring writes run over many streams at once (one :meth:`Group.set_histories` per chunk), so a
fresh start of a million streams is not a million small numpy calls.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from ...types import Sample, StreamKey

if TYPE_CHECKING:
    from .core import Engine
    from .group import Group

_INF = float("inf")
CHUNK = 4096  # streams written together


def load_history(engine: Engine, samples: Iterable[Sample], create: bool = True) -> int:
    by_key: dict[StreamKey, list[Sample]] = {}
    for smp in samples:
        by_key.setdefault(smp.key, []).append(smp)
    pending: dict[int, list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]] = {}
    taken = 0
    for key, ss in by_key.items():
        loc = engine.index.get(key) or (engine._resolve(ss[0]) if create else None)
        if loc is None:
            continue
        g, slot = engine.groups[loc[0]], loc[1]
        a = g.a
        if a["ready"][slot] or a["training"][slot]:
            continue
        n = int(min(a["hist_n"][slot], g.cap))
        if n:
            h_ts, h_v, h_fl = g.history(np.array([slot]), last=n)
            ts_old, v_old, fl_old = g.quantize(h_ts[0]), h_v[0], h_fl[0]
        else:
            ts_old, v_old, fl_old = np.zeros(0), np.zeros((0, g.F), np.float32), np.zeros(0, bool)
        held = set(ts_old.tolist()) if n else ()
        q_new = g.quantize(np.fromiter((smp.ts for smp in ss), dtype=np.float64, count=len(ss))).tolist()
        new: dict[float, Sample] = {}  # by the ring's millisecond: one sample each
        F = g.F
        for smp, q in zip(ss, q_new, strict=True):
            v = smp.values
            if (q not in held and len(v) == F and any(x == x for x in v)
                    and not any(x == _INF or x == -_INF for x in v)):
                new[q] = smp
        if not new:
            continue
        t_new = np.fromiter((smp.ts for smp in new.values()), dtype=np.float64, count=len(new))
        v_new = np.array([smp.values for smp in new.values()], dtype=np.float32).reshape(-1, F)
        if n:
            t_new, v_new = np.concatenate((t_new, ts_old)), np.concatenate((v_new, v_old))
            fl = np.concatenate((np.zeros(len(new), bool), fl_old))
        else:
            fl = np.zeros(len(new), bool)
        pending.setdefault(loc[0], []).append((slot, t_new, v_new, fl))
        taken += len(new)
    for F, rows in pending.items():
        for i in range(0, len(rows), CHUNK):
            _write(engine.groups[F], rows[i : i + CHUNK])
    return taken


def _write(g: Group, rows: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]) -> None:
    """Sort each stream's samples, keep its newest ``cap``, write the rows together."""
    m, cap, F = len(rows), g.cap, g.F
    lens = np.array([len(r[1]) for r in rows])
    W = int(lens.max())
    ts = np.full((m, W), np.inf)
    v = np.full((m, W, F), np.nan, np.float32)
    fl = np.zeros((m, W), bool)
    for j, (_s, t, x, f) in enumerate(rows):
        ts[j, : len(t)], v[j, : len(t)], fl[j, : len(t)] = t, x, f
    order = np.argsort(ts, axis=1, kind="stable")  # padding (inf) last
    L = np.minimum(lens, cap)
    Lm = int(L.max())
    pick = np.take_along_axis(order, np.minimum((lens - L)[:, None] + np.arange(Lm)[None, :], W - 1), 1)
    valid = np.arange(Lm)[None, :] < L[:, None]
    ts_o = np.where(valid, np.take_along_axis(ts, pick, 1), np.nan)
    v_o = np.where(valid[..., None], np.take_along_axis(v, pick[..., None], 1), np.nan)
    fl_o = np.take_along_axis(fl, pick, 1) & valid
    slots = np.array([r[0] for r in rows], dtype=np.int64)
    g.set_histories(slots, ts_o, v_o, fl_o, L)
    a = g.a
    a["since_train"][slots] = L
    for k in ("ch_score", "ch_thr", "ch_err", "ch_exp", "ch_lo", "ch_hi"):
        a[k][slots] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a stream of one sample has no interval
        iv = np.nanmedian(np.diff(ts_o, axis=1), axis=1) if Lm > 1 else np.full(m, np.nan)
    a["interval"][slots] = np.where(L > 1, iv, a["interval"][slots])
    newest = ts_o[np.arange(m), L - 1]
    a["last_ts"][slots] = np.maximum(a["last_ts"][slots], newest)
