"""The nouns every layer shares: stream keys, samples, scores and alert events.

These are plain frozen dataclasses with no I/O and no torch, so sources, sinks
and tests can use them without pulling in the model.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Literal

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class StreamKey:
    """Identity of one stream: a measurement (or table) plus its sorted label set.

    >>> k = StreamKey.of("pump", site="plant-7", pump_id="p-12")
    >>> str(k)
    'pump,pump_id=p-12,site=plant-7'
    >>> StreamKey.parse(str(k)) == k
    True
    """

    measurement: str
    labels: Labels = ()

    @classmethod
    def of(cls, measurement: str, labels: dict[str, str] | None = None, **kw: str) -> StreamKey:
        merged = dict(labels or {})
        merged.update(kw)
        return cls(measurement, tuple(sorted((str(k), str(v)) for k, v in merged.items())))

    @classmethod
    def parse(cls, text: str) -> StreamKey:
        """Inverse of ``str()``: ``measurement,k=v,...`` (commas/equals in values escaped)."""
        parts = _split_escaped(text, ",")
        labels = []
        for p in parts[1:]:
            kv = _split_escaped(p, "=", maxsplit=1)
            k, v = (kv[0], kv[1]) if len(kv) == 2 else (kv[0], "")
            labels.append((_unescape(k), _unescape(v)))
        return cls(_unescape(parts[0]), tuple(sorted(labels)))

    def label_dict(self) -> dict[str, str]:
        return dict(self.labels)

    def __str__(self) -> str:
        head = _escape(self.measurement)
        if not self.labels:
            return head
        return head + "," + ",".join(f"{_escape(k)}={_escape(v)}" for k, v in self.labels)


def _escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def _unescape(s: str) -> str:
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and i + 1 < len(s):
            out.append(s[i + 1])
            i += 2
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def _split_escaped(s: str, sep: str, maxsplit: int = -1) -> list[str]:
    parts: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            cur.append(s[i : i + 2])
            i += 2
            continue
        if c == sep and (maxsplit < 0 or len(parts) < maxsplit):
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    parts.append("".join(cur))
    return parts


@dataclass(frozen=True, slots=True)
class Sample:
    """One observation of one stream: ``values[i]`` is field ``fields[i]``; NaN means missing.

    ``ts`` is seconds since the Unix epoch (float, UTC).
    """

    key: StreamKey
    ts: float
    fields: tuple[str, ...]
    values: tuple[float, ...]


@dataclass(slots=True)
class SourceBatch:
    """What a source hands the runtime: samples plus the cursor *after* them.

    The runtime stores ``cursor`` in the checkpoint only once every sample of the
    batch has been scored, so a restart resumes exactly after the last scored batch.
    ``cursor`` is plain JSON-able data that only the source that produced it reads.
    """

    source: str
    samples: Sequence[Sample]  # a list, or :class:`~sentinel.columns.Columns` (the hot path)
    cursor: dict | None = None
    received_at: float = 0.0
    rejected: dict[str, int] = field(default_factory=dict)
    # the write-ahead log position (segment, offset) after the record these samples came from (push sources)
    wal_position: tuple[int, int] | None = None


class StreamState(IntEnum):
    """Lifecycle of a stream (not the alert state)."""

    WARMING = 0
    READY = 1


class AlertState(IntEnum):
    """Alert state of a stream; the metric ``sentinel_alert_state`` exports OK/PENDING/FIRING."""

    OK = 0
    PENDING = 1
    FIRING = 2
    RESOLVED = 3


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """A transition of one stream's alert to firing or to resolved.

    ``starts_at``/``ends_at`` are epoch seconds; ``ends_at`` is None while firing.
    ``top_fields`` lists ``(field, share of error)`` in decreasing share.
    ``note`` is empty or a sentence for the operator, sent as the ``note`` annotation.
    """

    key: StreamKey
    status: Literal["firing", "resolved"]
    starts_at: float
    ends_at: float | None
    at: float
    score: float
    threshold: float
    error: float
    severity: str = "warning"
    top_fields: tuple[tuple[str, float], ...] = ()
    note: str = ""  # said in words beside the numbers (a resolve after a relearn: "baseline shifted: ...")
    #: per field ``(field, value, expected, lower, upper)`` at the transition (NaN: no band)
    expected: tuple[tuple[str, float, float, float, float], ...] = ()

    @property
    def labels(self) -> dict[str, str]:
        labels = {"alertname": "SentinelAnomaly", "measurement": self.key.measurement}
        labels.update(self.key.labels)
        labels["severity"] = self.severity
        return labels

    @property
    def fingerprint(self) -> str:
        """Stable id of the alert's label set (as Alertmanager identifies alerts by labels)."""
        text = "\x00".join(f"{k}\x00{v}" for k, v in sorted(self.labels.items()))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def is_finite(x: float) -> bool:
    return not (math.isnan(x) or math.isinf(x))


@dataclass(frozen=True, slots=True)
class ScoreRecord:
    """The engine's verdict on one sample, as exported and written back.

    ``alert_state`` is an :class:`AlertState` value; ``ready`` is False while warming.
    """

    key: StreamKey
    ts: float
    values: tuple[float, ...]
    score: float
    error: float
    threshold: float
    alert_state: int
    ready: bool
    #: the expected value and band per field, in the order of ``band_fields`` (empty: not scored)
    band_fields: tuple[str, ...] = ()
    expected: tuple[float, ...] = ()
    lower: tuple[float, ...] = ()
    upper: tuple[float, ...] = ()
