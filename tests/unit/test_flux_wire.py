"""The Flux path on the v2 wire: the request influxdb-client sends, and the annotated CSV it parses.

A tiny aiohttp fake of ``POST /api/v2/query`` serves a small dataset, honouring the
query's ``range`` and ``limit`` the way InfluxDB 2.x does (per table = series+field),
so paging and the cursor are exercised end to end without a 2.x server.
"""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from sentinel.config.source_influxdb import InfluxDBSourceConfig
from sentinel.errors import SourceError
from sentinel.metrics import Metrics
from sentinel.sources.influxdb import InfluxDBSource, ns_to_rfc3339, parse_annotated_csv, rfc3339_to_ns
from sentinel.types import SourceBatch, StreamKey
from tests.servers._proc import free_port

NS = 10**9
T0 = 1_700_000_000 * NS
# (pump, field) -> [(ts_ns, value)]; 30 points each, one every second (+7 ns to test precision)
DATA = {(p, f): [(T0 + k * NS + 7, float(k) + (100 if f == "vib" else 0)) for k in range(30)]
        for p in ("p1", "p2") for f in ("temp", "vib")}


def annotated_csv(tables: list[tuple[str, str, list[tuple[int, float]]]]) -> str:
    out = ["#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,dateTime:RFC3339,double,string,string,string",
           "#group,false,false,true,true,false,false,true,true,true",
           "#default,_result,,,,,,,,",
           ",result,table,_start,_stop,_time,_value,_field,_measurement,pump"]
    for i, (pump, fld, rows) in enumerate(tables):
        for ts, v in rows:
            out.append(f",,{i},2023-01-01T00:00:00Z,2030-01-01T00:00:00Z,{ns_to_rfc3339(ts)},{v},{fld},pump,{pump}")
    return "\r\n".join(out) + "\r\n\r\n"


def fake_v2(requests: list[dict]) -> web.Application:
    async def query(request: web.Request) -> web.Response:
        body = await request.json()
        requests.append({"body": body, "org": request.query.get("org"),
                         "auth": request.headers.get("Authorization")})
        q = body["query"]
        start, stop = (int(x) for x in re.search(r"range\(start: time\(v: (-?\d+)\), stop: time\(v: (-?\d+)\)", q).groups())
        limit = int(re.search(r"limit\(n: (\d+)\)", q).group(1))
        tables = []
        for (pump, fld), rows in sorted(DATA.items()):
            sel = [(t, v) for t, v in rows if start <= t < stop][:limit]
            if sel:
                tables.append((pump, fld, sel))
        return web.Response(text=annotated_csv(tables), content_type="text/csv")

    app = web.Application()
    app.router.add_post("/api/v2/query", query)
    return app


def test_flux_poll_pages_through_the_v2_wire_without_gap_or_duplicate() -> None:
    requests: list[dict] = []

    async def main() -> list[SourceBatch]:
        runner = web.AppRunner(fake_v2(requests))
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        cfg = InfluxDBSourceConfig(mode="poll_flux", url=f"http://127.0.0.1:{port}", token="tok", org="acme",
                                   bucket="sensors", measurements=["pump"], page_size=10, lateness=0)
        src = InfluxDBSource(cfg, metrics=Metrics(CollectorRegistry()), clock=lambda: 1_700_000_100.0,
                             resume={"t": T0 - 1})
        batches: list[SourceBatch] = []

        async def emit(b: SourceBatch) -> None:
            batches.append(b)

        for _ in range(10):
            if not await src.poll_once(emit):
                break
        await src.stop()
        await runner.cleanup()
        return batches

    batches = asyncio.run(asyncio.wait_for(main(), 30))
    first = requests[0]
    assert first["org"] == "acme" and first["auth"] == "Token tok"
    assert first["body"]["dialect"]["dateTimeFormat"] == "RFC3339Nano"
    assert first["body"]["dialect"]["annotations"] == ["datatype", "group", "default"]
    q = first["body"]["query"]
    assert q.startswith('from(bucket: "sensors")') and 'r._measurement == "pump"' in q
    assert f"range(start: time(v: {T0}), stop: time(v: {1_700_000_100 * NS + 1}))" in q

    samples = [s for b in batches for s in b.samples]
    assert len(samples) == 60  # 2 pumps x 30 points, temp and vib merged into one multivariate sample
    assert len({(s.key, s.ts) for s in samples}) == 60
    p1 = [s for s in samples if s.key == StreamKey.of("pump", pump="p1")]
    assert p1[0].fields == ("temp", "vib") and p1[0].values == (0.0, 100.0)
    assert [b.cursor["t"] for b in batches][:3] == [T0 + 9 * NS + 7, T0 + 19 * NS + 7, T0 + 29 * NS + 7]
    assert len(requests) == 4  # three full pages, then an empty tail up to now - lateness


def test_annotated_csv_types_and_errors() -> None:
    text = ("#datatype,string,long,dateTime:RFC3339Nano,long,boolean,string,string,string\n"
            "#group,false,false,false,false,false,true,true,true\n"
            "#default,_result,,,,,,,\n"
            ",result,table,_time,_value,extra,_field,_measurement,host\n"
            ",,0,2023-11-14T22:13:20.000000001Z,42,true,n,m,h1\n"
            ",,0,2023-11-14T22:13:21Z,,true,n,m,h1\n")
    (t,) = parse_annotated_csv(text)
    assert t.measurement == "m" and t.tags == {"extra": "true", "host": "h1"}
    assert t.rows == [(1_700_000_000 * NS + 1, {"n": 42})]
    with pytest.raises(SourceError, match="bad query"):
        parse_annotated_csv("#datatype,string,string\n#group,true,true\n#default,,\n,error,reference\n,bad query,\n")


def test_rfc3339_nano_round_trip() -> None:
    for ns in (0, 1, T0 + 123456789, T0 + 999_999_999):
        assert rfc3339_to_ns(ns_to_rfc3339(ns)) == ns
    assert rfc3339_to_ns("2023-11-14T23:13:20.5+01:00") == T0 + 500_000_000
    assert json.dumps(ns_to_rfc3339(T0)) == '"2023-11-14T22:13:20.000000000Z"'
