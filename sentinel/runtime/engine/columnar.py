"""The engine's columnar intake: a :class:`~sentinel.columns.Columns` batch into rounds, as arrays.

The same checks and the same rounds as the object path of :meth:`Engine.process
<.core.Engine.process>`, vectorised: each series id's slot is looked up once per series
table and cached (:class:`LocCache`); the per-sample checks (no values, non-finite,
field count, fields that do not match the stream's) are numpy over the batch; a stream's
r-th sample of the batch goes to round r. A batch that holds a series the engine has no
stream for yet (or whose fields come in another order) returns None and takes the object
path, which creates streams in arrival order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ...columns import Columns

if TYPE_CHECKING:
    from .core import Engine

_NEW, _OK, _BAD, _PERMUTED = -1, 0, 1, 2


class LocCache:
    """Series id of one table -> ``(F, slot, status)`` of its stream; -1 = not looked up yet."""

    __slots__ = ("F", "serial", "slot", "status")

    def __init__(self, serial: int):
        self.serial = serial
        self.F = np.full(0, -1, np.int64)
        self.slot = np.full(0, -1, np.int64)
        self.status = np.full(0, _NEW, np.int8)

    def ensure(self, n: int) -> None:
        if n > len(self.F):
            m = max(n, 2 * len(self.F), 64)
            grow = m - len(self.F)
            self.F = np.concatenate((self.F, np.full(grow, -1, np.int64)))
            self.slot = np.concatenate((self.slot, np.full(grow, -1, np.int64)))
            self.status = np.concatenate((self.status, np.full(grow, _NEW, np.int8)))


def _cache(engine: Engine, cols: Columns) -> LocCache:
    caches = engine._loc_caches
    c = caches.get(cols.table.serial)
    if c is None:
        if len(caches) >= 4:  # tables replaced by a cleared selector cache: keep only recent ones
            caches.pop(next(iter(caches)))
        c = caches[cols.table.serial] = LocCache(cols.table.serial)
    c.ensure(len(cols.table))
    return c


def _look_up(engine: Engine, cols: Columns, c: LocCache, sids: np.ndarray) -> bool:
    """Fill the cache for ``sids``; False when one has no stream yet (the object path creates it)."""
    t = cols.table
    for s in sids.tolist():
        loc = engine.index.get(t.keys[s])
        if loc is None:
            return False
        F, slot = loc
        want = engine.groups[F].fields[slot]
        got = t.fields[s]
        c.F[s], c.slot[s] = F, slot
        c.status[s] = _OK if got == want else (
            _BAD if len(got) != len(want) or set(got) != set(want) else _PERMUTED)
    return True


def rounds(engine: Engine, cols: Columns, rejected: list[str | None]
           ) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] | None:
    """The batch as rounds ``(F, idx, slots, ts, values [n, F])`` in the object path's order, with the
    rejected samples' reasons written into ``rejected``; None: take the object path."""
    if engine._loc_epoch != engine._loc_epoch_seen:  # a stream was removed: slots may have moved
        engine._loc_caches.clear()
        engine._loc_epoch_seen = engine._loc_epoch
    c = _cache(engine, cols)
    sid = cols.sid
    st = c.status[sid]
    new = st == _NEW
    if new.any():
        if not _look_up(engine, cols, c, np.unique(sid[new])):
            return None
        st = c.status[sid]
    if (st == _PERMUTED).any():
        return None
    n = len(sid)
    V = cols.values
    width = cols.table.width_array()[sid] if V.shape[1] else np.zeros(n, np.int64)
    isnan = np.isnan(V)
    no_values = isnan.all(1) if V.shape[1] else np.ones(n, bool)
    non_finite = np.isinf(V).any(1) & ~no_values
    max_fields = (width > engine.cfg.streams.max_fields) & ~no_values & ~non_finite
    bad_fields = (st == _BAD) & ~no_values & ~non_finite & ~max_fields
    bad = no_values | non_finite | max_fields | bad_fields
    if bad.any():
        for mask, reason in ((no_values, "no_values"), (non_finite, "non_finite"), (max_fields, "max_fields"),
                             (bad_fields, "bad_fields")):
            for i in np.flatnonzero(mask).tolist():
                rejected[i] = reason
        keep = np.flatnonzero(~bad)
    else:
        keep = None
    F = c.F[sid] if keep is None else c.F[sid[keep]]
    slot = c.slot[sid] if keep is None else c.slot[sid[keep]]
    idx = np.arange(n) if keep is None else keep
    if len(idx) == 0:
        return []
    f0 = int(F[0])
    one_group = bool((f0 == F).all())
    if one_group and (len(slot) < 2 or bool((slot[1:] > slot[:-1]).all())):
        # one group, each stream once and in slot order (the usual tick of a fleet): one round as it is
        if keep is None:  # every sample: copies of the columns, no gathers
            return [(f0, idx, slot, cols.ts.copy(), np.array(V[:, :f0]))]
        return [(f0, idx, slot, cols.ts[idx], V[idx, :f0])]
    # round = how many earlier samples of the same stream this batch holds
    code = F * (1 << 40) + slot
    order = np.argsort(code, kind="stable")
    sc = code[order]
    first = np.r_[True, sc[1:] != sc[:-1]]
    if first.all():  # one sample per stream (the usual tick)
        rnd = np.zeros(len(idx), np.int64)
    else:
        pos = np.arange(len(sc))
        rnd = np.empty(len(idx), np.int64)
        rnd[order] = pos - np.maximum.accumulate(np.where(first, pos, 0))
    out = []
    if one_group and not rnd.any():
        out.append((f0, idx, slot, cols.ts[idx], V[idx, :f0]))
        return out
    # buckets (F, round) in round order, ties by first appearance, each in arrival order
    m = int(F.max()) + 1
    key = rnd * m + F
    uk, first_at = np.unique(key, return_index=True)
    for k in uk[np.lexsort((first_at, uk // m))].tolist():
        j = np.flatnonzero(key == k)
        f = k % m
        ii = idx[j]
        out.append((f, ii, slot[j], cols.ts[ii], V[ii, :f]))
    return out
