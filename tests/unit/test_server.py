"""The HTTP server against a fake StatusProvider: status codes, JSON, metrics, reload, auth, TLS."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import math
import ssl
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import bcrypt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from sentinel.metrics import Metrics
from sentinel.server import (
    WebConfig,
    build_app,
    parse_listen,
    parse_web_config,
    serve,
    update_web_config,
)
from sentinel.server.app import StatusProvider, finite
from sentinel.server.fake import FakeStatusProvider
from tests.servers._proc import require_binary

ODD_KEY = "pump,site=a b/c,unit=7"  # space and slash must survive URL encoding


def rows() -> list[dict]:
    def row(key: str, state: str, score: float) -> dict:
        return {"stream": key, "measurement": key.split(",")[0], "labels": {}, "state": state, "score": score,
                "error": 0.5, "threshold": 1.0, "model_version": 2, "last_ts": 100.0, "fields": ["value"],
                "alerts_total": 1}
    return [row("a", "ok", 0.1), row("b", "firing", 0.99), row(ODD_KEY, "pending", 0.8),
            row("w", "warming", math.nan)]


def provider(**kw: Any) -> FakeStatusProvider:
    hist = {"ts": [1.0, 2.0], "values": [[1.0], [math.nan]], "fields": ["value"], "score": [0.1, 0.2],
            "threshold": [1.0, 1.0], "error": [0.1, math.inf], "alert_spans": [[1.0, None]]}
    return FakeStatusProvider(rows=rows(), histories={ODD_KEY: hist, "a": hist}, **kw)


def run(app: web.Application, fn: Callable[[TestClient], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with TestClient(TestServer(app)) as client:
            return await fn(client)
    return asyncio.run(main())


def make_app(registry, prov: StatusProvider | None = None, **kw: Any) -> web.Application:
    return build_app(prov or provider(), registry, version="1.2.3", **kw)


def test_fake_satisfies_the_protocol():
    assert isinstance(provider(), StatusProvider)


def test_healthy_and_ready(registry):
    prov = provider()

    async def fn(c: TestClient) -> None:
        r = await c.get("/-/healthy")
        assert (r.status, await r.text()) == (200, "Sentinel is Healthy.\n")
        r = await c.get("/-/ready")
        assert (r.status, await r.text()) == (200, "Sentinel is Ready.\n")
        prov.ready_state = (False, "checkpoint not loaded")
        r = await c.get("/-/ready")
        assert (r.status, await r.text()) == (503, "Sentinel is not ready: checkpoint not loaded\n")
        r = await c.get("/api/v1/status")
        assert await r.json() == {"status": "success",
                                  "data": {"version": "1.2.3", "ready": False, "reason": "checkpoint not loaded"}}

    run(make_app(registry, prov), fn)


def test_reload_success_failure_and_crash(registry):
    prov = provider()

    async def fn(c: TestClient) -> None:
        r = await c.post("/-/reload")
        assert (r.status, await r.text()) == (200, "config reloaded\n")
        r = await c.put("/-/reload")
        assert r.status == 200
        prov.reload_result = (False, "config.yaml:model.hidden: must be > 0")
        r = await c.post("/-/reload")
        assert (r.status, await r.text()) == (500, "config.yaml:model.hidden: must be > 0\n")
        prov.reload_result = RuntimeError("boom")
        r = await c.post("/-/reload")
        assert (r.status, await r.text()) == (500, "reload failed: boom\n")
        r = await c.get("/-/reload")
        assert r.status == 405
        assert prov.reload_calls == 4

    run(make_app(registry, prov), fn)


def test_streams_api(registry):
    async def fn(c: TestClient) -> None:
        r = await c.get("/api/v1/streams")
        assert r.status == 200 and r.content_type == "application/json"
        body = await r.json()
        assert body["status"] == "success"
        assert [s["stream"] for s in body["data"]] == ["a", "b", ODD_KEY, "w"]
        assert body["data"][3]["score"] is None  # NaN is not JSON: sent as null
        r = await c.get("/api/v1/streams", params={"state": "firing"})
        assert [s["stream"] for s in (await r.json())["data"]] == ["b"]
        r = await c.get("/api/v1/streams", params={"limit": "2"})
        assert [s["stream"] for s in (await r.json())["data"]] == ["a", "b"]
        r = await c.get("/api/v1/streams", params={"limit": "0"})
        assert (await r.json())["data"] == []
        r = await c.get("/api/v1/streams", params={"state": "bogus"})
        assert r.status == 400
        assert (await r.json())["errorType"] == "bad_data"
        for bad in ("-1", "x"):
            r = await c.get("/api/v1/streams", params={"limit": bad})
            assert r.status == 400

    run(make_app(registry), fn)


def test_stream_history(registry):
    async def fn(c: TestClient) -> None:
        r = await c.get("/api/v1/streams/" + quote(ODD_KEY, safe="") + "/history")
        assert r.status == 200
        assert await r.json() == {"status": "success", "data": {
            "ts": [1.0, 2.0], "values": [[1.0], [None]], "fields": ["value"], "score": [0.1, 0.2],
            "threshold": [1.0, 1.0], "error": [0.1, None], "alert_spans": [[1.0, None]]}}
        r = await c.get("/api/v1/streams/nope/history")
        assert r.status == 404
        assert (await r.json())["errorType"] == "not_found"

    run(make_app(registry), fn)


def test_provider_errors_become_500_json(registry):
    class Broken(FakeStatusProvider):
        def streams(self, state=None, limit=None):
            raise RuntimeError("engine gone")

    async def fn(c: TestClient) -> None:
        r = await c.get("/api/v1/streams")
        assert r.status == 500
        assert await r.json() == {"status": "error", "errorType": "internal", "error": "engine gone"}

    run(make_app(registry, Broken()), fn)


def test_metrics_exposition_plain_gzip_and_openmetrics(registry):
    m = Metrics(registry)
    m.samples_ingested.labels(source="sim").inc(7)

    async def fn(c: TestClient) -> None:
        r = await c.get("/metrics", headers={"Accept-Encoding": "identity"})
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await r.text()
        assert 'sentinel_samples_ingested_total{source="sim"} 7.0' in text
        assert "sentinel_config_last_reload_successful 1.0" in text
        r = await c.get("/metrics", headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
        assert r.headers["Content-Encoding"] == "gzip"
        assert 'sentinel_samples_ingested_total{source="sim"} 7.0' in gzip.decompress(await r.read()).decode()
        r = await c.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        assert r.headers["Content-Type"].startswith("application/openmetrics-text")
        assert (await r.text()).rstrip().endswith("# EOF")
        r = await c.get("/metrics", params={"name[]": "sentinel_model_version"})
        text = await r.text()
        assert "sentinel_model_version 0.0" in text and "samples_ingested" not in text

    run(make_app(registry), fn)


def test_status_page_is_self_contained(registry):
    async def fn(c: TestClient) -> None:
        r = await c.get("/", params={"stream": "b"})
        assert r.status == 200 and r.content_type == "text/html"
        page = await r.text()
        cfg = page.split('<script id="sentinel-config" type="application/json">', 1)[1].split("</script>", 1)[0]
        assert json.loads(cfg) == {"version": "1.2.3", "chartStreams": 7, "refreshMs": 5000, "tableLimit": 1000}
        for external in ('src="http', "src='http", 'href="http', "url(http", "@import"):
            assert external not in page

    run(make_app(registry, status_page_streams=7), fn)


def test_version_is_escaped_in_the_page(registry):
    async def fn(c: TestClient) -> None:
        page = await (await c.get("/")).text()
        assert "<b>x</script>" not in page
        assert "&lt;b&gt;x&lt;/script&gt;" in page

    run(build_app(provider(), registry, version="<b>x</script>"), fn)


def test_extra_routes_are_mounted(registry):
    async def write(request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def fn(c: TestClient) -> None:
        assert (await c.post("/write", data=b"m v=1")).status == 204
        assert (await c.post("/api/v2/write", data=b"m v=1")).status == 204

    run(make_app(registry, extra_routes=[web.post("/write", write), web.post("/api/v2/write", write)]), fn)


def _basic(user: str, pw: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()}


def test_basic_auth_guards_every_endpoint(registry):
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    wc = parse_web_config({"basic_auth_users": {"alice": hashed}, "http_server_config": {"headers": {"X-Test": "1"}}})
    app = make_app(registry, web_config=wc)

    async def fn(c: TestClient) -> None:
        for path in ("/metrics", "/-/healthy", "/-/ready", "/", "/api/v1/streams"):
            r = await c.get(path)
            assert r.status == 401, path
            assert r.headers["WWW-Authenticate"].startswith("Basic ")
            assert r.headers["X-Test"] == "1"
        assert (await c.post("/-/reload")).status == 401
        assert (await c.get("/metrics", headers=_basic("alice", "wrong"))).status == 401
        assert (await c.get("/metrics", headers=_basic("mallory", "s3cret"))).status == 401
        assert (await c.get("/metrics", headers={"Authorization": "Basic !!!"})).status == 401
        assert (await c.get("/metrics", headers={"Authorization": "Bearer s3cret"})).status == 401
        for _ in range(2):  # the second request is served from the success cache
            r = await c.get("/-/healthy", headers=_basic("alice", "s3cret"))
            assert r.status == 200 and r.headers["X-Test"] == "1"
        update_web_config(app, None)  # reload to a file without users: auth off
        assert (await c.get("/-/healthy")).status == 200

    run(app, fn)


def test_parse_listen():
    assert parse_listen("127.0.0.1:9680") == ("127.0.0.1", 9680)
    assert parse_listen("[::1]:0") == ("::1", 0)
    assert parse_listen(":80") == ("0.0.0.0", 80)
    for bad in ("localhost", "h:99999", "h:x"):
        with pytest.raises(ValueError):
            parse_listen(bad)


def test_finite():
    assert finite({"a": [1.0, math.nan, (math.inf, 2)], "b": "x", "c": None}) == {"a": [1.0, None, [None, 2]],
                                                                                  "b": "x", "c": None}


def test_serve_on_port_zero_and_close_twice(registry):
    async def main() -> None:
        handle = await serve(make_app(registry), "127.0.0.1:0")
        try:
            assert handle.port > 0 and handle.url == f"http://127.0.0.1:{handle.port}"
            async with aiohttp.ClientSession() as s, s.get(handle.url + "/-/healthy") as r:
                assert r.status == 200
        finally:
            await handle.close()
            await handle.close()

    asyncio.run(main())


# ------------------------------------------------------------------------------------------- TLS


def _cert(tmp: Path, name: str, cn: str) -> tuple[Path, Path]:
    require_binary("openssl")
    cert, key = tmp / f"{name}.crt", tmp / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={cn}",
         "-addext", f"subjectAltName=DNS:{cn},IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )
    return cert, key


async def _get(url: str, ctx: ssl.SSLContext | bool) -> int:
    async with aiohttp.ClientSession() as s, s.get(url, ssl=ctx, timeout=aiohttp.ClientTimeout(total=10)) as r:
        return r.status


def test_tls_serve_with_self_signed_cert(registry, tmp_path):
    cert, key = _cert(tmp_path, "server", "localhost")
    wc = parse_web_config({"tls_server_config": {"cert_file": str(cert), "key_file": str(key)}})

    async def main() -> None:
        handle = await serve(make_app(registry, web_config=wc), "127.0.0.1:0", wc)
        try:
            assert handle.url.startswith("https://")
            client = ssl.create_default_context(cafile=str(cert))
            assert await _get(handle.url + "/-/healthy", client) == 200
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await _get(handle.url + "/-/healthy", ssl.create_default_context())  # untrusted
            with pytest.raises(aiohttp.ClientError):
                await _get(f"http://127.0.0.1:{handle.port}/-/healthy", False)  # plain HTTP on a TLS port
        finally:
            await handle.close()

    asyncio.run(main())


@pytest.mark.parametrize(("allowed", "expected"), [(["scraper"], 200), (["someone-else"], 403)])
def test_mutual_tls_and_allowed_sans(registry, tmp_path, allowed, expected):
    cert, key = _cert(tmp_path, "server", "localhost")
    ccert, ckey = _cert(tmp_path, "client", "scraper")
    wc = parse_web_config({"tls_server_config": {
        "cert_file": str(cert), "key_file": str(key), "client_ca_file": str(ccert), "client_allowed_sans": allowed}})

    async def main() -> None:
        handle = await serve(make_app(registry, web_config=wc), "127.0.0.1:0", wc)
        try:
            with_cert = ssl.create_default_context(cafile=str(cert))
            with_cert.load_cert_chain(str(ccert), str(ckey))
            assert await _get(handle.url + "/-/healthy", with_cert) == expected
            without = ssl.create_default_context(cafile=str(cert))
            with pytest.raises(aiohttp.ClientError):
                await _get(handle.url + "/-/healthy", without)
        finally:
            await handle.close()

    asyncio.run(main())


def test_web_config_default_is_open(registry):
    assert not WebConfig().auth_enabled
