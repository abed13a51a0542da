"""``sentinel feedback``: post one feedback to a running daemon's ``/api/v1/feedback`` (stdlib HTTP)."""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request
from typing import Any


def daemon_url(listen: str | None, external_url: str | None = None) -> str:
    """The daemon's base URL from its config: ``server.external_url``, else ``http://<server.listen>``.

    >>> daemon_url("0.0.0.0:9680"), daemon_url("127.0.0.1:9680", "https://sentinel.example/")
    ('http://127.0.0.1:9680', 'https://sentinel.example')
    """
    if external_url:
        return external_url.rstrip("/")
    host, _, port = (listen or "127.0.0.1:9680").rpartition(":")
    if host in ("", "0.0.0.0", "[::]", "::"):
        host = "127.0.0.1"
    return f"http://{host}:{port}"


def post_feedback(base_url: str, body: dict[str, Any], *, user: str | None = None, password: str | None = None,
                  ca_file: str | None = None, timeout: float = 10.0) -> tuple[int, dict[str, Any]]:
    """POST ``body``; returns ``(HTTP status, the JSON answer)``. Raises OSError when unreachable."""
    req = urllib.request.Request(base_url.rstrip("/") + "/api/v1/feedback", data=json.dumps(body).encode(),
                                 method="POST", headers={"Content-Type": "application/json"})
    if user is not None:
        token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    ctx = ssl.create_default_context(cafile=ca_file) if ca_file else None
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, {"status": "error", "error": raw.decode(errors="replace").strip()}
