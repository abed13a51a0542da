"""Payloads of the webhook (Alertmanager webhook v4) and Alertmanager (v2 API) sinks, built without I/O."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest

from sentinel.alerts.sinks import ZERO_TIME, event_from_json, event_to_json, rfc3339
from sentinel.alerts.sinks.alertmanager import VALIDITY_FACTOR, AlertmanagerSink
from sentinel.alerts.sinks.webhook import SIGNATURE_HEADER, WebhookSink, group_key, payload
from sentinel.config.sinks import AlertmanagerConfig, SinksConfig, WebhookConfig
from sentinel.types import AlertEvent, StreamKey

EXAMPLE = Path(__file__).resolve().parents[1] / "data" / "alertmanager-webhook-v4.json"  # an Alertmanager v4 payload
EXTERNAL = "http://127.0.0.1:9680/"
T0 = 1795947245.0  # 2026-11-29T10:14:05Z


def event(status: str = "firing", site: str = "plant-7", pump: str = "p-12", at: float = T0, **kw) -> AlertEvent:
    defaults = dict(score=0.9973, threshold=0.99, error=4.81,
                    top_fields=(("vibration", 0.71), ("current", 0.22), ("temp", 0.07)))
    defaults.update(kw)
    return AlertEvent(key=StreamKey.of("pump", site=site, pump_id=pump), status=status, starts_at=T0,
                      ends_at=None if status == "firing" else at, at=at, **defaults)


def example() -> dict:
    return json.loads(EXAMPLE.read_text())


def webhook(**kw) -> WebhookSink:
    cfg = WebhookConfig(name="ops-webhook", url="http://127.0.0.1:1/hook", **kw)
    return WebhookSink(cfg, EXTERNAL)


def test_payload_matches_the_example_shape_and_values():
    ex = example()
    sink = webhook(group_by=["alertname", "site"])
    (req,) = sink.requests([(1, event())], [], now=T0)
    body = json.loads(req.body)
    assert list(body) == list(ex)  # same keys, same order
    for k, v in ex.items():
        assert type(body[k]) is type(v), k
    assert body["version"] == "4" and body["truncatedAlerts"] == 0
    assert body["groupKey"] == ex["groupKey"]
    assert body["groupLabels"] == ex["groupLabels"]
    assert body["commonLabels"] == ex["commonLabels"] | {"pump_id": "p-12"}
    assert body["status"] == "firing" and body["receiver"] == "ops-webhook"
    assert body["externalURL"] == EXTERNAL
    (a,) = body["alerts"]
    (xa,) = ex["alerts"]
    assert list(a) == list(xa)
    assert a["labels"] == xa["labels"]
    assert set(a["annotations"]) == set(xa["annotations"])
    for k in ("score", "threshold", "reconstruction_error", "top_fields"):
        assert a["annotations"][k] == xa["annotations"][k], k
    assert a["startsAt"] == xa["startsAt"] and a["endsAt"] == ZERO_TIME == xa["endsAt"]
    assert a["generatorURL"] == xa["generatorURL"]
    assert a["fingerprint"] == event().fingerprint and len(a["fingerprint"]) == 16
    assert req.entry_ids == (1,) and req.url == "http://127.0.0.1:1/hook"
    assert req.headers["Content-Type"] == "application/json"


def test_resolved_alert_has_real_ends_at_and_group_is_resolved():
    (req,) = webhook().requests([(7, event("resolved", at=T0 + 90.5))], [], now=T0 + 100)
    body = json.loads(req.body)
    assert body["status"] == "resolved"
    assert body["alerts"][0]["status"] == "resolved"
    assert body["alerts"][0]["endsAt"] == "2026-11-29T10:15:35.500Z"
    assert "deviates" not in body["alerts"][0]["annotations"]["summary"]


def test_grouping_by_labels_one_post_per_group_and_group_status():
    sink = webhook(group_by=["alertname", "site"])
    evs = [event(site="a", pump="1"), event("resolved", site="b", pump="2"), event("resolved", site="a", pump="3"),
           event(site="c", pump="4", top_fields=())]
    reqs = sink.requests(list(enumerate(evs, start=10)), [], now=T0)
    bodies = {json.loads(r.body)["groupLabels"]["site"]: (r, json.loads(r.body)) for r in reqs}
    assert set(bodies) == {"a", "b", "c"}
    ra, ba = bodies["a"]
    assert ra.entry_ids == (10, 12) and ba["status"] == "firing"  # firing if any alert in it fires
    assert [x["labels"]["pump_id"] for x in ba["alerts"]] == ["1", "3"]
    assert "pump_id" not in ba["commonLabels"] and ba["commonLabels"]["site"] == "a"
    assert bodies["b"][1]["status"] == "resolved"
    assert "top_fields" not in bodies["c"][1]["alerts"][0]["annotations"]
    assert group_key({"site": "a", "alertname": "SentinelAnomaly"}) == '{}:{alertname="SentinelAnomaly", site="a"}'


def test_same_alert_twice_in_a_round_waits_for_the_next_round():
    sink = webhook()
    fire, res, fire2 = event(), event("resolved", at=T0 + 5), event(at=T0 + 9)
    other = event(pump="p-99")
    (req,) = sink.requests([(1, fire), (2, res), (3, other), (4, fire2)], [], now=T0)
    assert req.entry_ids == (1, 3)
    (req2,) = sink.requests([(2, res), (4, fire2)], [], now=T0)
    assert req2.entry_ids == (2,)


def test_hmac_signature_verifies_over_exact_body():
    sink = webhook(hmac_secret="s3cret", headers={"Authorization": "Bearer x"})
    (req,) = sink.requests([(1, event())], [], now=T0)
    expected = hmac.new(b"s3cret", req.body, hashlib.sha256).hexdigest()
    assert req.headers[SIGNATURE_HEADER] == f"sha256={expected}"
    assert req.headers["Authorization"] == "Bearer x"
    assert SIGNATURE_HEADER not in webhook().requests([(1, event())], [], now=T0)[0].headers


def test_send_resolved_false_filters_resolved():
    sink = webhook(send_resolved=False)
    assert sink.accepts(event()) and not sink.accepts(event("resolved"))
    assert webhook().accepts(event("resolved"))


def test_payload_of_empty_common_annotations():
    body = payload("r", {}, [event(score=0.5), event(pump="x", score=0.7)], EXTERNAL)
    assert "score" not in body["commonAnnotations"] and body["groupKey"] == "{}:{}"


def test_event_json_round_trip_and_rfc3339():
    for ev in (event(), event("resolved", at=T0 + 0.001), event(score=float("nan"), top_fields=()),
               event("resolved", note="baseline shifted: the level held for 6h 0m was relearned")):
        back = event_from_json(event_to_json(ev))
        assert event_to_json(back) == event_to_json(ev)
        assert back.key == ev.key and back.fingerprint == ev.fingerprint and back.note == ev.note
    # an outbox entry written before events had a note reads back with none
    old = json.loads(event_to_json(event()))
    del old["note"]
    assert event_from_json(json.dumps(old)).note == ""
    assert rfc3339(T0) == "2026-11-29T10:14:05Z" and rfc3339(0) == "1970-01-01T00:00:00Z"


def test_alertmanager_body_firing_resolved_and_collapse():
    sink = AlertmanagerSink(AlertmanagerConfig(url="http://127.0.0.1:9093/", resend_interval=60), EXTERNAL)
    assert sink.url == "http://127.0.0.1:9093/api/v2/alerts"
    now = T0 + 30
    fire_a, fire_b, res_b = event(pump="a"), event(pump="b"), event("resolved", pump="b", at=T0 + 20)
    (req,) = sink.requests([(1, fire_a), (2, fire_b), (3, res_b)], [], now=now)
    body = json.loads(req.body)
    assert req.entry_ids == (1, 2, 3)
    assert [set(a) for a in body] == [{"labels", "annotations", "startsAt", "endsAt", "generatorURL"}] * 2
    by_pump = {a["labels"]["pump_id"]: a for a in body}
    assert by_pump["a"]["endsAt"] == rfc3339(now + VALIDITY_FACTOR * 60)
    assert by_pump["b"]["endsAt"] == rfc3339(T0 + 20)  # the newest state of b wins
    assert by_pump["a"]["labels"]["alertname"] == "SentinelAnomaly"
    assert by_pump["a"]["startsAt"] == rfc3339(T0)


def test_alertmanager_resend_adds_firing_set_and_sanitises_label_names():
    sink = AlertmanagerSink(AlertmanagerConfig(resend_interval=10), EXTERNAL)
    weird = AlertEvent(key=StreamKey.of("m", **{"host-name": "h1", "1zone": "z"}), status="firing", starts_at=T0,
                       ends_at=None, at=T0, score=1.0, threshold=0.5, error=2.0)
    (req,) = sink.requests([], [weird, event()], now=T0)
    body = json.loads(req.body)
    assert req.entry_ids == () and len(body) == 2
    assert {"host_name", "_1zone"} <= set(body[0]["labels"])
    assert sink.requests([], [], now=T0) == []


def test_sink_names_must_be_unique():
    with pytest.raises(ValueError, match="unique"):
        SinksConfig.model_validate({"webhooks": [{"name": "x", "url": "http://a"}],
                                    "alertmanagers": [{"name": "x"}]})
