"""Alert sinks: pure request builders plus the one HTTP seam they are sent through.

A sink does no I/O and keeps no state. Given the alert events waiting in its
outbox (oldest first) it returns the :class:`Request` objects to send now; each
request names the outbox entries it acknowledges once it got a 2xx. The
:class:`~sentinel.alerts.notifier.Notifier` owns the outbox, the retry with
backoff, the HTTP transport and the metrics (Telegraf's ``running_output``
split: plugins only build, the framework delivers).

Shared here: the :class:`Sink` protocol, the :data:`Transport` seam and its
aiohttp implementation, the JSON codec of :class:`~sentinel.types.AlertEvent`
used by the outbox, and RFC 3339 time formatting.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from ...errors import SinkError
from ...types import AlertEvent, StreamKey

__all__ = [
    "ZERO_TIME",
    "AiohttpTransport",
    "Request",
    "Sink",
    "Transport",
    "event_from_json",
    "event_to_json",
    "rfc3339",
]

#: ``endsAt`` of an alert that is still firing (Go's zero time, as Alertmanager writes it).
ZERO_TIME = "0001-01-01T00:00:00Z"

#: ``send(method, url, headers, body, timeout_s) -> HTTP status``; raises on connection errors/timeouts.
Transport = Callable[[str, str, Mapping[str, str], bytes, float], Awaitable[int]]


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request a sink wants sent; ``entry_ids`` are the outbox entries it acknowledges."""

    url: str
    body: bytes
    headers: dict[str, str]
    timeout: float
    entry_ids: tuple[int, ...] = ()
    method: str = "POST"
    alerts: int = 0
    meta: dict[str, Any] = field(default_factory=dict)


class Sink(Protocol):
    """What the notifier needs from a sink."""

    name: str
    #: Seconds between re-sends of the persisted firing set; None if the sink does not re-send.
    resend_interval: float | None

    def accepts(self, event: AlertEvent) -> bool:
        """Whether ``event`` is queued for this sink at all (e.g. ``send_resolved: false``)."""
        ...

    def requests(self, pending: Sequence[tuple[int, AlertEvent]], firing: Sequence[AlertEvent],
                 now: float) -> list[Request]:
        """Requests for ``pending`` (``(entry id, event)``, oldest first) and, for re-sending sinks,
        the currently firing set ``firing`` (empty unless a re-send is due). ``now``: epoch seconds.

        Entries that no request names stay in the outbox for the next round.
        """
        ...


def rfc3339(ts: float) -> str:
    """Epoch seconds -> RFC 3339 UTC with ``Z``; milliseconds only when non-zero.

    >>> rfc3339(1795947245.0), rfc3339(1795947245.25)
    ('2026-11-29T10:14:05Z', '2026-11-29T10:14:05.250Z')
    """
    ms = round(ts * 1000)
    d = datetime.fromtimestamp(ms // 1000, tz=UTC)
    base = d.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{ms % 1000:03d}Z" if ms % 1000 else base + "Z"


def event_to_json(ev: AlertEvent) -> str:
    """Lossless JSON of an event, as stored in the outbox (floats round-trip exactly)."""
    return json.dumps({
        "key": str(ev.key), "status": ev.status, "starts_at": ev.starts_at, "ends_at": ev.ends_at,
        "at": ev.at, "score": ev.score, "threshold": ev.threshold, "error": ev.error,
        "severity": ev.severity, "top_fields": [[f, s] for f, s in ev.top_fields], "note": ev.note,
        "expected": [list(x) for x in ev.expected],
    }, separators=(",", ":"), allow_nan=True)


def event_from_json(text: str) -> AlertEvent:
    """Inverse of :func:`event_to_json`."""
    d = json.loads(text)
    return AlertEvent(
        key=StreamKey.parse(d["key"]), status=d["status"], starts_at=d["starts_at"], ends_at=d["ends_at"],
        at=d["at"], score=d["score"], threshold=d["threshold"], error=d["error"], severity=d["severity"],
        top_fields=tuple((str(f), float(s)) for f, s in d["top_fields"]), note=str(d.get("note", "")),
        expected=tuple((str(f), float(v), float(x), float(lo), float(hi))  # absent in older outboxes
                       for f, v, x, lo, hi in d.get("expected", ())),
    )


class AiohttpTransport:
    """The production :data:`Transport`: one aiohttp session, created lazily inside the running loop.

    Connection errors and timeouts become :class:`~sentinel.errors.SinkError`. The response
    body is read (bounded) and discarded so connections are reused.
    """

    def __init__(self, user_agent: str = "Sentinel"):
        self._session: Any = None
        self._ua = user_agent

    async def __call__(self, method: str, url: str, headers: Mapping[str, str], body: bytes, timeout: float) -> int:
        import aiohttp

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers={"User-Agent": self._ua})
        try:
            async with self._session.request(method, url, data=body, headers=dict(headers),
                                             timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                await resp.content.read(64 * 1024)
                return resp.status
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            raise SinkError(f"{method} {url}: {type(e).__name__}: {e}") from e

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None
