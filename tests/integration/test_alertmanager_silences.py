"""Alertmanager silences read as normal feedback, against a real Alertmanager."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from sentinel.config import SentinelConfig
from sentinel.config.sinks import AlertmanagerConfig
from sentinel.feedback.service import FeedbackService
from sentinel.feedback.silences import SilenceReader
from sentinel.metrics import Metrics
from sentinel.runtime.engine import Engine
from sentinel.types import Sample, StreamKey
from tests.servers.alertmanager import running_alertmanager

pytestmark = [pytest.mark.alertmanager, pytest.mark.timeout(120)]

A, B = StreamKey.of("pump", site="a", pump_id="p1"), StreamKey.of("pump", site="b", pump_id="p2")


@pytest.fixture(scope="module")
def am():
    with running_alertmanager() as server:
        yield server


def silence(am_url: str, matchers: list[dict], comment: str) -> str:
    now = datetime.now(UTC)
    body = {"matchers": matchers, "startsAt": now.isoformat(), "endsAt": (now + timedelta(hours=1)).isoformat(),
            "createdBy": "ops", "comment": comment}
    req = urllib.request.Request(f"{am_url}/api/v2/silences", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())["silenceID"]


def m(name: str, value: str, regex: bool = False, equal: bool = True) -> dict[str, Any]:
    return {"name": name, "value": value, "isRegex": regex, "isEqual": equal}


async def _direct(fn: Any, *args: Any) -> Any:
    return fn(*args)


def test_a_sentinel_normal_silence_is_normal_feedback_for_the_streams_it_matches(am) -> None:
    sid = silence(am.url, [m("alertname", "SentinelAnomaly"), m("site", "a")], "sentinel:normal defrost cycle")
    silence(am.url, [m("site", "b")], "maintenance")  # no prefix: an ordinary silence
    silence(am.url, [m("alertname", "SentinelAnomaly")], "sentinel:normal everything")  # no stream label
    t0 = time.time()
    e = Engine(SentinelConfig())
    e.process([Sample(k, t0 + i * 0.01, ("p",), (float(i % 4),)) for i in range(30) for k in (A, B)])
    registry = CollectorRegistry()
    svc = FeedbackService(lambda: e, _direct, Metrics(registry))
    cfgs = [AlertmanagerConfig(url=am.url, read_silences=True), AlertmanagerConfig(name="off", url=am.url)]
    reader = SilenceReader(cfgs, svc, _direct, lambda: e, clock=lambda: t0 + 60)
    assert [s.name for s in reader.sinks] == ["alertmanager"]

    assert asyncio.run(reader.poll_once()) == 1
    (fb,) = e.feedback
    assert (fb["stream"], fb["label"], fb["source"]) == (str(A), "normal", f"silence:{sid}")
    assert fb["comment"] == "sentinel:normal defrost cycle" and fb["to"] == t0 + 60
    assert asyncio.run(reader.poll_once()) == 0  # read once
    assert registry.get_sample_value("sentinel_feedback_total", {"label": "normal"}) == 1


def test_an_unreachable_alertmanager_is_retried_next_round() -> None:
    from tests.servers._proc import free_port

    e = Engine(SentinelConfig())
    svc = FeedbackService(lambda: e, _direct, Metrics(CollectorRegistry()))
    reader = SilenceReader([AlertmanagerConfig(url=f"http://127.0.0.1:{free_port()}", read_silences=True,
                                               timeout=1)], svc, _direct, lambda: e)
    assert asyncio.run(reader.poll_once()) == 0 and reader.errors == 1
