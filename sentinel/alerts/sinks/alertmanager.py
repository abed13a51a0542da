"""Alertmanager sink: ``POST {url}/api/v2/alerts`` with a JSON array of alerts (DESIGN §8).

Alertmanager is state-based: an alert is identified by its label set and expires
at ``endsAt`` unless re-sent. So this sink sends the newest state of each alert
(later events of the same alert in one round replace earlier ones), and the
notifier hands it the persisted firing set every ``resend_interval`` to re-send.
A firing alert carries ``endsAt = now + 4 * resend_interval`` (as Prometheus
does), so if Sentinel disappears its alerts resolve by themselves; a resolved one
carries ``endsAt`` = its resolve time. Label names are made valid Prometheus label
names (:func:`sentinel.metrics.label_name`), which Alertmanager requires.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ...config.sinks import AlertmanagerConfig
from ...metrics import label_name
from ...types import AlertEvent
from . import Request, rfc3339
from .webhook import alert_annotations, generator_url

#: Re-sent firing alerts stay valid for this many resend intervals.
VALIDITY_FACTOR = 4.0


def alert_json(ev: AlertEvent, now: float, resend_interval: float, external_url: str) -> dict[str, Any]:
    """One element of the posted array (``postableAlert`` of Alertmanager's v2 API)."""
    if ev.status == "firing":
        ends = max(now, ev.starts_at) + VALIDITY_FACTOR * resend_interval
    else:
        ends = max(ev.ends_at if ev.ends_at is not None else ev.at, ev.starts_at)
    return {
        "labels": {label_name(k): v for k, v in ev.labels.items()},
        "annotations": alert_annotations(ev),
        "startsAt": rfc3339(ev.starts_at),
        "endsAt": rfc3339(ends),
        "generatorURL": generator_url(external_url, ev),
    }


class AlertmanagerSink:
    """Builds the POSTs to one Alertmanager (see the module doc)."""

    def __init__(self, cfg: AlertmanagerConfig, external_url: str):
        self.cfg = cfg
        self.name = cfg.name
        self.resend_interval: float | None = cfg.resend_interval
        self.external_url = external_url
        self.url = cfg.url.rstrip("/") + "/api/v2/alerts"

    def accepts(self, event: AlertEvent) -> bool:
        return True

    def requests(self, pending: Sequence[tuple[int, AlertEvent]], firing: Sequence[AlertEvent],
                 now: float) -> list[Request]:
        latest: dict[str, AlertEvent] = {}
        for _, ev in pending:
            latest[ev.fingerprint] = ev  # oldest first: the newest state wins
        for ev in firing:
            latest.setdefault(ev.fingerprint, ev)
        if not latest:
            return []
        body = json.dumps(
            [alert_json(ev, now, self.cfg.resend_interval, self.external_url) for ev in latest.values()],
            separators=(",", ":"),
        ).encode()
        return [Request(url=self.url, body=body, headers={"Content-Type": "application/json", **self.cfg.headers},
                        timeout=self.cfg.timeout, entry_ids=tuple(eid for eid, _ in pending), alerts=len(latest),
                        meta={"resend": bool(firing)})]
