"""Webhook sink: Alertmanager's webhook payload, version "4" (DESIGN §8).

Any receiver written for Alertmanager works unchanged. Pending events are grouped
by the ``group_by`` labels (as Alertmanager's route ``group_by``): one POST per
group per delivery round, group ``status`` "firing" if any of its alerts fires.
An alert (fingerprint) appears at most once per POST; a second event of the same
alert in the same round waits for the next round, so a receiver sees every
transition in order. With ``hmac_secret`` set, ``X-Sentinel-Signature:
sha256=<hex>`` is the HMAC-SHA256 of the exact body bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from ...config.sinks import WebhookConfig
from ...detect.band import describe
from ...types import AlertEvent
from . import ZERO_TIME, Request, rfc3339

SIGNATURE_HEADER = "X-Sentinel-Signature"


def alert_annotations(ev: AlertEvent) -> dict[str, str]:
    """summary, score, threshold, reconstruction_error, (multivariate) top_fields and, when the
    event carries the expected band, ``expected``: the top field against its band in words
    (``Pressure 2.13 (expected 0.05–0.09), score 0.93``), which also leads a firing summary."""
    who = " ".join([ev.key.measurement, *(f"{k}={v}" for k, v in ev.key.labels)])
    words = expected_words(ev)
    if ev.status == "firing" and words:
        summary = f"{who}: {words}"
    elif ev.status == "firing":
        summary = f"{who} deviates from its learned behaviour (score {ev.score:.4f})"
    else:
        summary = f"{who} is back to its learned behaviour"
    out = {
        "summary": summary,
        "score": f"{ev.score:.4f}",
        "threshold": f"{ev.threshold:.4f}",
        "reconstruction_error": f"{ev.error:.3g}",
    }
    if ev.top_fields:
        out["top_fields"] = ",".join(f"{f}={s:.2f}" for f, s in ev.top_fields)
    if words:
        out["expected"] = words
    if ev.note:
        out["note"] = ev.note
    return out


def expected_words(ev: AlertEvent) -> str:
    """The field that drove the alert (the largest share; the first field when univariate),
    its value against the expected band, and the score; empty without a band."""
    if not ev.expected:
        return ""
    top = ev.top_fields[0][0] if ev.top_fields else ev.expected[0][0]
    name, value, _x, lower, upper = next((e for e in ev.expected if e[0] == top), ev.expected[0])
    if not (math.isfinite(lower) and math.isfinite(upper)):
        return ""
    return f"{describe(name, value, lower, upper)}, score {ev.score:.2f}"


def generator_url(external_url: str, ev: AlertEvent) -> str:
    """Link to the stream on Sentinel's status page: ``{external_url}/?stream=<escaped key>``."""
    return external_url.rstrip("/") + "/?stream=" + quote(str(ev.key), safe="")


def alert_json(ev: AlertEvent, external_url: str) -> dict[str, Any]:
    """One entry of ``alerts[]``."""
    return {
        "status": ev.status,
        "labels": ev.labels,
        "annotations": alert_annotations(ev),
        "startsAt": rfc3339(ev.starts_at),
        "endsAt": ZERO_TIME if ev.status == "firing" or ev.ends_at is None else rfc3339(ev.ends_at),
        "generatorURL": generator_url(external_url, ev),
        "fingerprint": ev.fingerprint,
    }


def _common(dicts: list[dict[str, str]]) -> dict[str, str]:
    if not dicts:
        return {}
    common = dict(dicts[0])
    for d in dicts[1:]:
        common = {k: v for k, v in common.items() if d.get(k) == v}
    return dict(sorted(common.items()))


def group_key(group_labels: dict[str, str]) -> str:
    """Alertmanager's group key for the root route: ``{}:{a="x", b="y"}``."""
    inner = ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(group_labels.items()))
    return "{}:{" + inner + "}"


def payload(receiver: str, group_labels: dict[str, str], events: Sequence[AlertEvent],
            external_url: str) -> dict[str, Any]:
    """The version-4 payload of one group (keys in Alertmanager's order)."""
    alerts = [alert_json(ev, external_url) for ev in events]
    return {
        "version": "4",
        "groupKey": group_key(group_labels),
        "truncatedAlerts": 0,
        "status": "firing" if any(ev.status == "firing" for ev in events) else "resolved",
        "receiver": receiver,
        "groupLabels": dict(sorted(group_labels.items())),
        "commonLabels": _common([a["labels"] for a in alerts]),
        "commonAnnotations": _common([a["annotations"] for a in alerts]),
        "externalURL": external_url,
        "alerts": alerts,
    }


def sign(secret: str, body: bytes) -> str:
    """Header value ``sha256=<hex>`` of HMAC-SHA256(secret, body)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookSink:
    """Builds the POSTs of one webhook receiver (see the module doc)."""

    resend_interval: float | None = None

    def __init__(self, cfg: WebhookConfig, external_url: str):
        self.cfg = cfg
        self.name = cfg.name
        self.external_url = external_url

    def accepts(self, event: AlertEvent) -> bool:
        return event.status == "firing" or self.cfg.send_resolved

    def group_labels(self, ev: AlertEvent) -> dict[str, str]:
        labels = ev.labels
        return {k: labels[k] for k in self.cfg.group_by if k in labels}

    def requests(self, pending: Sequence[tuple[int, AlertEvent]], firing: Sequence[AlertEvent],
                 now: float) -> list[Request]:
        groups: dict[tuple[tuple[str, str], ...], list[tuple[int, AlertEvent]]] = {}
        seen: dict[tuple[tuple[str, str], ...], set[str]] = {}
        blocked: set[str] = set()  # alerts with a deferred event: later events of them wait too
        for eid, ev in pending:
            fp = ev.fingerprint
            gk = tuple(sorted(self.group_labels(ev).items()))
            if fp in blocked or fp in seen.setdefault(gk, set()):
                blocked.add(fp)
                continue
            seen[gk].add(fp)
            groups.setdefault(gk, []).append((eid, ev))
        out = []
        for gk, items in groups.items():
            body = json.dumps(payload(self.name, dict(gk), [ev for _, ev in items], self.external_url),
                              separators=(",", ":")).encode()
            headers = {"Content-Type": "application/json", **self.cfg.headers}
            if self.cfg.hmac_secret:
                headers[SIGNATURE_HEADER] = sign(self.cfg.hmac_secret, body)
            out.append(Request(url=self.cfg.url, body=body, headers=headers, timeout=self.cfg.timeout,
                               entry_ids=tuple(eid for eid, _ in items), alerts=len(items)))
        return out
