"""The /write and /api/v2/write handlers: params, gzip, auth, size limit, partial writes, fuzz."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.config.source_influxdb import InfluxDBReceiverConfig
from sentinel.sources.receiver import LineProtocolReceiver, Pushed
from sentinel.sources.selector import Selection, StreamSelector


class Sink:
    def __init__(self, accept: bool = True) -> None:
        self.got: list[Pushed] = []
        self.accept = accept

    async def __call__(self, p: Pushed) -> bool:
        if self.accept:
            self.got.append(p)
        return self.accept


def run(coro_fn, cfg: InfluxDBReceiverConfig | None = None, sink: Sink | None = None, **kw):
    sink = sink or Sink()
    rec = LineProtocolReceiver(cfg or InfluxDBReceiverConfig(), StreamSelector(Selection()), sink,
                               clock=lambda: 1000.0, **kw)

    async def main():
        app = web.Application()
        app.add_routes(rec.routes())
        server = TestServer(app)
        await server.start_server(auto_decompress=False)  # as sentinel.server.serve
        async with TestClient(server) as client:
            return await coro_fn(client)

    return asyncio.run(main()), sink


def test_v1_write_ok_with_precision_and_receipt_time() -> None:
    async def go(c):
        r = await c.post("/write?db=sensors&rp=autogen&precision=s", data="m,a=b v=1 1700000000\nm,a=b v=2\n")
        return r.status

    status, sink = run(go)
    assert status == 204
    (p,) = sink.got
    assert (p.database, p.retention_policy) == ("sensors", "autogen")
    assert [s.ts for s in p.outcome.samples] == [1000.0, 1_700_000_000.0]


def test_v2_write_gzip_and_bucket_mapping() -> None:
    async def go(c):
        body = gzip.compress(b"m v=1.5 1\n" * 100)
        r = await c.post("/api/v2/write?bucket=sensors/autogen&org=o&precision=ns", data=body,
                         headers={"Content-Encoding": "gzip"})
        bad = await c.post("/api/v2/write?bucket=x&precision=m", data=b"m v=1")
        nob = await c.post("/api/v2/write", data=b"m v=1")
        return r.status, bad.status, nob.status

    (ok, badp, nobucket), sink = run(go)
    assert (ok, badp, nobucket) == (204, 400, 400)
    assert sink.got[0].database == "sensors" and len(sink.got[0].outcome.samples) == 100


def test_partial_write_keeps_good_lines_and_says_what_was_wrong() -> None:
    async def go(c):
        r = await c.post("/write?db=d", data="m v=1 1\nm v=oops 2\nm v=3 3\nm\n")
        return r.status, await r.json()

    (status, body), sink = run(go)
    assert status == 400
    assert body["error"].startswith("partial write: unable to parse 'm v=oops 2': invalid field format")
    assert "2 of 4 lines rejected" in body["error"]
    o = sink.got[0].outcome
    assert [s.values for s in o.samples] == [(1.0,), (3.0,)]
    assert o.rejected == {"lp_bad_field_value": 1, "lp_missing_fields": 1}


def test_missing_db_unknown_db_and_body_limit() -> None:
    cfg = InfluxDBReceiverConfig(max_body_bytes=2048)

    async def go(c):
        a = await c.post("/write", data="m v=1")
        b = await c.post("/write?db=other", data="m v=1")
        big = await c.post("/write?db=sensors", data="m v=1\n" * 1000)
        bomb = await c.post("/write?db=sensors", data=gzip.compress(b"m v=1\n" * 10000),
                            headers={"Content-Encoding": "gzip"})
        junk = await c.post("/write?db=sensors", data=b"\x1f\x8bnot gzip", headers={"Content-Encoding": "gzip"})
        return a.status, b.status, big.status, bomb.status, junk.status

    statuses, sink = run(go, cfg, databases=["sensors"])
    assert statuses == (400, 404, 413, 413, 400)
    assert sink.got == []


def test_auth_token_basic_and_query_params() -> None:
    cfg = InfluxDBReceiverConfig(token="s3cret", username="telegraf", password="pw")
    basic = base64.b64encode(b"telegraf:pw").decode()

    async def go(c):
        out = []
        for headers, qs in [({}, ""), ({"Authorization": "Token s3cret"}, ""), ({"Authorization": "Bearer s3cret"}, ""),
                            ({"Authorization": f"Basic {basic}"}, ""), ({}, "&u=telegraf&p=pw"),
                            ({"Authorization": "Token wrong"}, ""), ({}, "&u=telegraf&p=nope")]:
            r = await c.post(f"/write?db=d{qs}", data="m v=1", headers=headers)
            out.append(r.status)
        r = await c.post("/api/v2/write?bucket=d", data="m v=1", headers={"Authorization": "Token s3cret"})
        out.append(r.status)
        return out

    statuses, sink = run(go, cfg)
    assert statuses == [401, 204, 204, 204, 204, 401, 401, 204]
    assert len(sink.got) == 5


def test_busy_runtime_answers_503() -> None:
    async def go(c):
        r = await c.post("/write?db=d", data="m v=1")
        return r.status, r.headers.get("Retry-After"), json.loads(await r.text())["error"]

    (status, retry, err), _ = run(go, sink=Sink(accept=False))
    assert status == 503 and retry == "1" and "busy" in err


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300))
def test_random_bodies_never_crash_the_receiver(body: bytes) -> None:
    async def go(c):
        r = await c.post("/write?db=d", data=body)
        return r.status

    status, sink = run(go)
    assert status in (204, 400)
    for p in sink.got:
        assert p.outcome.lines >= len(p.outcome.errors)


def test_a_full_write_ahead_log_answers_503_with_retry_after_and_hands_nothing_on(tmp_path) -> None:
    """A full log refuses the write (Telegraf retries it) instead of acknowledging what it cannot keep;
    once a checkpoint lets the log drop what it covers, the same write is acknowledged."""
    from sentinel.state.ingestlog import IngestLog

    log = IngestLog(tmp_path / "wal", fsync="off", segment_bytes=4096, max_bytes=8192, keep=1)
    body = b"".join(b"m,t=%d v=1 %d\n" % (i, 1_700_000_000 + i) for i in range(40))  # ~1 KB a record

    async def go(c):
        got = []
        for _ in range(12):
            r = await c.post("/write?db=s&precision=s", data=body)
            got.append((r.status, r.headers.get("Retry-After")))
        log.scored(log.wal.position)
        log.checkpointed(log.covered)  # the one kept checkpoint covers everything written: old segments go
        r = await c.post("/write?db=s&precision=s", data=body)
        return got, r.status

    try:
        (got, after), sink = run(go, log=log, retry_after=7.0)
    finally:
        log.close()
    ok = [s for s, _ in got if s == 204]
    full = [(s, ra) for s, ra in got if s != 204]
    assert ok and full and set(full) == {(503, "7")}, got
    assert got.index(full[0]) == len(ok)  # once full, full until truncated
    assert (len(sink.got), after) == (len(ok) + 1, 204), (got, after)  # nothing of a refused write was handed on
