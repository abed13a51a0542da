"""Bounds on what one input can make Sentinel hold (D3, D4, D5, oversized keys, invalid UTF-8).

Each refusal is counted under its reason; good lines of the same body are kept; the fast path
and the full scanner agree.
"""

from __future__ import annotations

import pytest

from sentinel.sources.selector import Selection, StreamSelector

NOW_NS = 1_700_000_000 * 10**9


def sel(**kw: object) -> StreamSelector:
    return StreamSelector(Selection(**{"max_future_ns": 600 * 10**9, **kw}))  # type: ignore[arg-type]


def fields(n: int, quoted: bool = False) -> str:
    out = ",".join(f"f{i}={i}.5" for i in range(n))
    return out + (',note="x"' if quoted else "")


@pytest.mark.parametrize("quoted", [False, True])  # fast path / full scanner
def test_d4_a_line_with_thousands_of_fields_creates_nothing(quoted: bool) -> None:
    s = sel()
    out = s.parse_body(f"m,t=a {fields(4000, quoted)} 1700000000\nm,t=b v=1 1700000000", "s", NOW_NS)
    assert out.rejected == {"max_fields": 1} and [str(x.key) for x in out.samples] == ["m,t=b"]
    assert s.stream_count == 1
    n = 64 - quoted  # every field counts, the string one too
    out = s.parse_body(f"m,t=c {fields(n, quoted)} 1700000000\nm,t=d {fields(n + 1, quoted)} 1700000000", "s", NOW_NS)
    assert out.rejected == {"max_fields": 1} and len(out.samples) == 1 and len(out.samples[0].values) == n


def test_a_known_stream_still_refuses_an_oversized_line() -> None:
    s = sel(max_fields=3)
    s.parse_body("m,t=a a=1,b=2 1700000000\nm,t=a a=1,b=2 1700000001", "s", NOW_NS)  # layout learned
    out = s.parse_body("m,t=a a=1,b=2,c=3,d=4 1700000002", "s", NOW_NS)
    assert out.rejected == {"max_fields": 1} and out.samples == []


@pytest.mark.parametrize(("line", "precision"), [("probe,machine=fut value=1 9000000000", "s"),
                                                 ("probe,machine=fut value=1 9000000000000", "h"),
                                                 ("probe,machine=fut value=1 28400000", "m"),
                                                 ('probe,machine=fut value=1,s="q" 9000000000', "s")])
def test_d5_a_future_timestamp_is_rejected_and_does_not_poison_the_stream(line: str, precision: str) -> None:
    s = sel()
    out = s.parse_body(line, precision, NOW_NS)
    assert out.samples == [] and sum(out.rejected.values()) == 1
    assert set(out.rejected) <= {"future", "lp_bad_timestamp"}
    out = s.parse_body("probe,machine=fut value=2 1700000000", "s", NOW_NS)
    assert len(out.samples) == 1 and out.rejected == {}
    # up to max_future ahead is fine; without a clock (now_ns=0) no time bound applies
    assert len(s.parse_body("probe,machine=fut value=3 1700000599", "s", NOW_NS).samples) == 1
    assert len(sel().parse_body(line, precision).samples) + sum(sel().parse_body(line, precision).rejected.values()) == 1


def test_points_older_than_max_age_are_rejected() -> None:
    s = sel(max_age_ns=3600 * 10**9)
    out = s.parse_body("m v=1 1699990000\nm v=2 1699999000", "s", NOW_NS)
    assert out.rejected == {"too_old": 1} and len(out.samples) == 1


@pytest.mark.parametrize(("line", "reason"), [
    ("m,t=" + "x" * 2000 + " v=1 1700000000", "tag_value_too_long"),
    ("m," + "k" * 300 + "=a v=1 1700000000", "key_too_long"),
    ("m" * 300 + ",t=a v=1 1700000000", "key_too_long"),
    ("m,t=a " + "f" * 300 + "=1 1700000000", "key_too_long"),
    ('m,t=' + "x" * 2000 + ' v=1,s="q" 1700000000', "tag_value_too_long"),
])
def test_oversized_names_and_tag_values_are_rejected(line: str, reason: str) -> None:
    s = sel()
    out = s.parse_body(line + "\nm,t=ok v=1 1700000000", "s", NOW_NS)
    assert out.rejected == {reason: 1} and [str(x.key) for x in out.samples] == ["m,t=ok"]


def test_series_per_body_is_bounded_and_the_next_body_is_fresh() -> None:
    s = sel(max_series_per_body=10)
    body = "\n".join(f"m,t=s{i} v=1 1700000000" for i in range(15))
    out = s.parse_body(body, "s", NOW_NS)
    assert out.rejected == {"series_per_body": 5} and len(out.samples) == 10
    out = s.parse_body("\n".join(f"m,t=s{i} v=2 1700000001" for i in range(10, 15)), "s", NOW_NS)
    assert out.rejected == {} and len(out.samples) == 5
    slow = "\n".join(f'm,t=q{i} v=1,s="x" 1700000000' for i in range(12))
    assert s.parse_body(slow, "s", NOW_NS).rejected == {"series_per_body": 2}
    same = "\n".join(f'm,t=q0 v={i},s="x" {1700000010 + i}' for i in range(50))  # one series, many lines
    assert s.parse_body(same, "s", NOW_NS).rejected == {}


def test_d3_refused_keys_are_a_bounded_set() -> None:
    refused = []
    s = StreamSelector(Selection(max_streams=5, max_refused_keys=10), on_refused=refused.append)
    for b in range(20):
        out = s.parse_body("\n".join(f"m,t=b{b}s{i} v=1 1700000000" for i in range(10)), "s", NOW_NS)
        assert out.rejected.get("max_streams", 0) == (5 if b == 0 else 10)
    assert s.stream_count == 5 and len(s._refused) == 10


def test_invalid_utf8_lines_are_rejected_and_the_rest_kept() -> None:
    s = sel()
    body = b"m,t=a v=1 1700000000\nm,t=\xff\xfe v=2 1700000000\nm,t=b v=3 1700000000\n"
    out = s.parse_bytes(body, "s", NOW_NS)
    assert out.rejected == {"invalid_utf8": 1} and [str(x.key) for x in out.samples] == ["m,t=a", "m,t=b"]
    assert out.errors[0].lineno == 2 and out.errors[0].reason == "invalid_utf8" and out.lines == 3
    assert "\ufffd" not in "".join(str(x.key) for x in out.samples)


def test_d12_gzip_that_inflates_to_nothing_is_400_and_invalid_utf8_is_rejected_at_the_receiver() -> None:
    from tests.unit.test_receiver import run

    async def go(c):
        bad = await c.post("/write?db=s", data=b"\x1f\x8b\x08\x00garbage", headers={"Content-Encoding": "gzip"})
        mixed = await c.post("/write?db=s&precision=s", data=b"m,t=a v=1 1700000000\nm,t=\xff v=1 1700000000\n")
        return bad.status, await bad.text(), mixed.status, await mixed.text()

    (bad, text, mixed, mtext), sink = run(go)
    assert bad == 400 and "invalid gzip body" in text
    assert mixed == 400 and "invalid UTF-8" in mtext and "partial write" in mtext
    (p,) = sink.got
    assert [str(s.key) for s in p.outcome.samples] == ["m,t=a"] and p.outcome.rejected == {"invalid_utf8": 1}


def test_the_source_takes_its_bounds_from_the_streams_section() -> None:
    from sentinel.config import load_config_text
    from sentinel.sources.influxdb.query import selection_from

    cfg = load_config_text("streams: {max_fields: 8, max_future: 1m, max_tag_value_length: 99}\n"
                           "sources: [{type: influxdb, mode: receiver}]", source="c.yaml", env={})
    s = selection_from(cfg.sources[0], cfg.streams)  # type: ignore[arg-type]
    assert (s.max_fields, s.max_future_ns, s.max_tag_value_length, s.max_age_ns) == (8, 60 * 10**9, 99, 0)


GZ_LINES = b"".join(b"m,t=a%d v=%d 17000000%02d\n" % (i, i, i % 100) for i in range(200))


def test_d12_a_cut_short_gzip_body_is_400_not_the_lines_before_the_cut() -> None:
    """D12: aiohttp's inflater does not check that a gzip stream ended: half a body was read as the
    lines before the cut (the last one cut too) and answered 204, the rest lost."""
    import gzip

    from tests.unit.test_receiver import run

    good = gzip.compress(GZ_LINES)
    bodies = {"half": good[: len(good) // 2], "no trailer": good[:-8], "junk after": good + b"junk",
              "two members": good + gzip.compress(b"m,t=z v=1 1700000000\n"), "plain": GZ_LINES}

    async def go(c):
        out = {}
        for name, data in bodies.items():
            r = await c.post("/write?db=s&precision=s", data=data, headers={"Content-Encoding": "gzip"})
            out[name] = (r.status, await r.text())
        r = await c.post("/write?db=s&precision=s", data=GZ_LINES, headers={"Content-Encoding": "br"})
        out["br"] = (r.status, await r.text())
        return out

    got, sink = run(go)
    assert {k: s for k, (s, _) in got.items()} == {"half": 400, "no trailer": 400, "junk after": 400,
                                                    "two members": 204, "plain": 400, "br": 415}, got
    assert "truncated" in got["half"][1] and "data after its end" in got["junk after"][1]
    (p,) = sink.got  # only the whole two-member body was handed on, all of it
    assert len(p.outcome.samples) == 201


def test_d12_the_real_server_hands_the_receiver_the_gzip_stream_itself() -> None:
    """``sentinel.server.serve`` (the daemon's server) must not inflate bodies itself (see above)."""
    import asyncio
    import gzip

    import aiohttp
    from aiohttp import web

    from sentinel.config.source_influxdb import InfluxDBReceiverConfig
    from sentinel.server import serve
    from sentinel.sources.receiver import LineProtocolReceiver
    from tests.unit.test_receiver import Sink

    async def main() -> tuple[int, int, int]:
        sink = Sink()
        rec = LineProtocolReceiver(InfluxDBReceiverConfig(), StreamSelector(Selection()), sink, clock=lambda: 1000.0)
        app = web.Application()
        app.add_routes(rec.routes())
        handle = await serve(app, "127.0.0.1:0")
        good = gzip.compress(GZ_LINES)
        try:
            async with aiohttp.ClientSession() as s:
                url = f"{handle.url}/write?db=s&precision=s"
                async with s.post(url, data=good[: len(good) // 2], headers={"Content-Encoding": "gzip"}) as r:
                    cut = r.status
                async with s.post(url, data=good, headers={"Content-Encoding": "gzip"}) as r:
                    whole = r.status
        finally:
            await handle.close()
        return cut, whole, sum(len(p.outcome.samples) for p in sink.got)

    assert asyncio.run(main()) == (400, 204, 200)
