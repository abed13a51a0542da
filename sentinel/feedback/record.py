"""One operator feedback: a stream, a time window and a label, as plain validated data."""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from ..replay.timeparse import parse_timestamp
from ..types import StreamKey

LABELS = ("normal", "anomaly")
MAX_COMMENT = 1024
MAX_KEEP = 10_000  # feedback entries kept per engine (the oldest go first)


class FeedbackError(ValueError):
    """A feedback request that cannot be taken (the message says which key and why)."""


@dataclass(frozen=True, slots=True)
class Feedback:
    """``label`` for ``stream`` over ``[start, end]`` (epoch seconds), given at ``at`` by ``source``
    (``api``, ``cli`` or ``silence:<id>``)."""

    stream: str
    start: float
    end: float
    label: str
    at: float = 0.0
    source: str = "api"
    comment: str = ""
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])

    @property
    def key(self) -> StreamKey:
        return StreamKey.parse(self.stream)

    def as_dict(self) -> dict[str, Any]:
        """Plain data, as kept in the checkpoint and listed by ``GET /api/v1/feedback``."""
        d = asdict(self)
        d["from"], d["to"] = d.pop("start"), d.pop("end")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Feedback:
        return cls(stream=str(d["stream"]), start=float(d["from"]), end=float(d["to"]), label=str(d["label"]),
                   at=float(d.get("at", 0.0)), source=str(d.get("source", "api")),
                   comment=str(d.get("comment", "")), id=str(d.get("id") or uuid.uuid4().hex[:16]))


def _time(body: dict[str, Any], name: str) -> float:
    v = body.get(name)
    if v is None:
        raise FeedbackError(f"{name}: required (ISO 8601 or epoch seconds)")
    try:
        t = float(v) if isinstance(v, int | float) and not isinstance(v, bool) else parse_timestamp(str(v))
    except ValueError as e:
        raise FeedbackError(f"{name}: not a time: {v!r} ({e})") from None
    if not math.isfinite(t):
        raise FeedbackError(f"{name}: not a finite time")
    return t


def parse_feedback(body: Any, *, source: str = "api", now: float | None = None) -> Feedback:
    """A :class:`Feedback` from the JSON body ``{"stream", "from", "to", "label", "comment"?}``.

    >>> parse_feedback({"stream": "pump,site=a", "from": 10, "to": "1970-01-01T00:00:20Z",
    ...                 "label": "normal"}, now=30.0).end
    20.0
    """
    if not isinstance(body, dict):
        raise FeedbackError("body: a JSON object with stream, from, to and label")
    unknown = sorted(set(body) - {"stream", "from", "to", "label", "comment"})
    if unknown:
        raise FeedbackError(f"{unknown[0]}: unknown key")
    stream = body.get("stream")
    if not isinstance(stream, str) or not stream:
        raise FeedbackError("stream: required, the stream key as /api/v1/streams lists it (measurement,k=v,...)")
    label = body.get("label")
    if label not in LABELS:
        raise FeedbackError(f"label: one of {', '.join(LABELS)}, got {label!r}")
    start, end = _time(body, "from"), _time(body, "to")
    if end < start:
        raise FeedbackError(f"to: before from ({end} < {start})")
    comment = body.get("comment", "")
    if not isinstance(comment, str) or len(comment) > MAX_COMMENT:
        raise FeedbackError(f"comment: a string of at most {MAX_COMMENT} characters")
    key = StreamKey.parse(stream)
    return Feedback(stream=str(key), start=start, end=end, label=label, source=source, comment=comment,
                    at=time.time() if now is None else now)
