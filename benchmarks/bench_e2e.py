"""End to end: line-protocol samples/s from HTTP arrival to scored, thresholded and exported,
tick-to-alert latency p50/p99, and resident bytes per stream, at 1k, 10k and 100k streams.

What runs
---------
Each configuration runs in a fresh child process (so RSS is that configuration's own):
the real :class:`~sentinel.runtime.daemon.Daemon` with one ``influxdb`` source in
``receiver`` mode (``POST /write``), default model (LSTM, hidden 32, window 8), DSPOT
thresholds, the alert state machine, the notifier (durable SQLite outbox, no sinks) and
the per-stream Prometheus collector. A **sender in a second process** (multiprocessing,
spawn) posts line protocol, 5,000 lines per POST, one tick = one sample per stream,
sequentially on one keep-alive connection, so a stream's samples arrive in order.

1. *Create*: tick 0 creates every stream through the normal path (warming).
2. *Make ready* (instead of training 100k models): on the scoring thread, each stream gets
   random LSTM weights (N(0, 0.2), fixed seed), normaliser mean 10 / std 1; its state is
   run through 48 samples of its normal signal and the DSPOT threshold is calibrated on
   those errors (what ``Engine.apply_training`` does after a real training). The stream
   is then ``ready`` and scores every sample from here on.
3. *Sustained*: the sender posts ``--ticks`` worth of samples as fast as the daemon takes
   them (backpressure: the receiver answers only once a body is queued). Throughput =
   samples / (first POST start .. the moment ``sentinel_samples_ingested_total`` reaches
   the total, i.e. all scored, thresholded, alert state advanced and visible to /metrics).
4. *Latency*: ticks paced at ``min(100k, 0.7 x sustained)`` samples/s; each tick spikes 5
   fresh streams. Latency = ``Notifier.submit`` receiving the stream's first firing event after
   that tick (a wrapper installed on the daemon's notifier, daemon code untouched) minus the
   start of that tick's first POST (CLOCK_MONOTONIC is system-wide, so the two processes agree).

Memory: (RSS after the sustained phase - RSS of the started daemon with no streams) / streams.

Run: ``.venv/bin/python benchmarks/bench_e2e.py [--quick]`` (``--quick``: 1k and 10k only).
Each configuration runs with the write-ahead log on (``server.wal``, fsync ``always``: the
receiver answers once the body is durable) and off (``--wal on,off``, the default), so the log's
cost is the ratio of the two lines. Each prints ``RESULT streams=... wal=on|off
samples_per_s=... p50_alert_ms=... p99_alert_ms=... rss_bytes_per_stream=...``; the last line,
``RESULT wal_cost ...``, gives the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import multiprocessing as mp
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LINES_PER_POST = 5000
SPIKES_PER_TICK = 5
CALIB_STEPS = 96  # --calib-steps
CALIB_TEMPLATE = 0  # --fast-ready: streams per make-ready chunk whose thresholds are fitted (0 = all)
MAKE_READY_CHUNK = 50_000
LATENCY_TICKS = 60  # --latency-ticks: at most this many paced ticks in the latency phase
T0 = 1_700_000_000  # first tick's timestamp (s)


def signal_value(stream: int, k: int) -> float:
    """Normal signal of ``stream`` at tick ``k`` (deterministic, cheap): 10 + sine + small ripple."""
    return 10.0 + math.sin(2 * math.pi * (k + stream % 20) / 20.0) + 0.05 * math.sin(k * 1.7 + stream)


def peak_rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


# =============================================================================== sender process


def tick_lines(streams: int, k: int, spikes: frozenset[int] = frozenset()) -> list[str]:
    ts = (T0 + k) * 1_000_000_000
    return [f"pump,site=s{i % 16},pump=p{i} temp={(60.0 if i in spikes else signal_value(i, k + CALIB_STEPS)):.4f} {ts}"
            for i in range(streams)]


def bodies_of(lines: list[str]) -> list[bytes]:
    return [("\n".join(lines[j:j + LINES_PER_POST]) + "\n").encode() for j in range(0, len(lines), LINES_PER_POST)]


def sender_main(url: str, streams: int, ticks: int, conn, calib_steps: int = 96, latency_ticks: int = 60
                ) -> None:  # runs in the child process
    global CALIB_STEPS, LATENCY_TICKS
    CALIB_STEPS, LATENCY_TICKS = calib_steps, latency_ticks
    from aiohttp import ClientSession, TCPConnector

    async def post_all(s: ClientSession, bodies: list[bytes]) -> None:
        for b in bodies:
            for _attempt in range(100):
                async with s.post(url, data=b) as r:
                    if r.status == 204:
                        break
                    if r.status == 503:
                        await asyncio.sleep(0.05)
                        continue
                    raise RuntimeError(f"POST answered {r.status}: {await r.text()}")

    async def go() -> None:
        async with ClientSession(connector=TCPConnector(limit=1)) as s:
            await post_all(s, bodies_of(tick_lines(streams, 0)))
            # pre-generate the sustained phase while the daemon makes the streams ready
            lines: list[str] = []
            for k in range(1, ticks + 1):
                lines.extend(tick_lines(streams, k))
            sustained = bodies_of(lines)
            del lines
            conn.send(("created", None))
            conn.recv()  # "go"
            t_first = time.monotonic()
            await post_all(s, sustained)
            t_last = time.monotonic()
            conn.send(("sustained", (t_first, t_last)))
            del sustained
            _msg, rate = conn.recv()  # "latency", samples/s
            interval = streams / rate
            n_ticks = min(LATENCY_TICKS, max(12, min(60, int(8.0 / interval))))
            n_ticks = min(n_ticks, streams // SPIKES_PER_TICK)
            plan, next_spike = [], 0
            for j in range(n_ticks):
                spk = frozenset(range(next_spike, next_spike + SPIKES_PER_TICK))
                next_spike += SPIKES_PER_TICK
                plan.append((ticks + 1 + j, spk))
            prepared = [(k, spk, bodies_of(tick_lines(streams, k, spk))) for k, spk in plan]
            starts: list[tuple[float, list[int]]] = []
            t_next = time.monotonic()
            for _k, spk, bodies in prepared:
                now = time.monotonic()
                if now < t_next:
                    await asyncio.sleep(t_next - now)
                t_tick = time.monotonic()
                await post_all(s, bodies)
                starts.append((t_tick, sorted(spk)))
                t_next = t_tick + interval
            conn.send(("latency", (starts, interval)))

    asyncio.run(go())


# =============================================================================== daemon side (one config)


def make_ready(engine, now: float, seed: int = 0) -> int:
    """Give every warming stream random weights, run its state in, calibrate its threshold; mark it ready."""
    import numpy as np
    import torch

    gen = torch.Generator().manual_seed(seed)
    done = 0
    for g in engine.groups.values():
        C = g.capacity
        todo = np.flatnonzero(g.a["alive"][:C] & ~g.a["ready"][:C])
        # in chunks: a million streams' float32 weights at once would be 17 GB of temporaries
        for i in range(0, len(todo), MAKE_READY_CHUNK):
            done += _make_ready(engine, g, todo[i:i + MAKE_READY_CHUNK], gen, now)
    return done


def workers_cpu(d) -> float:
    """CPU seconds (user + system) the daemon's ingest workers have used so far."""
    pool = getattr(d, "parse_pool", None)
    total = 0.0
    for pid in pool.pids if pool is not None else []:
        try:
            with open(f"/proc/{pid}/stat") as f:
                st = f.read().rsplit(")", 1)[1].split()
            total += (int(st[11]) + int(st[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return total


def bare_step_rate(engine, rounds: int = 5) -> float:
    """Stream-ticks/s of ``Bank.step`` over every stream of the F = 1 group (best of ``rounds``)."""
    import numpy as np
    import torch

    g = engine.groups[1]
    slots = np.flatnonzero(g.a["alive"][:g.capacity])
    x = torch.full((len(slots), 1), 10.0)
    g.bank.step(slots, x)
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        g.bank.step(slots, x)
        best = min(best, time.perf_counter() - t)
    return len(slots) / best


def _make_ready(engine, g, sl, gen, now: float) -> int:
    import numpy as np
    import torch

    from sentinel.runtime.engine import BURN_IN

    n, F = len(sl), g.F
    params = {k: torch.randn((n, *g.bank.t[k].shape[1:]), generator=gen) * 0.2 for k in ("W", "b", "D", "d")}
    g.bank.load(sl, params, torch.full((n, F), 10.0), torch.ones(n, F))
    g.bank.reset_state(sl)
    streams = np.array([int(str(g.keys[s]).split("pump=p")[1].split(",")[0]) for s in sl])[:, None]
    ks = np.arange(CALIB_STEPS)[None, :]  # signal indices 0..CALIB_STEPS-1 precede tick 0's
    xs = (10.0 + np.sin(2 * np.pi * (ks + streams % 20) / 20.0) + 0.05 * np.sin(ks * 1.7 + streams))
    xs = np.repeat(xs.astype(np.float32)[..., None], F, axis=2)
    _fe, err = g.bank.run_sequence(sl, xs)
    err = err.numpy()
    if CALIB_TEMPLATE and n > CALIB_TEMPLATE:
        # --fast-ready: the first CALIB_TEMPLATE streams of the chunk are calibrated, the others take their
        # threshold state in turn (the streams differ only in phase; a per-stream SPOT fit of a million
        # streams is minutes of Python)
        g.thr.calibrate(sl[:CALIB_TEMPLATE], [e[BURN_IN:] for e in err[:CALIB_TEMPLATE]])
        src = sl[np.arange(n) % CALIB_TEMPLATE]
        for arr in g.thr.a.values():
            arr[sl[CALIB_TEMPLATE:]] = arr[src[CALIB_TEMPLATE:]]
    else:
        g.thr.calibrate(sl, [e[BURN_IN:] for e in err])
    calib = err[:, BURN_IN:].mean(1)
    g.a["calib_err"][sl] = calib
    g.a["err_ewma"][sl] = calib
    g.a["ready"][sl] = True
    g.a["rewarm"][sl] = 0
    g.a["trained_at"][sl] = now
    engine.model_version += 1
    g.a["version"][sl] = engine.model_version
    return n


def warm_up(engine, streams: int, samples: int) -> int:
    """History warm-up as from a source's history query: ``samples`` per stream merged into every warming
    stream's ring (``Engine.load_history``), in chunks of streams. Returns the samples taken."""
    from sentinel.types import Sample, StreamKey

    taken = 0
    for lo in range(0, streams, 10_000):
        batch = []
        for i in range(lo, min(streams, lo + 10_000)):
            key = StreamKey.of("pump", site=f"s{i % 16}", pump=f"p{i}")
            batch.extend(Sample(key, float(T0 - samples + k), ("temp",), (signal_value(i, k),)) for k in range(samples))
        taken += engine.load_history(batch, create=False)
    return taken


def group_bytes(engine) -> dict:
    """Resident bytes of every per-slot store, per live stream (the arrays as allocated, capacity included)."""
    out = {"bank": 0, "arrays": 0, "history": 0, "charts": 0, "thresholds": 0, "alerts": 0, "capacity": 0}
    for g in engine.groups.values():
        out["bank"] += sum(t.numel() * t.element_size() for t in g.bank.t.values())
        for k, v in g.a.items():
            out["history" if k.startswith("hist_") else "charts" if k.startswith("ch_") else "arrays"] += v.nbytes
        out["thresholds"] += sum(v.nbytes for v in g.thr.a.values())
        if getattr(g, "lthr", None) is not None:  # the level statistic's own tail (detect.level_tail)
            out["thresholds"] += sum(v.nbytes for v in g.lthr.a.values())
        out["alerts"] += sum(v.nbytes for v in g.alerts.a.values())
        out["capacity"] += g.bank.capacity
    return out


def run_one(streams: int, ticks: int, wal: str = "on", path: str = "columns", weight_dtype: str = "default",
            history_size: int = 64, history_dtype: str = "default", max_streams: int = 1_000_000,
            warmup: int = 0, checkpoint: str = "copy", reserve: bool = False, ingest_workers: int = 0) -> dict:
    import numpy as np
    import torch
    from prometheus_client import CollectorRegistry

    if path == "objects":  # the landed path: every body parsed line by line into Sample objects
        from sentinel.sources.bulk import Bulk

        Bulk.parse = lambda *a, **k: None  # type: ignore[method-assign]

    from sentinel.config import SentinelConfig
    from sentinel.runtime.daemon import Daemon
    from sentinel.runtime.memory import pin_mmap_threshold

    malloc_pin = pin_mmap_threshold()  # as `sentinel run` does (only with SENTINEL_MALLOC_PIN=1)
    from tests.servers._proc import free_port

    torch.set_num_threads(1)  # as `sentinel run` does (model.score_threads)
    tmp = Path(tempfile.mkdtemp(prefix="sentinel-bench-e2e-"))
    port = free_port()
    cfg = SentinelConfig.model_validate({
        "server": {"listen": f"127.0.0.1:{port}", "ingest_workers": ingest_workers,
                   "wal": {"enabled": wal == "on", "dir": str(tmp / "wal"), "max_bytes": 1 << 34}},
        "sources": [{"type": "influxdb", "name": "rx", "mode": "receiver", "fields": ["temp"],
                     "max_streams": 1_000_000, "receiver": {"max_pending_batches": 64}}],
        "streams": {"max_streams": max_streams, "history_size": history_size, "history_lookback": 0,
                    **({"history_dtype": history_dtype} if history_dtype != "default" else {})},
        "train": {"min_history": 1_000_000, "retrain_interval": 0, "drift_retrain": False, "progress": False},
        "alerts": {"for": 0, "for_ticks": 0, "cooldown": 0},
        "state": {"dir": str(tmp / "state"), "checkpoint_interval": 86400},
        "sinks": {"outbox": {"path": str(tmp / "outbox")}, "log_alerts": False},
        "logging": {"level": "error", "format": "text"},
        "model": {"device": "cpu", **({"weight_dtype": weight_dtype} if weight_dtype != "default" else {})},
    })
    import logging

    logging.getLogger().setLevel(logging.ERROR)
    from sentinel.sources.selector import StreamSelector

    parse_s = [0.0]  # time the event loop spends parsing bodies (the rest of its time: HTTP, queues)
    orig_parse = StreamSelector.parse_bytes

    def timed_parse(self, *a, **k):
        t = time.perf_counter()
        try:
            return orig_parse(self, *a, **k)
        finally:
            parse_s[0] += time.perf_counter() - t

    StreamSelector.parse_bytes = timed_parse  # type: ignore[method-assign]
    registry = CollectorRegistry()
    d = Daemon(cfg, registry=registry, inline_training=True)
    alerts: list[tuple[float, str, str]] = []
    result: dict = {"streams": streams, "wal": wal, "path": path, "weight_dtype": cfg.model.weight_dtype,
                    "history_size": history_size, "history_dtype": cfg.streams.history_dtype, "max_streams": max_streams,
                    "ingest_workers": ingest_workers, "malloc_pin": int(malloc_pin)}

    counter = d.metrics.samples_ingested.labels("rx")

    def ingested() -> float:  # the counter itself: a registry-wide collect every 5 ms cost the daemon CPU
        return counter._value.get()

    async def wait_ingested(n: float, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while ingested() < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"ingested {ingested()} of {n}")
            await asyncio.sleep(0.005)
        return time.monotonic()

    async def main() -> None:
        await d.start()
        assert d.notifier is not None
        orig = d.notifier.submit

        def submit(events):  # the instrumentation point: the alert reaches the notifier
            t = time.monotonic()
            for ev in events:
                alerts.append((t, str(ev.key), ev.status))
            return orig(events)

        d.notifier.submit = submit  # type: ignore[method-assign]
        await asyncio.sleep(0.5)
        rss0 = rss_bytes()
        if reserve:
            await d.thread.call(lambda: d.engine._group(1).reserve(streams))
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        sender = ctx.Process(target=sender_main, args=(f"http://127.0.0.1:{port}/write?db=sensors&precision=ns",
                                                       streams, ticks, child, CALIB_STEPS, LATENCY_TICKS),
                             daemon=True)
        sender.start()
        loop = asyncio.get_running_loop()
        recv = lambda: loop.run_in_executor(None, parent.recv)  # noqa: E731
        try:
            t_created = time.monotonic()
            msg, _ = await asyncio.wait_for(recv(), 1200)
            assert msg == "created"
            await wait_ingested(streams, 600)
            result["created_s"] = round(time.monotonic() - t_created, 2)
            if warmup:
                t = time.perf_counter()
                taken = await d.thread.call(warm_up, d.engine, streams, warmup)
                result["warmup_s"] = round(time.perf_counter() - t, 2)
                result["warmup_samples"] = taken
            t = time.perf_counter()
            ready = await d.thread.call(make_ready, d.engine, time.time())
            result["make_ready_s"] = round(time.perf_counter() - t, 2)
            assert ready == streams, (ready, streams)
            rss1 = rss_bytes()
            base = ingested()
            score_s0 = registry.get_sample_value("sentinel_score_batch_seconds_sum") or 0.0
            parse_s0, cpu0 = parse_s[0], os.times()
            score_cpu0 = await d.thread.call(time.thread_time)  # the scoring thread's own CPU seconds
            wcpu0 = workers_cpu(d)
            total = streams * ticks
            parent.send(("go", None))
            t_done = await wait_ingested(base + total, 600)
            score_cpu = await d.thread.call(time.thread_time) - score_cpu0
            msg, (t_first, t_last) = await asyncio.wait_for(recv(), 60)
            sps = total / (t_done - t_first)
            cpu1 = os.times()
            result.update(samples_per_s=round(sps), sustained_samples=total, sustained_s=round(t_done - t_first, 3),
                          post_s=round(t_last - t_first, 3),
                          # where the sustained phase's time went: scoring (the engine thread's ticks), parsing
                          # (the event loop), and this process's CPU seconds (user + system, both threads)
                          score_busy_s=round((registry.get_sample_value("sentinel_score_batch_seconds_sum") or 0.0)
                                             - score_s0, 3),
                          parse_busy_s=round(parse_s[0] - parse_s0, 3), score_cpu_s=round(score_cpu, 3),
                          cpu_s=round(cpu1.user + cpu1.system - cpu0.user - cpu0.system, 3),
                          workers_cpu_s=round(workers_cpu(d) - wcpu0, 3))  # the ingest workers' CPU seconds
            rss2 = rss_bytes()
            rejected = sum(s.value for m in registry.collect() if m.name == "sentinel_samples_rejected"
                           for s in m.samples if s.name.endswith("_total"))
            result["rejected"] = int(rejected)
            # latency phase
            rate = min(100_000.0, 0.7 * sps)
            alerts.clear()
            n_before = ingested()
            parent.send(("latency", rate))
            msg, (starts, interval) = await asyncio.wait_for(recv(), 600)
            sent = sum(1 for _ in starts) * streams
            await wait_ingested(n_before + sent, 120)
            await asyncio.sleep(0.2)
            fired: dict[str, list[float]] = {}
            for t, k, st in alerts:
                if st == "firing":
                    fired.setdefault(k, []).append(t)
            lat, missed = [], 0
            for t_tick, spk in starts:
                for i in spk:
                    key = f"pump,pump=p{i},site=s{i % 16}"
                    after = [t for t in fired.get(key, ()) if t >= t_tick]
                    if after:  # its first firing after its spiked tick (a later re-fire is not its latency)
                        lat.append(min(after) - t_tick)
                    else:
                        missed += 1
            lat_ms = np.array(lat) * 1000
            result.update(
                latency_rate=round(rate), latency_ticks=len(starts), tick_interval_ms=round(interval * 1000, 1),
                alerts=len(lat), missed_alerts=missed, false_alerts=len(set(fired) - {
                    f"pump,pump=p{i},site=s{i % 16}" for _, spk in starts for i in spk}),
                p50_alert_ms=round(float(np.percentile(lat_ms, 50)), 1) if len(lat) else None,
                p99_alert_ms=round(float(np.percentile(lat_ms, 99)), 1) if len(lat) else None,
                p90_alert_ms=round(float(np.percentile(lat_ms, 90)), 1) if len(lat) else None,
                max_alert_ms=round(float(lat_ms.max()), 1) if len(lat) else None,
                rss_base=rss0, rss_ready=rss1, rss_after=rss2,
                rss_bytes_per_stream=round((rss2 - rss0) / streams),
                bank_slot_bytes=sum(d.engine.groups[1].bank.bytes_per_stream().values()),
                **{f"{k}_bytes_per_stream" if k != "capacity" else "slot_capacity":
                   (round(v / streams) if k != "capacity" else v) for k, v in group_bytes(d.engine).items()},
            )
            # one Prometheus scrape of everything (per-stream series for every stream)
            import urllib.request

            t = time.perf_counter()
            body = await loop.run_in_executor(None, lambda: urllib.request.urlopen(
                f"http://127.0.0.1:{port}/metrics", timeout=120).read())
            result["scrape_s"] = round(time.perf_counter() - t, 3)
            result["scrape_bytes"] = len(body)
            # a checkpoint: the longest the scoring thread was kept from scoring is its longest engine-thread
            # step (the fuzzy checkpoint copies the state in chunks between ticks; the write runs beside them)
            # a probe stands in for the ticks: the longest it waited for (and ran on) the engine thread
            probe, copying = [0.0], [True]

            async def probe_loop() -> None:
                while copying[0]:
                    t = time.perf_counter()
                    await d.thread.call_now(lambda: None)
                    probe[0] = max(probe[0], time.perf_counter() - t)
                    await asyncio.sleep(0.002)

            pause = [0.0]  # write and sink: the engine.snapshot() call on the engine thread
            if checkpoint == "copy":
                prober = asyncio.create_task(probe_loop())
                t = time.perf_counter()
                await d.checkpoint()
                result["checkpoint_s"] = round(time.perf_counter() - t, 3)
                copying[0] = False
                await prober
                result["checkpoint_probe_max_s"] = round(probe[0], 4)
                last = d.checkpointer.last
                result.update(checkpoint_pause_s=round(last.max_step_s, 4), checkpoint_steps=last.steps,
                              checkpoint_copy_s=round(last.copy_s, 3), checkpoint_write_s=round(last.write_s, 3))
            elif checkpoint == "sink":
                # serialised as the checkpoint file would be, into a counting sink (a checkpoint of a million
                # streams is larger than this machine's free disk)
                class Sink(io.RawIOBase):
                    n = 0

                    def writable(self):
                        return True

                    def write(self, b):
                        Sink.n += len(b)
                        return len(b)

                def write_sink():
                    t0 = time.perf_counter()
                    meta, tensors = d.engine.snapshot()
                    pause[0] = time.perf_counter() - t0
                    torch.save({"meta": json.dumps(meta), "tensors": tensors}, Sink())

                t = time.perf_counter()
                await d.thread.call(write_sink)
                result["checkpoint_bytes"] = Sink.n
            elif checkpoint == "write":
                # the write alone, from views of the engine's arrays (nothing scores meanwhile): the landed
                # checkpointer's copy of every tensor would need the engine's memory twice over
                def write_views():
                    t0 = time.perf_counter()
                    meta, tensors = d.engine.snapshot()
                    meta.update(cursors={}, saved_at=time.time())
                    pause[0] = time.perf_counter() - t0
                    return d.checkpointer.write(meta, tensors)

                t = time.perf_counter()
                await d.thread.call(write_views)
            if checkpoint != "copy":
                result["checkpoint_s"] = round(time.perf_counter() - t, 3)
                result["checkpoint_pause_s"] = round(pause[0], 3)
            result["checkpoint_mode"] = checkpoint
            result["rss_peak"] = peak_rss()
            if checkpoint == "copy":  # (write/sink: sizes where a second copy of the state would not fit)
                # the same run's one-go snapshot (the checkpoint before issue 10): the engine thread stops
                # while every array is cloned
                t = time.perf_counter()
                await d.thread.call(lambda: d.checkpointer.snapshot(d.engine, {}) and None)
                result["checkpoint_oneshot_pause_s"] = round(time.perf_counter() - t, 3)
            # the bare scoring step of the same bank, same process, daemon idle (the target's yardstick)
            result["step_ticks_per_s"] = round(await d.thread.call(bare_step_rate, d.engine))
        finally:
            sender.join(timeout=10)
            if sender.is_alive():
                sender.terminate()
            await d.stop()

    try:
        asyncio.run(main())
    finally:  # the log and checkpoints of a 100k run take ~6 GB of the shared disk
        shutil.rmtree(tmp, ignore_errors=True)
    return result


# =============================================================================== driver


def default_ticks(streams: int) -> int:
    """Enough samples for a sustained figure (>= ~400k samples, >= 5 ticks)."""
    return max(5, min(400, 400_000 // streams))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="1k and 10k streams only")
    ap.add_argument("--streams", type=int, nargs="*", help="override the configurations")
    ap.add_argument("--ticks", type=int, help="sustained ticks (default: ~400k samples per configuration)")
    ap.add_argument("--wal", default="on,off",
                    help="write-ahead log settings to run each configuration with (server.wal.enabled, fsync always)")
    ap.add_argument("--path", default="columns,objects",
                    help="intake paths to run each configuration with: columns (the columnar hot path) and objects "
                         "(the landed per-line Sample path, the baseline of the same run)")
    ap.add_argument("--weight-dtype", default="default",
                    help="model.weight_dtype of every configuration (default: the config's default)")
    ap.add_argument("--history-size", type=int, default=64, help="streams.history_size (default 64)")
    ap.add_argument("--history-dtype", default="default",
                    help="streams.history_dtype: float32 | float16 (default: the config's default)")
    ap.add_argument("--max-streams", type=int, default=1_000_000,
                    help="streams.max_streams (0 = the configuration's stream count: slots grow to exactly it)")
    ap.add_argument("--warmup", type=int, default=0,
                    help="history warm-up: samples per stream loaded through Engine.load_history before "
                         "the streams are made ready, timed (0 = none)")
    ap.add_argument("--checkpoint", default="copy", choices=("copy", "write", "sink"),
                    help="copy: the daemon's checkpoint (snapshot copied, written beside scoring); write: only the "
                         "write, from views (for sizes whose copy would not fit in memory); sink: serialised into a "
                         "counting sink, not to disk (for sizes larger than the free disk)")
    ap.add_argument("--calib-steps", type=int, default=96, help="samples each stream's state is run through "
                    "when it is made ready (96)")
    ap.add_argument("--fast-ready", action="store_true", help="fit the thresholds of 1,000 streams per 50k and "
                    "copy them to the others (for a million streams)")
    ap.add_argument("--latency-ticks", type=int, default=60, help="at most this many paced ticks in the latency "
                    "phase (at a million streams each is ~25 s)")
    ap.add_argument("--reserve", action="store_true",
                    help="slots for every stream allocated before tick 0 (Group.reserve: no growth copies)")
    ap.add_argument("--ingest-workers", default="0",
                    help="server.ingest_workers settings to run each configuration with (0: parse in the daemon)")
    ap.add_argument("--ingest-workers-one", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--run-one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--wal-one", default="on", help=argparse.SUPPRESS)
    ap.add_argument("--path-one", default="columns", help=argparse.SUPPRESS)
    args = ap.parse_args()
    global CALIB_STEPS, CALIB_TEMPLATE, LATENCY_TICKS
    CALIB_STEPS, CALIB_TEMPLATE, LATENCY_TICKS = args.calib_steps, 1000 if args.fast_ready else 0, args.latency_ticks
    if args.run_one:
        res = run_one(args.run_one, args.ticks or default_ticks(args.run_one), args.wal_one, args.path_one,
                      args.weight_dtype, args.history_size, args.history_dtype, args.max_streams or args.run_one,
                      args.warmup, args.checkpoint, args.reserve, args.ingest_workers_one)
        print("JSON " + json.dumps(res), flush=True)
        return
    configs = args.streams or ([1_000, 10_000] if args.quick else [1_000, 10_000, 100_000])
    rows = []
    for s, wal, path, iw in ((s, w, p, i) for s in configs for w in args.wal.split(",") for p in args.path.split(",")
                             for i in args.ingest_workers.split(",")):
        cmd = [sys.executable, __file__, "--run-one", str(s), "--wal-one", wal, "--path-one", path,
               "--weight-dtype", args.weight_dtype, "--history-size", str(args.history_size),
               "--history-dtype", args.history_dtype, "--max-streams", str(args.max_streams),
               "--warmup", str(args.warmup), "--checkpoint", args.checkpoint, "--calib-steps", str(args.calib_steps),
               "--latency-ticks", str(args.latency_ticks), "--ingest-workers-one", iw] + (
               ["--reserve"] if args.reserve else []) + (["--fast-ready"] if args.fast_ready else []) + (
            ["--ticks", str(args.ticks)] if args.ticks else [])
        t = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=7200)
        line = next((ln for ln in p.stdout.splitlines() if ln.startswith("JSON ")), None)
        if p.returncode != 0 or line is None:
            print(f"streams={s}: failed ({p.returncode})\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}", file=sys.stderr)
            continue
        r = json.loads(line[5:])
        r["wall_s"] = round(time.perf_counter() - t, 1)
        rows.append(r)
    print(f"machine: {platform.processor() or platform.machine()}, cpus={os.cpu_count()}, "
          f"python {platform.python_version()}; sender in a second process; 5000 lines/POST; hidden 32, window 8")
    hdr = ("streams", "wal", "path", "samples/s", "CPU us/sample", "p50 ms", "p99 ms", "alerts", "missed", "RSS B/stream",
           "bank B/stream", "rejected", "scrape s", "ckpt pause s", "wall s")
    print(" | ".join(f"{h:>13}" for h in hdr))
    for r in rows:
        vals = (r["streams"], r["wal"], r["path"], r["samples_per_s"], round(r["cpu_s"] / r["sustained_samples"] * 1e6, 2),
                r["p50_alert_ms"], r["p99_alert_ms"], r["alerts"], r["missed_alerts"], r["rss_bytes_per_stream"],
                r["bank_bytes_per_stream"], r["rejected"], r["scrape_s"], r["checkpoint_pause_s"], r["wall_s"])
        print(" | ".join(f"{v:>13}" for v in vals))
    for r in rows:
        print(f"RESULT streams={r['streams']} wal={r['wal']} path={r['path']} weight_dtype={r['weight_dtype']} "
              f"ingest_workers={r['ingest_workers']} malloc_pin={r.get('malloc_pin')} workers_cpu_us_per_sample="
              f"{r['workers_cpu_s'] / r['sustained_samples'] * 1e6:.2f} "
              f"samples_per_s={r['samples_per_s']} cpu_us_per_sample={r['cpu_s'] / r['sustained_samples'] * 1e6:.2f} "
              f"score_busy_s={r['score_busy_s']} score_cpu_s={r.get('score_cpu_s')} parse_busy_s={r['parse_busy_s']} sustained_s={r['sustained_s']} "
              f"checkpoint_pause_s={r['checkpoint_pause_s']} checkpoint_s={r['checkpoint_s']} "
              f"checkpoint_steps={r.get('checkpoint_steps')} checkpoint_probe_max_s={r.get('checkpoint_probe_max_s')} "
              f"checkpoint_oneshot_pause_s={r.get('checkpoint_oneshot_pause_s')} "
              f"make_ready_s={r['make_ready_s']} rss_peak={r['rss_peak']} scrape_s={r['scrape_s']} p50_alert_ms={r['p50_alert_ms']} "
              f"history_size={r['history_size']} history_dtype={r['history_dtype']} slot_capacity={r['slot_capacity']} "
              f"created_s={r['created_s']} warmup_s={r.get('warmup_s')} warmup_samples={r.get('warmup_samples')} "
              f"checkpoint_mode={r['checkpoint_mode']} "
              + " ".join(f"{k}={r[k]}" for k in ("bank_bytes_per_stream", "history_bytes_per_stream",
                                                  "charts_bytes_per_stream", "arrays_bytes_per_stream",
                                                  "thresholds_bytes_per_stream", "alerts_bytes_per_stream")) + " "
              f"p99_alert_ms={r['p99_alert_ms']} rss_bytes_per_stream={r['rss_bytes_per_stream']} "
              f"latency_rate={r['latency_rate']} alerts={r['alerts']} missed_alerts={r['missed_alerts']} "
              f"false_alerts={r['false_alerts']} step_ticks_per_s={r['step_ticks_per_s']} "
              f"e2e_vs_step={r['samples_per_s'] / r['step_ticks_per_s']:.3f} target_samples_per_s=100000 "
              f"meets_target={int(r['samples_per_s'] >= 100_000 and (r['p99_alert_ms'] or 1e9) < 1000)}")
    by_path: dict = {}
    iw0 = int(args.ingest_workers.split(",")[0])  # the ratios below compare runs of this worker setting
    for r in rows:
        if r["ingest_workers"] == iw0:
            by_path.setdefault((r["streams"], r["wal"]), {})[r["path"]] = r
    ratios = []
    for (n, wal), pr in sorted(by_path.items()):
        if "columns" in pr and "objects" in pr and pr["objects"]["samples_per_s"]:
            c, o = pr["columns"], pr["objects"]
            ratios.append(f"s{n}_{wal}_columns_vs_objects={c['samples_per_s'] / o['samples_per_s']:.2f} "
                          f"s{n}_{wal}_cpu_per_sample_objects_vs_columns={o['cpu_s'] / o['sustained_samples'] / (c['cpu_s'] / c['sustained_samples']):.2f} "
                          f"s{n}_{wal}_p99_columns_ms={c['p99_alert_ms']} s{n}_{wal}_p99_objects_ms={o['p99_alert_ms']}")
    if ratios:
        print("RESULT columns_vs_objects " + " ".join(ratios))
    by_workers: dict = {}
    for r in rows:
        by_workers.setdefault((r["streams"], r["wal"], r["path"]), {})[r["ingest_workers"]] = r
    wr = []
    for (n, wal, path), pr in sorted(by_workers.items()):
        if 0 in pr and len(pr) > 1:
            for k, r in sorted(pr.items()):
                if k:
                    wr.append(f"s{n}_{wal}_{path}_workers{k}_vs_0={r['samples_per_s'] / pr[0]['samples_per_s']:.2f} "
                              f"s{n}_{wal}_{path}_workers{k}_p99_ms={r['p99_alert_ms']}")
    if wr:
        print("RESULT ingest_workers " + " ".join(wr))
    pairs = {}
    for r in rows:
        if r["path"] == args.path.split(",")[0] and r["ingest_workers"] == iw0:
            pairs.setdefault(r["streams"], {})[r["wal"]] = r
    cost = []
    for n, pr in sorted(pairs.items()):
        if "on" in pr and "off" in pr and pr["off"]["samples_per_s"]:
            on, off = pr["on"], pr["off"]
            cost.append(f"s{n}_on_vs_off={on['samples_per_s'] / off['samples_per_s']:.3f} "
                        f"s{n}_p99_on_ms={on['p99_alert_ms']} s{n}_p99_off_ms={off['p99_alert_ms']}")
    if cost:
        print("RESULT wal_cost " + " ".join(cost))


if __name__ == "__main__":
    main()
