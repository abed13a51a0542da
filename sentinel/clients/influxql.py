"""An InfluxDB 1.x HTTP client (``/query``, ``/write``, ``/ping``), shared by the source and the write-back.

Connection errors and 5xx become :class:`~sentinel.errors.SourceUnavailable`; query
errors :class:`~sentinel.errors.SourceError`.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from ..config.source_influxdb import InfluxDBSourceConfig
from ..errors import SourceError, SourceUnavailable


def quote_ident(s: str) -> str:
    """InfluxQL identifier: ``"name"`` with ``"`` and ``\\`` escaped."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_str(s: str) -> str:
    """InfluxQL string literal: ``'value'`` with ``'`` and ``\\`` escaped."""
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


class InfluxQLClient:
    """``/query``, ``/write`` and ``/ping`` of an InfluxDB 1.x (or a v1-compatible 2.x/3.x API).

    Connection errors and 5xx become :class:`SourceUnavailable`; query errors :class:`SourceError`.
    """

    def __init__(self, cfg: InfluxDBSourceConfig, session: aiohttp.ClientSession, url: str | None = None):
        self.cfg = cfg
        self.session = session
        self.url = (url or cfg.url).rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=cfg.query_timeout)

    def _auth(self) -> tuple[dict[str, str], dict[str, str]]:
        headers: dict[str, str] = {}
        params: dict[str, str] = {}
        if self.cfg.token:
            headers["Authorization"] = f"Token {self.cfg.token}"
        if self.cfg.username is not None:
            params["u"] = self.cfg.username
            params["p"] = self.cfg.password or ""
        return headers, params

    async def ping(self) -> bool:
        try:
            async with self.session.get(f"{self.url}/ping", timeout=aiohttp.ClientTimeout(total=5)) as r:
                return r.status < 500
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False

    async def query(self, q: str, db: str | None = None) -> list[dict[str, Any]]:
        """Run statements; returns ``results``. Raises SourceError on a statement error
        (except ``database not found``, which yields an empty result)."""
        headers, params = self._auth()
        params.update({"q": q, "epoch": "ns"})
        if db:
            params["db"] = db
        try:
            async with self.session.post(f"{self.url}/query", data=params, headers=headers,
                                         timeout=self.timeout) as r:
                text = await r.text()
                status = r.status
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            raise SourceUnavailable(f"{self.url}: {type(e).__name__}: {e}") from None
        if status >= 500:
            raise SourceUnavailable(f"{self.url}/query: HTTP {status}: {text[:200]}")
        try:
            body = json.loads(text) if text else {}
        except ValueError:
            raise SourceError(f"{self.url}/query: HTTP {status}: not JSON: {text[:200]}") from None
        if status >= 400 or "error" in body:
            raise SourceError(f"{self.url}/query: HTTP {status}: {body.get('error', text[:200])}")
        results = body.get("results", [])
        for res in results:
            err = res.get("error")
            if err and not str(err).startswith("database not found"):
                raise SourceError(f"InfluxQL error: {err} (query: {q[:200]})")
        return results

    async def write(self, lines: list[str], *, db: str, rp: str = "", api: str = "v1", org: str = "") -> None:
        headers, params = self._auth()
        body = ("\n".join(lines) + "\n").encode()
        if api == "v2":
            url = f"{self.url}/api/v2/write"
            params = {"bucket": db, "org": org, "precision": "ns"}
        else:
            url = f"{self.url}/write"
            params.update({"db": db, "precision": "ns"})
            if rp:
                params["rp"] = rp
        try:
            async with self.session.post(url, params=params, data=body, headers=headers,
                                         timeout=self.timeout) as r:
                if r.status >= 500:
                    raise SourceUnavailable(f"{url}: HTTP {r.status}: {(await r.text())[:200]}")
                if r.status >= 300:
                    raise SourceError(f"{url}: HTTP {r.status}: {(await r.text())[:200]}")
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            raise SourceUnavailable(f"{url}: {type(e).__name__}: {e}") from None
