"""Scaling out on NATS JetStream: end-to-end samples/s with 1 router + 1, 2, 4 scorers, and handover.

For each scorer count N, a fresh ``nats-server`` (JetStream, loopback, temp dir), one
``sentinel run --role router`` and N ``--role scorer`` processes (``cluster.scorers: N``) are
started; ``--streams`` streams warm up and train on ``--warm`` ticks; then ``--ticks`` bodies of
line protocol are POSTed to the router by ``--writers`` concurrent writers (writer w sends the
streams ``s % writers == w``, one tick per body, one body after another, as that many Telegraf
agents would) and the clock runs until the scorers together have scored every sample
(``sentinel_samples_ingested_total``). Reported per N: samples/s, efficiency (samples/s divided by
N times the 1-scorer figure), and CPU per sample of the router (parse, validate, publish) and of
each scorer (decode, score, checkpoint) from ``/proc/<pid>/stat``: the router parses once, a
scorer only decodes its own partitions, so its decode work per sample does not grow with N
(compare ``--shard I/N``, where every instance parses every body). ``decode_us_per_sample`` is
the scorer's message decoder alone, in this process.

Handover: one scorer owns both partitions of ``--handover-streams`` streams (P = 2), trained; a
second scorer joins (N 1 -> 2) and partition 1 moves. ``handover_s`` is the new owner's wait
for the old owner to stop, score what it had queued, checkpoint and release the partition, plus
loading and restoring that checkpoint (the new owner's ``scorer resumed seconds=``).

Run: ``.venv/bin/python benchmarks/bench_cluster.py [--streams 1000] [--ticks 100] [--scorers 1,2,4] [--writers 4]``
Ends with ``RESULT streams=... samples_per_s_1=... samples_per_s_2=... samples_per_s_4=...
efficiency_2=... efficiency_4=... router_cpu_us_per_sample=... scorer_cpu_us_per_sample_1=...
... decode_us_per_sample=... handover_streams=... handover_s=...``.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sentinel.cluster import codec
from sentinel.cluster.partitions import partition_of
from sentinel.types import Sample, StreamKey
from tests.cluster_helpers import T0, Proc, config, key, post, value
from tests.servers._proc import free_port, wait_until
from tests.servers.nats import nats_server

TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TICK  # utime + stime


def model(warm: int) -> dict:
    return {"model": {"hidden": 8, "window": 4, "device": "cpu"},
            "train": {"min_history": warm, "epochs": 2, "segments": 2, "bptt": 16},
            "streams": {"history_size": max(64, warm)}, "sinks": {"webhooks": []}}


def sub_body(i: int, streams: range) -> bytes:
    return "".join(f"machine,site=s{s % 2},machine=m{s:02d} temp={value(s, i, 0):.6f},vibration={value(s, i, 1):.6f} "
                   f"{T0 + i}\n" for s in streams).encode()


def send(base: str, bodies: list[bytes]) -> None:
    for b in bodies:
        for _ in range(100):  # bounded: a 503 (busy) is retried
            req = urllib.request.Request(f"{base}/write?db=sensors&precision=s", data=b, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    if r.status == 204:
                        break
            except OSError:
                time.sleep(0.1)


def ingested(procs: list[Proc]) -> float:
    return sum(p.metric("sentinel_samples_ingested_total") for p in procs)


def run_n(n: int, streams: int, warm: int, ticks: int, tmp: Path, writers: int) -> dict:
    with nats_server() as nats:
        extra = model(warm)
        router = Proc(config(tmp / "router", free_port(), "http://127.0.0.1:9/", nats=[nats.url], streams=streams,
                             extra_cluster={"partitions": 64, "checkpoint_interval": "10s"}, extra=extra), "router")
        scorers = [Proc(config(tmp / f"s{i}", free_port(), "http://127.0.0.1:9/", nats=[nats.url], streams=streams,
                               extra_cluster={"partitions": 64, "scorers": n, "index": i, "checkpoint_interval": "10s"},
                               extra=extra), "scorer")
                   for i in range(n)]
        try:
            for p in [router, *scorers]:
                p.wait_ready(timeout=120)
            for i in range(warm):
                post(router.base, i, streams)
            wait_until(lambda: ingested(scorers) >= streams * warm, timeout=300, interval=0.5, what="warm-up scored")
            wait_until(lambda: sum(len([r for r in p.streams() if r["state"] != "warming"]) for p in scorers)
                       == streams, timeout=600, interval=1.0, what="every stream trained")
            per = [[sub_body(i, range(w, streams, writers)) for i in range(warm, warm + ticks)] for w in range(writers)]
            c0 = {p.proc.pid: cpu_s(p.proc.pid) for p in [router, *scorers] if p.proc is not None}
            t0 = time.perf_counter()
            ts = [threading.Thread(target=send, args=(router.base, bs), daemon=True) for bs in per]
            for t in ts:
                t.start()
            for t in ts:
                t.join(600)
            sent = time.perf_counter() - t0
            wait_until(lambda: ingested(scorers) >= streams * (warm + ticks), timeout=600, interval=0.05,
                       what="every sample scored")
            dt = time.perf_counter() - t0
            c1 = {pid: cpu_s(pid) - c for pid, c in c0.items()}
            samples = streams * ticks
            assert router.proc is not None
            sc = [c1[p.proc.pid] for p in scorers if p.proc is not None]
            return {"n": n, "samples_per_s": samples / dt, "post_s": sent, "seconds": dt,
                    "router_cpu_us": c1[router.proc.pid] / samples * 1e6,
                    "scorer_cpu_us": sum(sc) / samples * 1e6, "scorer_cpu_s_each": [round(x, 2) for x in sc]}
        finally:
            for p in [router, *scorers]:
                p.close()


def handover(streams: int, warm: int, tmp: Path) -> tuple[int, float]:
    with nats_server() as nats:
        extra = model(warm)
        cc = {"partitions": 2, "handover_timeout": "120s"}
        router = Proc(config(tmp / "hrouter", free_port(), "http://127.0.0.1:9/", nats=[nats.url], streams=streams,
                             extra_cluster=cc, extra=extra), "router")
        s0 = Proc(config(tmp / "h0", free_port(), "http://127.0.0.1:9/", nats=[nats.url], streams=streams,
                         extra_cluster={**cc, "index": 0}, extra=extra), "scorer")
        s1 = None
        try:
            router.wait_ready(timeout=120)
            s0.wait_ready(timeout=120)
            for i in range(warm):
                post(router.base, i, streams)
            wait_until(lambda: len([r for r in s0.streams() if r["state"] != "warming"]) == streams,
                       timeout=600, interval=1.0, what="every stream trained")
            time.sleep(2.5)  # a checkpoint after training
            s1 = Proc(config(tmp / "h1", free_port(), "http://127.0.0.1:9/", nats=[nats.url], streams=streams,
                             extra_cluster={**cc, "index": 1}, extra=extra), "scorer")
            s1.wait_ready(timeout=300)
            m = re.search(r"scorer resumed .*?streams=(\d+) .*?seconds=([\d.]+)", s1.log(100_000))
            assert m, s1.log()
            moved = int(m.group(1))
            assert moved == sum(1 for s in range(streams) if partition_of(key(s), 2) == 1)
            return moved, float(m.group(2))
        finally:
            for p in [router, s0, *([s1] if s1 is not None else [])]:
                p.close()


def decode_us(streams: int) -> float:
    samples = [Sample(StreamKey.parse(key(s)), 1.0 * i, ("temp", "vibration"), (1.5, 2.5))
               for i in range(10) for s in range(streams)]
    blob = codec.encode(samples)
    t0 = time.perf_counter()
    for _ in range(5):
        codec.decode(blob)
    return (time.perf_counter() - t0) / (5 * len(samples)) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--warm", type=int, default=64)
    ap.add_argument("--ticks", type=int, default=100)
    ap.add_argument("--scorers", default="1,2,4")
    ap.add_argument("--writers", type=int, default=1, help="concurrent line-protocol writers (each its own streams)")
    ap.add_argument("--handover-streams", type=int, default=2000, help="over 2 partitions: ~half move")
    a = ap.parse_args()
    print(f"# {platform.node()} {platform.machine()} cpus={os.cpu_count()} load={os.getloadavg()[0]:.1f} "
          f"python={platform.python_version()}")
    print(f"# streams={a.streams} warm={a.warm} ticks={a.ticks} writers={a.writers} partitions=64")
    tmp = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    rows = []
    for n in (int(x) for x in a.scorers.split(",")):
        r = run_n(n, a.streams, a.warm, a.ticks, tmp / f"n{n}", a.writers)
        rows.append(r)
        print(f"# N={n}: {r['samples_per_s']:.0f} samples/s ({r['seconds']:.1f}s, posting {r['post_s']:.1f}s), "
              f"router {r['router_cpu_us']:.1f} us CPU/sample, scorers {r['scorer_cpu_us']:.1f} us CPU/sample "
              f"in all, CPU s each {r['scorer_cpu_s_each']}", flush=True)
    base = rows[0]["samples_per_s"]
    dec = decode_us(a.streams)
    moved, ho = handover(a.handover_streams, a.warm, tmp / "handover")
    print(f"# decode alone: {dec:.2f} us/sample; handover of a partition of {moved} streams: {ho:.2f}s")
    parts = [f"streams={a.streams}", f"ticks={a.ticks}", f"writers={a.writers}"]
    for r in rows:
        parts += [f"samples_per_s_{r['n']}={r['samples_per_s']:.0f}",
                  f"efficiency_{r['n']}={r['samples_per_s'] / (base * r['n']) if base else 0:.2f}",
                  f"scorer_cpu_us_per_sample_{r['n']}={r['scorer_cpu_us']:.1f}"]
    parts += [f"router_cpu_us_per_sample={rows[0]['router_cpu_us']:.1f}", f"decode_us_per_sample={dec:.2f}",
              f"handover_streams={moved}", f"handover_s={ho:.2f}"]
    print("RESULT " + " ".join(parts))


if __name__ == "__main__":
    main()
