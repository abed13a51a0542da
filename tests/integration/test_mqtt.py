"""The MQTT source against a real mosquitto on loopback, driven through the in-process daemon.

* line protocol and JSON payloads, stream keys from topic segments, end to end into the engine;
* the broker restarts: the source reconnects (RunningSource backoff) and ingests again;
* Sentinel restarts: QoS 1 messages published while it was down are delivered by the broker's
  persistent session, none lost and none twice;
* hostile payloads are counted by reason and the source goes on;
* username/password (from ${ENV}) accepted, a wrong password refused and retried.

Every wait is bounded (``wait_for``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from sentinel.types import StreamKey
from tests.daemon_helpers import RunningDaemon, config_dict, running_daemon, streams_api, wait_for
from tests.servers.mosquitto import MosquittoServer, mosquitto_server

pytestmark = pytest.mark.mqtt

T0 = int(time.time()) - 86400  # in the past: streams.max_future rejects points ahead of the clock


def mqtt_source(server: MosquittoServer, name: str = "mqtt", **kw: Any) -> dict[str, Any]:
    src = {"type": "mqtt", "name": name, "url": server.url, "topics": ["plant/#"], "topic_prefix": "plant",
           "key_from_topic": ["site", "machine"], "client_id": f"sentinel-test-{name}",
           "backoff_initial": 0.1, "backoff_max": 0.5, "connect_timeout": 5}
    src.update(kw)
    return src


def write(tmp: Path, sources: list[dict[str, Any]]) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = config_dict(tmp)
    cfg["sources"] = sources
    path = tmp / "sentinel.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def ingested(d: RunningDaemon, source: str = "mqtt") -> float:
    return d.metric("sentinel_samples_ingested_total", {"source": source}) or 0.0


def rejected(d: RunningDaemon, reason: str) -> float:
    return d.metric("sentinel_samples_rejected_total", {"reason": reason}) or 0.0


def up(d: RunningDaemon, source: str = "mqtt") -> bool:
    return d.metric("sentinel_source_up", {"source": source}) == 1


def lp(i: int, v: float | None = None) -> str:
    return f"pump temp={v if v is not None else 20 + i * 0.1},rpm={1000 + i}i {(T0 + i) * 10**9}"


def test_line_protocol_and_json_end_to_end_with_keys_from_topics(tmp_path: Path) -> None:
    with mosquitto_server() as broker:
        cfg = write(tmp_path, [
            mqtt_source(broker, "lp", topics=["plant/+/+/lp"]),
            mqtt_source(broker, "js", topics=["plant/+/+/json"], format="json",
                        json={"measurement": "boiler", "fields": {"temp": "s.temp", "p": "s.p"},
                              "tags": {"fw": "fw"}, "timestamp_path": "ts"}),
        ])
        with running_daemon(cfg) as d:
            wait_for(lambda: up(d, "lp") and up(d, "js"), 30, "both sources connected")
            for m in ("m1", "m2"):
                broker.publish(f"plant/s1/{m}/lp", [lp(i) for i in range(10)])
                broker.publish(f"plant/s2/{m}/json", [json.dumps({"ts": T0 + i, "fw": "v3",
                                                                  "s": {"temp": 70 + i, "p": 2.5}})
                                                      for i in range(10)])
            wait_for(lambda: ingested(d, "lp") == 20 and ingested(d, "js") == 20, 30, "40 samples ingested")
            eng = d.daemon.engine
            want = {StreamKey.of("pump", site="s1", machine="m1"), StreamKey.of("pump", site="s1", machine="m2"),
                    StreamKey.of("boiler", site="s2", machine="m1", fw="v3"),
                    StreamKey.of("boiler", site="s2", machine="m2", fw="v3")}
            assert set(eng.index) == want, sorted(map(str, eng.index))
            assert len(streams_api(d.url)) == 4
            assert all(rejected(d, r) == 0 for r in ("out_of_order", "duplicate", "mqtt_bad_json"))
            for r in ("mqtt_oversize", "mqtt_bad_json", "mqtt_topic", "lp_bad_tag"):  # present from the start
                assert d.metric("sentinel_samples_rejected_total", {"reason": r}) == 0.0, r


def test_reconnects_after_the_broker_restarts(tmp_path: Path) -> None:
    with mosquitto_server() as broker, running_daemon(write(tmp_path, [mqtt_source(broker)])) as d:
        wait_for(lambda: up(d), 30, "source connected")
        broker.publish("plant/s1/m1", [lp(i) for i in range(5)])
        wait_for(lambda: ingested(d) == 5, 30, "5 samples before the restart")
        broker.restart()
        wait_for(lambda: (d.metric("sentinel_source_errors_total", {"source": "mqtt", "kind": "unavailable"})
                          or 0) >= 1, 30, "the lost connection counted")
        wait_for(lambda: up(d), 30, "source connected again")
        broker.publish("plant/s1/m1", [lp(i) for i in range(5, 10)])
        wait_for(lambda: ingested(d) == 10, 30, "5 more samples after the restart")
        # At least once: a message whose PUBACK the broker had not stored when it stopped comes again; its
        # stream rejects it (same or older timestamp: duplicate / out_of_order), so nothing is scored twice.
        assert rejected(d, "duplicate") + rejected(d, "out_of_order") <= 5
        assert ingested(d) == 10


def test_nothing_lost_at_qos1_across_a_sentinel_restart(tmp_path: Path) -> None:
    with mosquitto_server() as broker:
        cfg = write(tmp_path, [mqtt_source(broker)])
        with running_daemon(cfg) as d:
            wait_for(lambda: up(d), 30, "source connected")
            broker.publish("plant/s1/m1", [lp(i) for i in range(10)])
            wait_for(lambda: ingested(d) == 10, 30, "10 samples in the first run")
        # Sentinel is down: the broker keeps the session and queues these QoS 1 messages.
        broker.publish("plant/s1/m1", [lp(i) for i in range(10, 30)])
        broker.publish("plant/s2/m9", [lp(i) for i in range(30)])
        with running_daemon(cfg) as d2:
            wait_for(lambda: ingested(d2) == 50, 30, "all 50 queued samples after the restart")
            plugin = d2.daemon.sources[0].plugin
            assert plugin.stats["sessions_resumed"] == 1
            broker.publish("plant/s1/m1", [lp(30)])
            wait_for(lambda: ingested(d2) == 51, 30, "live again")
            for r in ("duplicate", "out_of_order"):
                assert rejected(d2, r) == 0, r
            assert set(d2.daemon.engine.index) == {StreamKey.of("pump", site="s1", machine="m1"),
                                                  StreamKey.of("pump", site="s2", machine="m9")}


def test_hostile_payloads_are_counted_by_reason_and_the_source_goes_on(tmp_path: Path) -> None:
    with mosquitto_server() as broker:
        cfg = write(tmp_path, [
            mqtt_source(broker, "js", topics=["plant/#", "other/#"], format="json", max_payload_bytes=1024,
                        json={"fields": {"temp": "temp"}, "timestamp_path": "ts"}),
            mqtt_source(broker, "lp", topics=["lp/#"], topic_prefix="", key_from_topic=[]),
        ])
        with running_daemon(cfg) as d:
            wait_for(lambda: up(d, "js") and up(d, "lp"), 30, "sources connected")
            broker.publish("plant/s1/m1", [
                b"{not json", b"\xff\xfe garbage", b"[" * 500 + b"]" * 500,  # bad JSON (x3)
                json.dumps({"temp": 1, "pad": "x" * 2000}),  # oversize
                json.dumps({"temp": "hot", "ts": T0}),  # non-numeric
                json.dumps({"temp": 1, "ts": "yesterday"}),  # bad timestamp
                json.dumps({"temp": 21.5, "ts": T0 + 1}),  # good
            ])
            broker.publish("other/s1/m1", [json.dumps({"temp": 1, "ts": T0})])  # no 'plant' prefix
            broker.publish("plant/s1", [json.dumps({"temp": 1, "ts": T0})])  # too few topic segments
            broker.publish("lp/x", ["pump", "pump,=x v=1", 'pump s="only text"', lp(0)])
            wait_for(lambda: ingested(d, "js") == 1 and ingested(d, "lp") == 1
                     and rejected(d, "lp_bad_tag") == 1 and rejected(d, "mqtt_topic") == 2, 30,
                     "the good messages ingested and the bad ones counted")
            assert {r: rejected(d, r) for r in ("mqtt_bad_json", "mqtt_oversize", "mqtt_non_numeric",
                                                  "mqtt_bad_timestamp", "mqtt_topic", "lp_missing_fields",
                                                  "lp_bad_tag")} == {
                "mqtt_bad_json": 3, "mqtt_oversize": 1, "mqtt_non_numeric": 2, "mqtt_bad_timestamp": 1,
                "mqtt_topic": 2, "lp_missing_fields": 1, "lp_bad_tag": 1}
            assert up(d, "js") and up(d, "lp")
            assert (d.metric("sentinel_source_errors_total", {"source": "js", "kind": "error"}) or 0) == 0
            broker.publish("plant/s1/m1", [json.dumps({"temp": 22.0, "ts": T0 + 2})])
            wait_for(lambda: ingested(d, "js") == 2, 30, "still ingesting")


def test_username_password_from_env_and_a_refused_login(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTINEL_TEST_MQTT_PASSWORD", "s3cret")
    with mosquitto_server(username="sentinel", password="s3cret") as broker:
        cfg = write(tmp_path, [
            mqtt_source(broker, "good", username="sentinel", password="${SENTINEL_TEST_MQTT_PASSWORD}"),
            mqtt_source(broker, "bad", username="sentinel", password="wrong"),
        ])
        with running_daemon(cfg) as d:
            wait_for(lambda: up(d, "good"), 30, "the source with the right password connected")
            broker.publish("plant/s1/m1", [lp(0)])
            wait_for(lambda: ingested(d, "good") == 1, 30, "ingested with auth")
            wait_for(lambda: (d.metric("sentinel_source_errors_total", {"source": "bad", "kind": "error"})
                              or 0) >= 1, 30, "the refused login counted as an error")
            assert not up(d, "bad") and ingested(d, "bad") == 0


def test_tls_with_the_brokers_ca_and_a_refused_unknown_ca(tmp_path: Path) -> None:
    with mosquitto_server(tls=True) as broker:
        assert broker.url.startswith("mqtts://")
        cfg = write(tmp_path, [
            mqtt_source(broker, "tls", tls={"ca_file": str(broker.ca_file)}),
            mqtt_source(broker, "noca"),  # the system CAs do not know the test CA
        ])
        with running_daemon(cfg) as d:
            wait_for(lambda: up(d, "tls"), 30, "TLS source connected")
            broker.publish("plant/s1/m1", [lp(0), lp(1)])
            wait_for(lambda: ingested(d, "tls") == 2, 30, "ingested over TLS")
            wait_for(lambda: (d.metric("sentinel_source_errors_total", {"source": "noca", "kind": "error"})
                              or 0) >= 1, 30, "the unverifiable certificate counted as an error")
            assert not up(d, "noca")
