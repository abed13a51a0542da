"""An ephemeral, real Alertmanager for integration tests.

``prometheus-alertmanager`` (Debian's name; ``alertmanager`` elsewhere) runs on a
free loopback port with its own temp ``--storage.path``, gossip disabled
(``--cluster.listen-address=``) and a minimal config: one receiver, which is a
webhook when ``webhook_url`` is given (so tests can see what the real
Alertmanager sends), else a receiver that sends nothing. Readiness is
``GET /-/ready``. The process is stopped and the directory removed afterwards.
Missing binaries skip (fail under ``CI=true``).

Use :func:`running_alertmanager` as a context manager, e.g. in a module fixture::

    @pytest.fixture(scope="module")
    def am():
        with running_alertmanager() as server:
            yield server
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ._proc import free_port, http_ok, require_binary, stop_process, wait_until

CONFIG = """\
route:
  receiver: default
  group_by: [alertname, site]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: default
{webhook}
"""


@dataclass
class AlertmanagerServer:
    url: str
    port: int
    root: Path
    proc: subprocess.Popen

    def alerts(self, **params: str) -> list[dict]:
        """``GET /api/v2/alerts`` (defaults: active, silenced, inhibited, unprocessed alerts)."""
        query = "&".join(f"{k}={v}" for k, v in params.items())
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts?{query}", timeout=5) as r:
            return json.loads(r.read())

    def log(self) -> str:
        p = self.root / "alertmanager.log"
        return p.read_text(errors="replace")[-4000:] if p.exists() else ""


@contextmanager
def running_alertmanager(webhook_url: str | None = None) -> Iterator[AlertmanagerServer]:
    binary = require_binary("prometheus-alertmanager", "alertmanager")
    root = Path(tempfile.mkdtemp(prefix="sentinel-am-", dir="/tmp"))
    hook = ""
    if webhook_url:
        hook = f"    webhook_configs:\n      - url: {webhook_url}\n        send_resolved: true\n"
    (root / "alertmanager.yml").write_text(CONFIG.format(webhook=hook))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(root / "alertmanager.log", "wb")  # noqa: SIM115 - handed to the child
    try:
        proc = subprocess.Popen(
            [binary, f"--config.file={root / 'alertmanager.yml'}", f"--storage.path={root / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
             f"--web.external-url={url}/", "--log.level=info"],
            cwd=root, stdout=log, stderr=subprocess.STDOUT,
        )
    finally:
        log.close()
    server = AlertmanagerServer(url=url, port=port, root=root, proc=proc)
    try:
        try:
            wait_until(lambda: proc.poll() is None and http_ok(f"{url}/-/ready"), timeout=30, interval=0.05,
                       what=f"alertmanager on port {port}")
        except TimeoutError as e:
            raise RuntimeError(f"{e}; log:\n{server.log()}") from None
        yield server
    finally:
        stop_process(proc)
        shutil.rmtree(root, ignore_errors=True)


class WebhookReceiver:
    """A real HTTP receiver of Alertmanager-format webhooks (aiohttp, 127.0.0.1), run in the test's loop.

    Records every request as ``(headers, body bytes)``; ``status`` is the answer;
    ``delay`` (seconds) holds each answer back, to play a slow receiver.
    """

    def __init__(self, port: int | None = None, status: int = 200, delay: float = 0.0):
        self.port = port or free_port()
        self.status = status
        self.delay = delay
        self.received: list[tuple[dict[str, str], bytes]] = []
        self._runner = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def bodies(self) -> list[dict]:
        return [json.loads(b) for _, b in self.received]

    async def start(self) -> WebhookReceiver:
        import asyncio

        from aiohttp import web

        async def handle(request: web.Request) -> web.Response:
            body = await request.read()
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.status < 300:
                self.received.append((dict(request.headers), body))
            return web.Response(status=self.status)

        app = web.Application()
        app.router.add_post("/hook", handle)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
