"""What the HTTP server shows (the :class:`~sentinel.server.app.StatusProvider` of ``sentinel run``).

Reads the engine only through its read API (:mod:`sentinel.runtime.views`); readiness
comes from the daemon's lifecycle.
"""

from __future__ import annotations

from collections.abc import Callable

from ..alerts.state import FIRING, PENDING
from ..types import StreamKey
from .engine import Engine

_ORDER = {"firing": 0, "pending": 1, "warming": 2, "ok": 3}


def alert_spans(ts: list[float], state: list[int]) -> list[list[float | None]]:
    """``[start, end]`` of each firing run (``end`` None while it lasts).

    >>> alert_spans([1.0, 2.0, 3.0, 4.0, 5.0], [0, 2, 2, 0, 2])
    [[2.0, 4.0], [5.0, None]]
    """
    spans: list[list[float | None]] = []
    start = None
    for t, s in zip(ts, state, strict=True):
        if s == FIRING and start is None:
            start = t
        elif s != FIRING and start is not None:
            spans.append([start, t])
            start = None
    if start is not None:
        spans.append([start, None])
    return spans


class Status:
    """``engine()`` gives the running engine; ``ready()`` the daemon's readiness."""

    def __init__(self, engine: Callable[[], Engine], ready: Callable[[], tuple[bool, str]]):
        self._engine = engine
        self.ready = ready

    def state_counts(self) -> dict[str, int]:
        c = self._engine().state_counts()
        return {"firing": c["firing"], "pending": c["pending"], "warming": c["warming"], "ok": c["ok"]}

    def streams(self, state: str | None = None, limit: int | None = None) -> list[dict]:
        rows = [v.as_dict() for v in self._engine().stream_views() if state is None or v.state == state]
        rows.sort(key=lambda d: (_ORDER[d["state"]], -d["score"]))
        return rows[:limit] if limit is not None else rows

    def stream_history(self, stream: str) -> dict | None:
        try:
            key = StreamKey.parse(stream)
        except Exception:
            return None
        ch = self._engine().chart_series(key)
        if ch is None:
            return None
        ts = [float(t) for t in ch.ts]
        return {"ts": ts, "values": ch.values, "fields": list(ch.fields), "score": ch.score,
                "threshold": ch.threshold, "error": ch.error, "alert_spans": alert_spans(ts, ch.state),
                "pending": PENDING in ch.state, "expected": ch.expected, "lower": ch.lower, "upper": ch.upper}
