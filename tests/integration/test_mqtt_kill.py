"""``kill -9`` of ``sentinel run`` with an MQTT source loses no message the broker was told was received.

A real mosquitto and ``sentinel run`` as a subprocess (checkpoints an hour apart, so every
kill lands between receipt and checkpoint):

* killed after every message was acknowledged (PUBACK) and scored: on the old main the
  acknowledgement followed the in-memory queue, so all of them were gone after the restart
  (the broker had forgotten them); now they come back from the write-ahead log;
* killed by a failpoint after a batch reached the write-ahead log but before its PUBACK: the
  broker redelivers it and the stream rejects the copy, so each message is scored exactly once.

Every wait is bounded.
"""

from __future__ import annotations

import signal
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.daemon_helpers import SentinelProcess, config_dict, streams_api, wait_for
from tests.servers.mosquitto import MosquittoServer, mosquitto_server

pytestmark = [pytest.mark.mqtt, pytest.mark.timeout(300)]

T0 = int(time.time()) - 3600  # within max_future / max_age


def lp(i: int) -> str:
    return f"pump temp={20 + (i % 7) * 0.5},rpm={1000 + i}i {(T0 + i) * 10**9}"


def write(tmp: Path, broker: MosquittoServer) -> Path:
    cfg = config_dict(tmp)
    cfg["sources"] = [{"type": "mqtt", "name": "mqtt", "url": broker.url, "topics": ["plant/#"],
                       "topic_prefix": "plant", "key_from_topic": ["site", "machine"],
                       "client_id": "sentinel-kill-test", "backoff_initial": 0.1, "backoff_max": 0.5,
                       "connect_timeout": 5, "batch_max": 8}]
    path = tmp / "sentinel.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def metric(p: SentinelProcess, name: str, labels: dict[str, str]) -> float:
    try:
        with urllib.request.urlopen(p.base + "/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return -1.0
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


def ingested(p: SentinelProcess) -> float:
    return metric(p, "sentinel_samples_ingested_total", {"source": "mqtt"})


def rejected(p: SentinelProcess, reason: str) -> float:
    return metric(p, "sentinel_samples_rejected_total", {"reason": reason})


def last_ts(p: SentinelProcess) -> float | None:
    rows = streams_api(p.base)
    assert len(rows) == 1, rows
    return rows[0]["last_ts"]


def kill9(p: SentinelProcess) -> None:
    p.proc.send_signal(signal.SIGKILL)
    p.proc.wait(30)


def test_acknowledged_messages_survive_kill_9_before_any_checkpoint(tmp_path: Path) -> None:
    with mosquitto_server() as broker:
        cfg = write(tmp_path, broker)
        p = SentinelProcess(cfg, tmp_path / "run1.log")
        try:
            p.wait_ready()
            broker.publish("plant/s1/m1", [lp(i) for i in range(40)])
            wait_for(lambda: ingested(p) == 40, 60, "40 messages scored in the first life")
            time.sleep(0.5)  # the PUBACKs follow the fsync; let them reach the broker
            kill9(p)
        finally:
            p.close()
        assert not list((tmp_path / "state").glob("checkpoint-*.pt")), "the test needs a kill before a checkpoint"
        p2 = SentinelProcess(cfg, tmp_path / "run2.log")
        try:
            p2.wait_ready()
            # replayed from the write-ahead log before ready; a batch whose PUBACK was still in flight
            # comes again from the broker and is rejected by the stream (never scored twice)
            assert ingested(p2) == 40, p2.log()
            assert last_ts(p2) == T0 + 39
            broker.publish("plant/s1/m1", [lp(i) for i in range(40, 45)])
            wait_for(lambda: ingested(p2) == 45, 60, "live again after the restart")
            assert rejected(p2, "duplicate") + rejected(p2, "out_of_order") <= 8  # at most one batch again
            assert p2.terminate() == 0
        finally:
            p2.close()


def test_a_kill_between_the_log_append_and_the_puback_scores_each_message_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with mosquitto_server() as broker:
        cfg = write(tmp_path, broker)
        monkeypatch.setenv("SENTINEL_FAILPOINTS", "wal.append=3")  # dies inside the 3rd batch's append
        p = SentinelProcess(cfg, tmp_path / "run1.log")
        try:
            p.wait_ready()
            for i in range(30):  # one message at a time: several batches
                broker.publish("plant/s1/m1", [lp(i)])
            p.proc.wait(60)
            assert p.proc.returncode == -signal.SIGKILL, p.log()
        finally:
            p.close()
        monkeypatch.delenv("SENTINEL_FAILPOINTS")
        p2 = SentinelProcess(cfg, tmp_path / "run2.log")
        try:
            p2.wait_ready()
            wait_for(lambda: ingested(p2) == 30, 60, "every message scored once after the restart")
            assert last_ts(p2) == T0 + 29
            # the batch logged but not acknowledged came again from the broker and was refused
            assert rejected(p2, "duplicate") + rejected(p2, "out_of_order") >= 1
            time.sleep(1.0)
            assert ingested(p2) == 30
            assert p2.terminate() == 0
        finally:
            p2.close()
