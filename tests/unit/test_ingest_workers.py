"""Ingest workers (``server.ingest_workers``): the same outcomes, rejections, engine state and order as
parsing in-process; a dead worker loses nothing and is replaced; no worker outlives its pool or daemon."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.columns import Columns, join
from sentinel.config import load_config_text
from sentinel.config.source_influxdb import InfluxDBReceiverConfig
from sentinel.lineprotocol import PRECISION_NS
from sentinel.runtime.engine import Engine
from sentinel.sources.parsepool import ParsePool, Turns
from sentinel.sources.receiver import LineProtocolReceiver, Pushed, pooled_outcome, time_bounds
from sentinel.sources.selector import Selection, StreamSelector
from sentinel.state.ingestlog import IngestLog
from tests.unit.test_columnar import CONFIG, NOW_NS, body, make_ready, outcome, selections, state, verdicts

ROOT = str(Path(__file__).resolve().parents[2])


def pool_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SENTINEL_FAILPOINTS"}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def loop_pool():
    loop = asyncio.new_event_loop()
    pool = ParsePool(2, env=pool_env())
    loop.run_until_complete(pool.start())
    assert all(w.ready for w in pool.workers)
    yield loop, pool
    loop.run_until_complete(pool.close())
    loop.close()


async def pooled_parse(pool: ParsePool, ch: int, sel: StreamSelector, data: bytes, precision: str, now_ns: int):
    """What a pooled receiver does with a body: the worker's columns, else the in-process parse."""
    lo, hi = time_bounds(sel.sel, now_ns)
    parsed = await pool.submit(ch, data, PRECISION_NS[precision], now_ns, lo, hi, sel.sel.max_fields)
    got = pooled_outcome(sel, parsed) if parsed is not None else None
    return (got if got is not None else sel.parse_bytes(data, precision, now_ns)), got is not None


@settings(max_examples=150, deadline=None)
@given(selections, st.lists(body(), min_size=1, max_size=4), st.sampled_from(["s", "ns"]),
       st.sampled_from([b"", b"\n\xff\xfe bad utf-8"]))
def test_worker_parse_agrees_with_the_in_process_parse(loop_pool, sel: Selection, bodies: list[str],
                                                       precision: str, junk: bytes) -> None:
    loop, pool = loop_pool
    plain, pooled = StreamSelector(sel), StreamSelector(sel)
    ch = pool.channel(pooled._bulk)
    now = NOW_NS if precision == "s" else 1_700_000_030

    async def go() -> None:
        for i, b in enumerate(bodies * 2):  # the second pass: heads known, so the workers take clean bodies
            data = b.encode() + (junk if i == 1 else b"")
            got, _by_worker = await pooled_parse(pool, ch, pooled, data, precision, now)
            assert outcome(got) == outcome(plain.parse_bytes(data, precision, now))
            assert pooled.stream_count == plain.stream_count

    loop.run_until_complete(go())


def test_a_familiar_body_is_parsed_by_a_worker_into_the_same_columns(loop_pool) -> None:
    loop, pool = loop_pool
    sel = Selection(measurements=frozenset({"m"}), max_future_ns=600 * 10**9)
    plain, pooled = StreamSelector(sel), StreamSelector(sel)
    ch = pool.channel(pooled._bulk)
    data = ("\n".join(f"m,a={i} x={i}.5,y={i}i {1_700_000_000 + (7 - i)}" for i in range(8))
            + "\nother,a=1 x=1 1700000000\n").encode()

    async def go() -> list[bool]:
        seen = []
        for _ in range(4):
            got, by_worker = await pooled_parse(pool, ch, pooled, data, "s", NOW_NS)
            ref = plain.parse_bytes(data, "s", NOW_NS)
            assert outcome(got) == outcome(ref)
            seen.append(by_worker)
        assert isinstance(got.samples, Columns) and got.samples.table is pooled._bulk.table
        # the table replaced (the selector's head cache cleared): an answer of the old generation is not used
        pooled._bulk.reset()
        pooled._heads.clear()
        got, by_worker = await pooled_parse(pool, ch, pooled, data, "s", NOW_NS)
        assert not by_worker and outcome(got) == outcome(plain.parse_bytes(data, "s", NOW_NS))
        return seen

    assert loop.run_until_complete(go()) == [False, True, True, True]  # first sight: in-process (new heads)


# ----------------------------------------------------------------------------- through the receiver


class Sink:
    def __init__(self) -> None:
        self.got: list[Pushed] = []

    async def __call__(self, p: Pushed) -> bool:
        self.got.append(p)
        return True


def bodies_for_engine() -> list[bytes]:
    """Ticks of 8 streams, with new streams, bad lines, invalid UTF-8, duplicates and late samples mixed in."""
    rng = np.random.default_rng(5)
    out = []
    for t in range(1, 30):
        n = 6 if t < 10 else 8  # two streams appear at tick 10
        lines = [f"pump,id={i} temp={rng.standard_normal() * (8 if t % 11 == 0 and i == 2 else 1):.4f} "
                 f"{1_700_000_000 + t}" for i in range(n)]
        if t % 4 == 0:
            lines.append(f"pump,id=1 temp=0.5 {1_700_000_000 + t - 2}")  # out of order (engine rejects)
        if t % 5 == 0:
            lines.append(f"pump,id=0 temp=0.25 {1_700_000_000 + t}")  # duplicate
        if t % 7 == 0:
            lines.append("pump,id=3 temp=oops 1")  # a bad line: the whole body in-process
        if t % 9 == 0:
            lines.append(f"pump,id=4 temp=inf {1_700_000_000 + t}")  # non-finite: a parse rejection
        data = ("\n".join(lines) + "\n").encode()
        if t == 13:
            data += b"pump,id=5 temp=\xff 1\n"
        out.append(data)
    return out


async def post_all(rec: LineProtocolReceiver, bodies: list[bytes]) -> list[tuple[int, str]]:
    app = web.Application()
    app.add_routes(rec.routes())
    answers = []
    async with TestClient(TestServer(app)) as c:
        for b in bodies:
            r = await c.post("/write?db=d&precision=s", data=b)
            answers.append((r.status, await r.text()))
    return answers


def test_receiver_with_workers_leaves_the_engine_in_the_same_state(tmp_path) -> None:
    cfg = load_config_text(CONFIG, source="test.yaml")
    bodies = bodies_for_engine()
    results = []
    for workers in (0, 2):
        sink = Sink()
        sel = StreamSelector(Selection(fields=("temp",)))
        rec = LineProtocolReceiver(InfluxDBReceiverConfig(), sel, sink, clock=lambda: 1_700_000_100.0)

        async def go(rec=rec, workers=workers) -> tuple[list, ParsePool | None]:
            pool = None
            if workers:
                pool = ParsePool(workers, env=pool_env())
                await pool.start()
                rec.use_pool(pool)
            try:
                return await post_all(rec, bodies), pool
            finally:
                if pool is not None:
                    await pool.close()

        answers, _pool = asyncio.run(go())
        e = Engine(cfg)
        outs = []
        for i, p in enumerate(sink.got):
            outs.append((sorted(p.outcome.rejected.items()), verdicts(e.process(p.outcome.samples))))
            if i == 0:
                make_ready(e)
        results.append((answers, outs, state(e), e.rejected, [type(p.outcome.samples) for p in sink.got]))
    (a0, o0, s0, r0, _t0), (a2, o2, s2, r2, t2) = results
    assert a0 == a2 and {s for s, _ in a0} == {204, 400}
    assert o0 == o2
    assert r0 == r2 and r0["out_of_order"] > 0 and r0["duplicate"] > 0
    parse_rejects = {k for rej, _v in o0 for k, _n in rej}
    assert {"lp_bad_field_value", "invalid_utf8"} <= parse_rejects
    assert s0.keys() == s2.keys()
    for k in s0:
        np.testing.assert_array_equal(s0[k], s2[k], err_msg=k)
    assert t2.count(Columns) > len(bodies) // 2  # most bodies came back from a worker as columns


def test_a_worker_that_dies_loses_nothing_and_is_replaced(tmp_path) -> None:
    restarts = []
    log = IngestLog(tmp_path / "wal", fsync="always")
    sink = Sink()
    sel = StreamSelector(Selection(fields=("temp",)))
    rec = LineProtocolReceiver(InfluxDBReceiverConfig(), sel, sink, clock=lambda: 1_700_000_100.0, log=log)
    bodies = [(f"pump,id=1 temp={k}.5 {1_700_000_000 + k}\npump,id=2 temp={k}.25 {1_700_000_000 + k}\n").encode()
              for k in range(8)]

    async def go() -> tuple[list, ParsePool]:
        # every worker dies at its 3rd job (the failpoint is armed in the workers only)
        pool = ParsePool(1, env=pool_env(SENTINEL_FAILPOINTS="ingest.worker=3"), on_restart=lambda: restarts.append(1))
        await pool.start()
        rec.use_pool(pool)
        first = pool.pids[0]
        try:
            answers = await post_all(rec, bodies[:4])
            for _ in range(500):  # bounded: the replacement comes up
                if pool.workers and all(w.ready for w in pool.workers) and pool.pids[0] != first:
                    break
                await asyncio.sleep(0.02)
            answers += await post_all(rec, bodies[4:])
            return answers, pool
        finally:
            await pool.close()

    answers, pool = asyncio.run(go())
    assert [s for s, _ in answers] == [204] * 8
    assert pool.restarts >= 1 and len(restarts) == pool.restarts and pool.fallbacks >= 1
    got = [(str(s.key), s.ts, s.values) for p in sink.got for s in p.outcome.samples]
    want = [(f"pump,id={i}", float(1_700_000_000 + k), (k + (0.5 if i == 1 else 0.25),)) for k in range(8)
            for i in (1, 2)]
    assert got == want  # every sample once, in order, the dead worker's body parsed in-process
    assert [rec_.body for _pos, rec_ in log.replay()] == bodies  # and every acknowledged body is in the log
    log.close()


def test_bodies_are_handed_on_in_the_order_they_were_read_whatever_order_workers_answer() -> None:
    sink = Sink()
    sel = StreamSelector(Selection(fields=("temp",)))
    rec = LineProtocolReceiver(InfluxDBReceiverConfig(), sel, sink, clock=lambda: 1_700_000_100.0)

    class Reversed:  # a pool whose answers come in the reverse order of the submissions
        def __init__(self) -> None:
            self.futs: list[asyncio.Future] = []

        def channel(self, bulk) -> int:
            return 1

        def submit(self, *a, **k) -> asyncio.Future:
            f = asyncio.get_running_loop().create_future()
            self.futs.append(f)
            return f

    async def go() -> list:
        fake = Reversed()
        rec.use_pool(fake)  # type: ignore[arg-type]
        tasks = [asyncio.create_task(rec._write_pooled(f"pump,id=1 temp={k} {1_700_000_000 + k}\n".encode(),
                                                      "d", "", "s", 1_700_000_100.0, 1_700_000_100 * 10**9))
                 for k in range(5)]
        for _ in range(100):  # bounded: every write submitted
            if len(fake.futs) == 5:
                break
            await asyncio.sleep(0)
        for f in reversed(fake.futs):
            f.set_result(None)  # "parse in-process", last submission first
            await asyncio.sleep(0)
        return [r.status for r in await asyncio.gather(*tasks)]

    assert asyncio.run(go()) == [204] * 5
    assert [s.ts for p in sink.got for s in p.outcome.samples] == [float(1_700_000_000 + k) for k in range(5)]


def test_turns_let_holders_through_in_ticket_order_and_skip_given_up_tickets() -> None:
    async def go() -> list[int]:
        turns, order = Turns(), []
        tickets = [turns.take() for _ in range(4)]

        async def holder(t: int) -> None:
            await turns.wait(t)
            order.append(t)
            turns.done(t)

        tasks = [asyncio.create_task(holder(t)) for t in reversed(tickets[1:])]
        await asyncio.sleep(0)
        turns.done(tickets[0])  # the first one gave up before its turn
        await asyncio.gather(*tasks)
        return order

    assert asyncio.run(go()) == [1, 2, 3]


# ----------------------------------------------------------------------------- shutdown


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_close_stops_every_worker() -> None:
    async def go() -> list[int]:
        pool = ParsePool(2, env=pool_env())
        await pool.start()
        pids = pool.pids
        assert len(pids) == 2 and all(alive(p) for p in pids)
        await pool.close()
        await pool.close()  # twice is fine
        return pids

    pids = asyncio.run(go())
    assert not any(alive(p) for p in pids)


def test_workers_exit_when_their_daemon_is_killed() -> None:
    script = ("import asyncio, sys\n"
              "from sentinel.sources.parsepool import ParsePool\n"
              "async def main():\n"
              "    pool = ParsePool(2)\n"
              "    await pool.start()\n"
              "    print(*pool.pids, flush=True)\n"
              "    await asyncio.sleep(120)\n"
              "asyncio.run(main())\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                            env=pool_env())
    try:
        assert proc.stdout is not None
        pids = [int(x) for x in proc.stdout.readline().split()]
        assert len(pids) == 2 and all(alive(p) for p in pids)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 30  # bounded: they see EOF on stdin and exit
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(alive(p) for p in pids)


def test_columns_of_a_worker_join_with_in_process_columns_of_the_same_table(loop_pool) -> None:
    loop, pool = loop_pool
    sel = StreamSelector(Selection(fields=("temp",)))
    ch = pool.channel(sel._bulk)
    data = [f"pump,id={i} temp=1.5 {1_700_000_000 + k}\n".encode() for k in range(3) for i in range(2)]

    async def go() -> list:
        return [(await pooled_parse(pool, ch, sel, d, "s", 0))[0].samples for d in data]

    parts = loop.run_until_complete(go())
    j = join(parts[2:])
    assert isinstance(j, Columns) and len(j) == 4


def test_a_daemon_with_ingest_workers_scores_pushed_writes_and_stops_them(tmp_path) -> None:
    from prometheus_client import CollectorRegistry

    from sentinel.runtime.daemon import Daemon
    from tests.servers._proc import free_port

    port = free_port()
    cfg = load_config_text(f"""
server: {{listen: "127.0.0.1:{port}", ingest_workers: 2, wal: {{dir: {tmp_path / 'wal'}}}}}
sources: [{{type: influxdb, name: push, mode: receiver, fields: [temp]}}]
streams: {{history_lookback: 0}}
state: {{dir: {tmp_path / 'state'}}}
sinks: {{outbox: {{path: {tmp_path / 'outbox'}}}, log_alerts: false}}
""", source="test.yaml")
    registry = CollectorRegistry()
    d = Daemon(cfg, registry=registry, inline_training=True)

    async def go() -> tuple[list[int], list[int], float]:
        import aiohttp

        await d.start()
        assert d.parse_pool is not None
        pids = d.parse_pool.pids
        statuses = []
        try:
            async with aiohttp.ClientSession() as s:
                for k in range(6):
                    body = "".join(f"pump,id={i} temp={k}.5 {1_700_000_000 + k}\n" for i in range(20))
                    async with s.post(f"http://127.0.0.1:{port}/write?db=x&precision=s", data=body) as r:
                        statuses.append(r.status)
            for _ in range(500):  # bounded: everything scored
                if (registry.get_sample_value("sentinel_samples_ingested_total", {"source": "push"}) or 0) >= 120:
                    break
                await asyncio.sleep(0.02)
        finally:
            await d.stop()
        n = registry.get_sample_value("sentinel_samples_ingested_total", {"source": "push"}) or 0
        return pids, statuses, n

    pids, statuses, n = asyncio.run(go())
    assert statuses == [204] * 6 and n == 120
    assert registry.get_sample_value("sentinel_task_restarts_total", {"task": "ingest-worker"}) == 0
    assert len(pids) == 2 and not any(alive(p) for p in pids)
