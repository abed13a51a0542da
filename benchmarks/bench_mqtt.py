"""MQTT ingest: messages/s from a real mosquitto through the MQTT source to SourceBatches, at QoS 1.

A publisher process (paho, QoS 1, ``--streams`` topics ``plant/s<i%10>/m<i>``) sends
``--messages`` single-point payloads as fast as the broker acknowledges them; this process
runs :class:`~sentinel.sources.mqtt.MQTTSource` (persistent session, manual PUBACK after
each batch) and counts the samples handed to ``emit``. Also the decoder alone on the same
payloads (no network), for line protocol and JSON.

Run: ``.venv/bin/python benchmarks/bench_mqtt.py [--messages 20000] [--streams 100]``
Ends with one line: ``RESULT source_msgs_per_s=... decode_lp_msgs_per_s=... decode_json_msgs_per_s=...``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prometheus_client import CollectorRegistry

from sentinel.config.source_mqtt import MQTTSourceConfig
from sentinel.metrics import Metrics
from sentinel.sources.mqtt import MQTTSource, PayloadDecoder
from sentinel.sources.mqtt.source import selection_from
from sentinel.sources.selector import StreamSelector
from sentinel.state.ingestlog import IngestLog
from sentinel.types import SourceBatch
from tests.servers.mosquitto import mosquitto_server

T0 = int(time.time()) - 30 * 86400  # in the past: streams.max_future rejects points ahead of the clock

PUBLISHER = r"""
import sys, paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
port, n, streams = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
c = paho.Client(CallbackAPIVersion.VERSION2, client_id="", protocol=paho.MQTTv311)
c.max_inflight_messages_set(1000)
c.connect("127.0.0.1", port, 30)
c.loop_start()
infos = []
for i in range(n):
    s = i % streams
    infos.append(c.publish(f"plant/s{s % 10}/m{s}", f"pump temp={20 + i % 7},rpm={1000 + i % 13}i {(@T0@ + i // streams) * 10**9}", qos=1))
for info in infos:
    info.wait_for_publish(60)
c.disconnect(); c.loop_stop()
""".replace("@T0@", str(T0))


def payloads(n: int, streams: int) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
    lp, js = [], []
    for i in range(n):
        s = i % streams
        topic = f"plant/s{s % 10}/m{s}"
        lp.append((topic, f"pump temp={20 + i % 7},rpm={1000 + i % 13}i {(T0 + i // streams) * 10**9}".encode()))
        js.append((topic, json.dumps({"ts": T0 + i // streams, "temp": 20 + i % 7, "rpm": 1000 + i % 13}).encode()))
    return lp, js


def bench_decode(cfg: MQTTSourceConfig, msgs: list[tuple[str, bytes]]) -> float:
    d = PayloadDecoder(cfg, StreamSelector(selection_from(cfg)))
    best = 0.0
    for _ in range(3):
        out: list = []
        rej: dict[str, int] = {}
        t = time.perf_counter()
        for topic, p in msgs:
            d.decode(topic, p, 0.0, out, rej)
        best = max(best, len(msgs) / (time.perf_counter() - t))
        assert len(out) == len(msgs) and not rej, rej
    return best


async def bench_source(port: int, n: int, streams: int, wal_dir: str | None = None) -> tuple[float, int]:
    """``wal_dir``: log every batch in a write-ahead log (fsync always) before its PUBACK, as the daemon does."""
    cfg = MQTTSourceConfig(url=f"mqtt://127.0.0.1:{port}", topics=["plant/#"], topic_prefix="plant",
                           key_from_topic=["site", "machine"],
                           client_id="sentinel-bench-wal" if wal_dir else "sentinel-bench")
    src = MQTTSource(cfg, metrics=Metrics(CollectorRegistry()))
    if wal_dir is not None:
        src.receiver.log = IngestLog(wal_dir, fsync="always")
    got = 0
    batches = 0
    done = asyncio.Event()

    async def emit(b: SourceBatch) -> None:
        nonlocal got, batches
        got += len(b.samples)
        batches += 1
        if got >= n:
            done.set()

    task = asyncio.create_task(src.run(emit))
    for _ in range(100):
        if src.connected:
            break
        await asyncio.sleep(0.05)
    t = time.perf_counter()
    pub = await asyncio.create_subprocess_exec(sys.executable, "-c", PUBLISHER, str(port), str(n), str(streams))
    await asyncio.wait_for(done.wait(), 300)
    rate = n / (time.perf_counter() - t)
    await pub.wait()
    await src.stop()
    await task
    if src.receiver.log is not None:
        src.receiver.log.close()
    return rate, batches


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--streams", type=int, default=100)
    a = ap.parse_args()
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    mosq = subprocess.run([exe, "-h"], capture_output=True, text=True, check=False).stdout.split("\n")[0]
    print(f"# {platform.platform()} python {platform.python_version()} cpus={os.cpu_count()} {mosq}")
    print(f"# messages={a.messages} streams={a.streams} qos=1 one point per message")
    lp, js = payloads(a.messages, a.streams)
    cfg = dict(topic_prefix="plant", key_from_topic=["site", "machine"])
    d_lp = bench_decode(MQTTSourceConfig.model_validate(cfg), lp)
    d_js = bench_decode(MQTTSourceConfig.model_validate(
        {**cfg, "format": "json", "json": {"measurement": "pump", "fields": {"temp": "temp", "rpm": "rpm"},
                                            "timestamp_path": "ts"}}), js)
    print(f"# decoder alone: line protocol {d_lp:,.0f} msgs/s, JSON {d_js:,.0f} msgs/s")
    with mosquitto_server() as broker, tempfile.TemporaryDirectory() as wal_dir:
        rate, batches = asyncio.run(bench_source(broker.port, a.messages, a.streams))
        wal_rate, wal_batches = asyncio.run(bench_source(broker.port, a.messages, a.streams, wal_dir))
    print(f"# broker -> source -> emit: {rate:,.0f} msgs/s in {batches} batches "
          f"({a.messages / batches:.1f} messages per batch)")
    print(f"# with the write-ahead log (fsync always) before each PUBACK: {wal_rate:,.0f} msgs/s in {wal_batches} "
          f"batches ({wal_rate / rate:.2f}x)")
    print(f"RESULT source_msgs_per_s={rate:.0f} source_wal_msgs_per_s={wal_rate:.0f} wal_ratio={wal_rate / rate:.2f} "
          f"decode_lp_msgs_per_s={d_lp:.0f} decode_json_msgs_per_s={d_js:.0f} "
          f"messages={a.messages} streams={a.streams} batches={batches}")


if __name__ == "__main__":
    main()
