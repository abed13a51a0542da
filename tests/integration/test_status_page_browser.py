"""The status page in real headless Chromium: it loads, draws charts, refreshes, and logs no errors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import pytest

from sentinel.server import build_app, serve
from sentinel.server.fake import FakeStatusProvider
from tests.servers.chromium import Chromium, Page, screenshot

pytestmark = pytest.mark.browser

N_STREAMS = 12  # FakeStatusProvider.demo cycles ok, firing, warming, ok, pending, ok


def with_page(prov: FakeStatusProvider, fn: Callable[[Page, str], Awaitable[Any]], **app_kw: Any) -> Any:
    from prometheus_client import CollectorRegistry

    async def main() -> Any:
        app = build_app(prov, CollectorRegistry(), version="test", **app_kw)
        handle = await serve(app, "127.0.0.1:0")
        try:
            async with Chromium.launch() as browser:
                page = await browser.new_page(width=1400, height=900)
                return await fn(page, handle.url)
        finally:
            await handle.close()

    return asyncio.run(main())


def test_overview_renders_charts_in_state_order_without_errors():
    prov = FakeStatusProvider.demo(N_STREAMS)

    async def fn(page: Page, url: str) -> None:
        await page.goto(url + "/")
        await page.wait_for(f"document.querySelectorAll('svg.chart').length >= {3 * N_STREAMS}")
        info = await page.evaluate("""JSON.stringify({
            cards: [...document.querySelectorAll('.card')].map(c => c.className.replace('card ', '')),
            charts: document.querySelectorAll('svg.chart').length,
            paths: document.querySelectorAll('svg.chart path').length,
            spans: document.querySelectorAll('svg.chart rect.span').length,
            bands: document.querySelectorAll('svg.chart path.band').length,
            rows: document.querySelectorAll('#tbody tr').length,
            chips: Object.fromEntries([...document.querySelectorAll('.chip')].map(
                c => [c.dataset.state, c.querySelector('.n').textContent])),
            banner: document.getElementById('banner').hidden,
            feedback: [...document.querySelectorAll('#fbody tr')].map(r => r.textContent),
        })""")
        got = json.loads(info)
        assert got["cards"] == ["firing"] * 2 + ["pending"] * 2 + ["warming"] * 2 + ["ok"] * 6
        assert got["charts"] == 3 * N_STREAMS
        assert got["paths"] > 3 * N_STREAMS
        assert got["spans"] > 0
        # a shaded expected band around each field's value, except on warming streams (no band yet)
        fields = sum(len(prov.histories[r["stream"]]["fields"]) for r in prov.rows if r["state"] != "warming")
        assert got["bands"] == fields
        assert got["rows"] == N_STREAMS
        assert got["chips"] == {"firing": "2", "pending": "2", "warming": "2", "ok": "6"}
        assert got["banner"] is True
        assert len(got["feedback"]) == 1 and "normal" in got["feedback"][0] and "defrost" in got["feedback"][0]
        # hovering a card shows the values under the cursor
        readout = await page.evaluate("""(() => {
            const box = document.querySelector('.card .charts');
            const r = box.getBoundingClientRect();
            box.dispatchEvent(new MouseEvent('mousemove', {clientX: r.left + r.width / 2, clientY: r.top + 10,
                                                            bubbles: true}));
            return box.querySelector('.readout').textContent;
        })()""")
        assert "score" in readout and "threshold" not in readout and "thr" in readout
        assert "(expected " in readout
        assert page.errors == []

    with_page(prov, fn)


def test_page_follows_the_engine_on_refresh():
    prov = FakeStatusProvider.demo(N_STREAMS)

    async def fn(page: Page, url: str) -> None:
        await page.goto(url + "/")
        await page.wait_for("document.querySelector('.chip[data-state=firing] .n')?.textContent === '2'")
        ok_row = next(r for r in prov.rows if r["state"] == "ok")
        ok_row["state"] = "firing"
        prov.ready_state = (False, "source influxdb: connecting")
        await page.wait_for("document.querySelector('.chip[data-state=firing] .n').textContent === '3'", timeout=15)
        await page.wait_for("!document.getElementById('banner').hidden", timeout=15)
        text = await page.evaluate("document.getElementById('banner').textContent")
        assert text == "Not ready: source influxdb: connecting"
        assert page.errors == []

    with_page(prov, fn, refresh_seconds=0.5)


def test_stream_parameter_focuses_one_stream():
    prov = FakeStatusProvider.demo(N_STREAMS)
    key = next(r["stream"] for r in prov.rows if r["state"] == "firing" and len(r["fields"]) == 3)

    async def fn(page: Page, url: str) -> None:
        await page.goto(url + "/?stream=" + quote(key, safe=""))
        await page.wait_for("document.querySelectorAll('svg.chart').length === 3")
        got = json.loads(await page.evaluate("""JSON.stringify({
            cards: document.querySelectorAll('.card').length,
            name: document.querySelector('.card .name').textContent,
            details: document.querySelectorAll('.card dl.details dt').length,
            legend: [...document.querySelectorAll('.panel .lbl i')].map(i => i.textContent),
            table: document.getElementById('table').hidden,
        })"""))
        assert got == {"cards": 1, "name": key, "details": 8,  # the 8th: the expected band
                       "legend": ["temp", "vibration", "current", "error", "threshold", "score"], "table": True}
        assert page.errors == []

    with_page(prov, fn)


def test_errors_are_collected():
    """The error collector itself works (so the empty lists above mean something)."""
    prov = FakeStatusProvider.demo(2)

    async def fn(page: Page, url: str) -> None:
        await page.goto(url + "/")
        await page.evaluate("setTimeout(() => { throw new Error('boom-test'); }, 0); console.error('bad-test'); 1")
        await page.wait_for("new Promise(r => setTimeout(() => r(true), 50))")
        for _ in range(50):
            if len(page.errors) >= 2:
                break
            await asyncio.sleep(0.05)
        assert any("boom-test" in e for e in page.errors)
        assert any("bad-test" in e for e in page.errors)

    with_page(prov, fn)


def test_screenshot_helper_writes_a_png(tmp_path):
    prov = FakeStatusProvider.demo(N_STREAMS)

    async def main() -> bytes:
        from prometheus_client import CollectorRegistry

        handle = await serve(build_app(prov, CollectorRegistry(), version="test"), "127.0.0.1:0")
        try:
            out = await screenshot(handle.url + "/", tmp_path / "status.png", 1200, 800)
            return out.read_bytes()
        finally:
            await handle.close()

    png = asyncio.run(main())
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(png[16:20], "big") == 1200 and int.from_bytes(png[20:24], "big") == 800
