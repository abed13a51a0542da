"""Headless Debian Chromium driven over the DevTools protocol (CDP) with aiohttp's websocket client.

No selenium or playwright: Chromium starts with ``--remote-debugging-port=0``, writes the port it
picked to ``DevToolsActivePort`` in its user-data dir, and we talk CDP over the browser websocket
using flattened target sessions. Every wait is bounded in time.

    async with Chromium.launch() as browser:
        page = await browser.new_page(width=1280, height=800)
        await page.goto("http://127.0.0.1:9680/")
        n = await page.evaluate("document.querySelectorAll('svg.chart').length")
        errors = page.errors          # console errors, exceptions, failed requests

``screenshot(url, path, width, height)`` captures a PNG (used for the README picture).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from tests.servers._proc import require_binary

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--metrics-recording-only",
    "--mute-audio",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)


class CDPError(RuntimeError):
    """A DevTools command returned an error, or the browser went away."""


class Page:
    """One tab, attached through a flattened CDP session. ``errors`` collects what the page reported."""

    def __init__(self, browser: Chromium, session_id: str, target_id: str):
        self._browser = browser
        self.session_id = session_id
        self.target_id = target_id
        self.errors: list[str] = []
        self.events: list[dict] = []
        self._load = asyncio.Event()

    async def send(self, method: str, params: dict | None = None, timeout: float = 30.0) -> dict:
        return await self._browser.send(method, params, session_id=self.session_id, timeout=timeout)

    def _on_event(self, msg: dict) -> None:
        method, p = msg.get("method", ""), msg.get("params", {})
        self.events.append(msg)
        if method == "Page.loadEventFired":
            self._load.set()
        elif method == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            desc = d.get("exception", {}).get("description") or d.get("text", "")
            self.errors.append(f"exception: {desc} at {d.get('url', '')}:{d.get('lineNumber', '')}")
        elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
            self.errors.append(f"console.{p.get('type')}: {args}")
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            e = p["entry"]
            self.errors.append(f"log[{e.get('source')}]: {e.get('text')} {e.get('url', '')}".rstrip())

    async def goto(self, url: str, timeout: float = 30.0) -> None:
        """Navigate and wait (bounded) for the load event."""
        self._load.clear()
        res = await self.send("Page.navigate", {"url": url}, timeout=timeout)
        if res.get("errorText"):
            raise CDPError(f"navigation to {url} failed: {res['errorText']}")
        await asyncio.wait_for(self._load.wait(), timeout)

    async def evaluate(self, expression: str, timeout: float = 30.0) -> Any:
        """The value of a JS expression (promises awaited); raises :class:`CDPError` if it throws."""
        res = await self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                   "awaitPromise": True}, timeout=timeout)
        if "exceptionDetails" in res:
            raise CDPError(f"evaluate({expression!r}) threw: {res['exceptionDetails'].get('text')}")
        return res.get("result", {}).get("value")

    async def wait_for(self, expression: str, timeout: float = 15.0, interval: float = 0.1) -> Any:
        """Poll until ``expression`` is truthy (bounded); return its value or raise TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() >= deadline:
                raise TimeoutError(f"timed out after {timeout}s waiting for {expression!r}")
            await asyncio.sleep(interval)

    async def screenshot(self, path: str | Path) -> Path:
        res = await self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": False})
        out = Path(path)
        out.write_bytes(base64.b64decode(res["data"]))
        return out


class Chromium:
    """A headless Chromium process and its browser-level CDP websocket."""

    def __init__(self, proc: subprocess.Popen, user_data_dir: Path, ws: aiohttp.ClientWebSocketResponse,
                 session: aiohttp.ClientSession):
        self.proc = proc
        self.user_data_dir = user_data_dir
        self._ws = ws
        self._http = session
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._pages: dict[str, Page] = {}
        self._reader = asyncio.create_task(self._read())

    @classmethod
    @contextlib.asynccontextmanager
    async def launch(cls, binary: str | None = None, start_timeout: float = 30.0) -> AsyncIterator[Chromium]:
        """Start Chromium (skip locally / fail in CI when it is not installed) and close it afterwards."""
        exe = binary or require_binary("chromium", "chromium-browser", "google-chrome")
        tmp = Path(tempfile.mkdtemp(prefix="sentinel-chromium-"))
        proc = subprocess.Popen(
            [exe, *FLAGS, f"--user-data-dir={tmp}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            env={**os.environ, "HOME": str(tmp)},
        )
        session = aiohttp.ClientSession()
        browser: Chromium | None = None
        try:
            port_file = tmp / "DevToolsActivePort"
            deadline = time.monotonic() + start_timeout
            lines: list[str] = []
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise CDPError(f"chromium exited with code {proc.returncode} before DevTools came up")
                if port_file.exists():
                    lines = port_file.read_text().split()
                    if len(lines) >= 2:
                        break
                await asyncio.sleep(0.05)
            else:
                raise TimeoutError(f"chromium wrote no DevToolsActivePort within {start_timeout}s")
            ws = await asyncio.wait_for(
                session.ws_connect(f"ws://127.0.0.1:{lines[0]}{lines[1]}", max_msg_size=0,
                                   timeout=aiohttp.ClientWSTimeout(ws_close=10)),
                10,
            )
            browser = cls(proc, tmp, ws, session)
            yield browser
        finally:
            if browser is not None:
                await browser._shutdown()
            await session.close()
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
            shutil.rmtree(tmp, ignore_errors=True)

    async def _read(self) -> None:
        try:
            async for msg in self._ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                data = msg.json()
                if "id" in data:
                    fut = self._pending.pop(data["id"], None)
                    if fut is not None and not fut.done():
                        if "error" in data:
                            fut.set_exception(CDPError(f"{data['error'].get('message')} ({data['error'].get('code')})"))
                        else:
                            fut.set_result(data.get("result", {}))
                elif (sid := data.get("sessionId")) in self._pages:
                    self._pages[sid]._on_event(data)
        finally:
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(CDPError("browser connection closed"))
            self._pending.clear()

    async def send(self, method: str, params: dict | None = None, *, session_id: str | None = None,
                   timeout: float = 30.0) -> dict:
        msg_id = next(self._ids)
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session_id:
            msg["sessionId"] = session_id
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = fut
        await self._ws.send_json(msg)
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._pending.pop(msg_id, None)

    async def new_page(self, width: int = 1280, height: int = 800) -> Page:
        """A fresh tab with page, runtime and log events on, at ``width`` x ``height`` CSS pixels."""
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
        page = Page(self, attached["sessionId"], target["targetId"])
        self._pages[page.session_id] = page
        for domain in ("Page.enable", "Runtime.enable", "Log.enable"):
            await page.send(domain)
        await page.send("Emulation.setDeviceMetricsOverride",
                        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        return page

    async def _shutdown(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.send("Browser.close"), 5)
        with contextlib.suppress(Exception):
            await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader


async def screenshot(url: str, path: str | Path, width: int = 1400, height: int = 900,
                     ready_expression: str = "document.querySelectorAll('svg.chart').length > 0",
                     timeout: float = 20.0) -> Path:
    """Load ``url`` in headless Chromium and write a PNG of the viewport to ``path``.

    Waits (bounded by ``timeout``) for ``ready_expression`` — by default, until the status page has
    drawn its charts — then lets one frame settle.
    """
    async with Chromium.launch() as browser:
        page = await browser.new_page(width=width, height=height)
        await page.goto(url, timeout=timeout)
        await page.wait_for(ready_expression, timeout=timeout)
        await page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        return await page.screenshot(path)
