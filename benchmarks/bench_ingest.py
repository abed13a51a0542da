"""Line-protocol ingest: lines/s from HTTP receipt to Samples, through the /write handler.

Posts batches of ``--batch`` lines (default 5000, Telegraf's default) to a real aiohttp
server in this process running :class:`~sentinel.sources.receiver.LineProtocolReceiver`;
each body is parsed and turned into Samples (multivariate streams, 1,000 series) and
handed to a sink. The baseline is the full-grammar scanner alone (``parse`` +
selection) on the same bodies, in the same process.

Run: ``.venv/bin/python benchmarks/bench_ingest.py [--batches 60] [--batch 5000]``
Ends with one line: ``RESULT lines_per_s=... batch=5000 ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiohttp import ClientSession, web

from sentinel.config.source_influxdb import InfluxDBReceiverConfig
from sentinel.lineprotocol import parse
from sentinel.sources.receiver import LineProtocolReceiver, Pushed
from sentinel.sources.selector import Selection, StreamSelector


def make_bodies(batches: int, batch: int, series: int) -> list[bytes]:
    t0 = 1_700_000_000_000_000_000
    bodies, k = [], 0
    for _ in range(batches):
        lines = []
        for _ in range(batch):
            i = k % series
            step = k // series
            lines.append(f"pump,site=plant-{i % 7},pump_id=p-{i} temp={20 + (k % 97) * 0.1:.2f},"
                         f"vibration={(k % 13) * 0.01:.3f},current={k % 50}i {t0 + step * 1_000_000_000}")
            k += 1
        bodies.append(("\n".join(lines) + "\n").encode())
    return bodies


async def bench_http(bodies: list[bytes], batch: int) -> tuple[float, int]:
    got = [0]

    async def sink(p: Pushed) -> bool:
        got[0] += len(p.outcome.samples)
        return True

    rec = LineProtocolReceiver(InfluxDBReceiverConfig(), StreamSelector(Selection()), sink)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.add_routes(rec.routes())
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}/write?db=sensors&precision=ns"
    async with ClientSession() as s:
        async with s.post(url, data=bodies[0]) as r:  # warm-up (series cache, connections)
            assert r.status == 204, await r.text()
        got[0] = 0
        t = time.perf_counter()
        for b in bodies:
            async with s.post(url, data=b) as r:
                assert r.status == 204
        dt = time.perf_counter() - t
    await runner.cleanup()
    return dt, got[0]


def bench_scanner(bodies: list[bytes]) -> tuple[float, int]:
    sel = StreamSelector(Selection())
    n = 0
    t = time.perf_counter()
    for b in bodies:
        pts, _ = parse(b.decode())
        out, rej = [], {}
        for p in pts:
            sel.add_point(p.measurement, p.tags, p.fields, p.ts or 0, out, rej)
        n += len(out)
    return time.perf_counter() - t, n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=60)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--series", type=int, default=1000)
    args = ap.parse_args()
    bodies = make_bodies(args.batches, args.batch, args.series)
    lines = args.batches * args.batch
    dt, n = asyncio.run(bench_http(bodies, args.batch))
    assert n == lines, (n, lines)
    base_dt, bn = bench_scanner(bodies[: max(1, args.batches // 6)])
    base_lps = bn / base_dt
    lps = lines / dt
    print(f"http receiver: {lines} lines in {dt:.3f}s = {lps:,.0f} lines/s ({args.batch} lines per POST)")
    print(f"full scanner only (baseline): {base_lps:,.0f} lines/s")
    print(f"machine: {platform.processor() or platform.machine()}, cpus={os.cpu_count()}, python {platform.python_version()}")
    print(f"RESULT lines_per_s={lps:.0f} batch={args.batch} series={args.series} "
          f"scanner_lines_per_s={base_lps:.0f} ratio_vs_scanner={lps / base_lps:.2f} target=200000 "
          f"meets_target={int(lps >= 200_000)}")


if __name__ == "__main__":
    main()
