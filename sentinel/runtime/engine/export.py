"""The engine's per-stream numbers as arrays, for the scrape (:class:`~sentinel.metrics.StreamCollector`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ...metrics import StreamColumns

if TYPE_CHECKING:
    from .core import Engine


def stream_columns(engine: Engine, mode: str = "all") -> list[StreamColumns]:
    """One chunk per group (``mode``: all | non_ok | none): what :func:`~sentinel.metrics.stream_rows` and the
    band collector make of :meth:`Engine.stream_views`, without an object per stream."""
    out: list[StreamColumns] = []
    if mode == "none":
        return out
    for g in engine.groups.values():
        C = g.capacity
        st = g.alerts.a["state"][:C]
        level = np.where(st == 3, 0, st)
        m = g.a["alive"][:C] & (level != 0) if mode == "non_ok" else g.a["alive"][:C].copy()
        sl = np.flatnonzero(m)
        keys = [g.keys[s] for s in sl.tolist()]
        if any(k is None for k in keys):
            ok = np.array([k is not None for k in keys], bool)
            sl, keys = sl[ok], [k for k in keys if k is not None]
        if not len(sl):
            continue
        a = g.a
        err, thr = a["error"][sl], a["threshold"][sl]
        out.append(StreamColumns(keys, [g.fields[s] for s in sl.tolist()], {
            "score": a["score"][sl], "error": np.where(np.isnan(err), 0.0, err),
            "threshold": np.where(np.isfinite(thr), thr, 0.0), "state": level[sl].astype(np.float64),
            "alerts": g.alerts.a["fired"][sl].astype(np.float64),
            "exp": a["exp"][sl], "lo": a["lo"][sl], "hi": a["hi"][sl]}))
    return out

