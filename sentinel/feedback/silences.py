"""Alertmanager silences as normal feedback (``sinks.alertmanagers[].read_silences: true``).

Every ``silences_interval`` the reader polls ``GET /api/v2/silences``. A silence whose comment
starts with ``sentinel:normal``, that has started, and that has at least one equality matcher on
a stream's own labels (or ``measurement``) is read once (by its id) as *normal* feedback for
every stream it matches (Alertmanager's matcher semantics: ``=``, ``!=``, ``=~``, ``!~``; a label
a stream lacks is the empty string; ``severity`` matchers are ignored, the stream has both), over
``[min(startsAt, the start of the stream's open alert), min(endsAt, now)]``: an operator who
silences a firing alert as normal means the alert's whole span.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import numpy as np

from ..alerts.state import FIRING, PENDING
from ..replay.timeparse import parse_iso
from .record import Feedback

log = logging.getLogger("sentinel.feedback")

PREFIX = "sentinel:normal"


def matches(matchers: list[dict], labels: dict[str, str]) -> bool:
    """Alertmanager's matching of one label set (a missing label is ``""``).

    >>> matches([{"name": "site", "value": "a.*", "isRegex": True, "isEqual": True}], {"site": "a1"})
    True
    """
    for m in matchers:
        name = str(m.get("name", ""))
        if name == "severity":
            continue
        v = labels.get(name, "")
        want = str(m.get("value", ""))
        hit = re.fullmatch(want, v) is not None if m.get("isRegex") else v == want
        if hit != bool(m.get("isEqual", True)):
            return False
    return True


def on_stream_labels(matchers: list[dict]) -> bool:
    """At least one positive, non-regex matcher on a label other than alertname/severity."""
    return any(m.get("isEqual", True) and not m.get("isRegex") and m.get("name") not in ("alertname", "severity")
               for m in matchers)


def silence_feedback(silence: dict, engine: Any, now: float) -> list[Feedback]:
    """The normal feedback one silence means (empty when it does not qualify). On the engine thread."""
    comment = str(silence.get("comment", ""))
    matchers = silence.get("matchers") or []
    if not comment.startswith(PREFIX) or not isinstance(matchers, list) or not on_stream_labels(matchers):
        return []
    if (silence.get("status") or {}).get("state") not in ("active", "expired"):
        return []
    try:
        start, end = parse_iso(str(silence["startsAt"])), parse_iso(str(silence["endsAt"]))
    except (KeyError, ValueError):
        return []
    if start > now:
        return []
    out = []
    for key, (F, slot) in list(engine.index.items()):
        labels = {"alertname": "SentinelAnomaly", "measurement": key.measurement, **dict(key.labels)}
        if not matches(matchers, labels):
            continue
        g = engine.groups[F]
        st, since = int(g.alerts.a["state"][slot]), float(g.alerts.a["starts_at"][slot])
        lo = min(start, since) if st in (PENDING, FIRING) and np.isfinite(since) else start
        out.append(Feedback(stream=str(key), start=lo, end=min(end, now), label="normal", at=now,
                            source=f"silence:{silence.get('id', '')}", comment=comment[:1024],
                            id=f"silence:{silence.get('id', '')}:{key}"[:200]))
    return out


Fetch = Callable[[str, dict[str, str], float], Awaitable[Any]]


async def fetch_json(url: str, headers: dict[str, str], timeout: float) -> Any:
    async with aiohttp.ClientSession() as s, s.get(url, headers=headers,
                                                   timeout=aiohttp.ClientTimeout(total=timeout)) as r:
        r.raise_for_status()
        return await r.json(content_type=None)


class SilenceReader:
    """Polls every configured Alertmanager that has ``read_silences`` and gives the feedback found."""

    def __init__(self, alertmanagers: list[Any], service: Any, call: Callable[..., Awaitable[Any]],
                 engine: Callable[[], Any], clock: Callable[[], float] = time.time, fetch: Fetch = fetch_json):
        self.sinks = [a for a in alertmanagers if getattr(a, "read_silences", False)]
        self.service, self._call, self._engine, self.clock, self._fetch = service, call, engine, clock, fetch
        self.errors = 0

    async def poll_once(self) -> int:
        """One poll of every Alertmanager; returns the feedback given."""
        given = 0
        for am in self.sinks:
            url = am.url.rstrip("/") + "/api/v2/silences"
            try:
                silences = await self._fetch(url, dict(am.headers), am.timeout)
            except Exception as e:  # an unreachable Alertmanager is retried next round
                self.errors += 1
                log.warning("cannot read silences", extra={"url": url, "error": f"{type(e).__name__}: {e}"})
                continue
            if not isinstance(silences, list):
                continue
            now = self.clock()
            seen = self.service.known_ids()
            for sil in silences:
                if not isinstance(sil, dict):
                    continue
                fbs = await self._call(silence_feedback, sil, self._engine(), now)
                for fb in fbs:
                    if fb.id in seen:
                        continue
                    try:
                        await self.service.give(fb)
                    except KeyError:
                        continue  # the stream went away meanwhile
                    seen.add(fb.id)
                    given += 1
        return given

    async def run(self) -> None:
        if not self.sinks:
            return
        interval = min(a.silences_interval for a in self.sinks)
        while True:
            await self.poll_once()
            await asyncio.sleep(interval)
