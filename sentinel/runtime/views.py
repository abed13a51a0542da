"""What the engine shows the outside: plain, read-only values (no arrays to write into).

The daemon's status page, its per-stream metrics and ``/api/v1/streams`` read these
through :meth:`Engine.stream_views <sentinel.runtime.engine.Engine.stream_views>` and
:meth:`Engine.chart_series <sentinel.runtime.engine.Engine.chart_series>`; nobody outside
the engine touches a group's slot arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..types import StreamKey

STATE_NAMES = {0: "ok", 1: "pending", 2: "firing", 3: "ok"}  # RESOLVED shows as ok


@dataclass(frozen=True, slots=True)
class StreamView:
    """One stream as of its last sample.

    >>> v = StreamView(StreamKey.of("m", site="a"), ("t",), True, 2, 0.97, 1.5, 0.8, 3, 10.0, 1)
    >>> v.state, v.alert_level
    ('firing', 2)
    """

    key: StreamKey
    fields: tuple[str, ...]
    ready: bool
    alert_state: int  # AlertState: 0 ok, 1 pending, 2 firing, 3 resolved
    score: float
    error: float  # NaN before the first scored sample
    threshold: float  # NaN before calibration
    model_version: int
    last_ts: float  # -inf before the first sample
    alerts_total: int
    # the expected value and band of the last sample per field, in sensor units (NaN: none)
    expected: tuple[float, ...] = ()
    lower: tuple[float, ...] = ()
    upper: tuple[float, ...] = ()

    @property
    def state(self) -> str:
        """``warming`` until the first model, then ``ok``, ``pending`` or ``firing``."""
        return STATE_NAMES[self.alert_state] if self.ready else "warming"

    @property
    def alert_level(self) -> int:
        """The alert state as exported (``sentinel_alert_state``): resolved counts as ok (0)."""
        return 0 if self.alert_state == 3 else self.alert_state

    def as_dict(self) -> dict:
        """The ``/api/v1/streams`` row."""
        last = self.last_ts
        return {"stream": str(self.key), "measurement": self.key.measurement, "labels": dict(self.key.labels),
                "state": self.state, "score": self.score, "error": self.error, "threshold": self.threshold,
                "model_version": self.model_version, "last_ts": last if math.isfinite(last) else None,
                "fields": list(self.fields), "alerts_total": self.alerts_total,
                "expected": list(self.expected), "lower": list(self.lower), "upper": list(self.upper)}


@dataclass(frozen=True, slots=True)
class ChartSeries:
    """The recent points of one stream, oldest first (lists of equal length)."""

    fields: tuple[str, ...]
    ts: list[float]
    values: list[list[float]]
    score: list[float]
    threshold: list[float]
    error: list[float]
    state: list[int]
    # per point and field, the expected value and band ([T][F], NaN: none)
    expected: list[list[float]] | None = None
    lower: list[list[float]] | None = None
    upper: list[list[float]] | None = None
