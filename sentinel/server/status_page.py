"""The status page at ``GET /``: one self-contained HTML document (inline CSS and JS, no CDN, no assets).

Written as three files beside this module, joined once at import: ``status_page.html`` (the
document), ``status_page.css`` and ``status_page.js`` (inlined into it).

The page polls ``api/v1/status``, ``api/v1/streams?state=<s>&limit=<n>`` (one request per state) and
``api/v1/streams/<key>/history`` for the streams it draws, every ``refresh_seconds``. It lists streams by
state (firing, pending, warming, ok; then by score), shows counts per state, and draws small SVG charts of
each field's value, the reconstruction error against the threshold, and the score, with alert spans
shaded. ``/?stream=<key>`` focuses one stream (alerts' ``generatorURL`` links there). URLs are relative,
so the page also works behind a reverse proxy that mounts Sentinel under a path prefix.
"""

from __future__ import annotations

import html
import json
from importlib import resources

__all__ = ["render_status_page"]


def _read(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


_PAGE = (_read("status_page.html").replace("__SENTINEL_STYLE__", _read("status_page.css"))
         .replace("__SENTINEL_SCRIPT__", _read("status_page.js")))


def render_status_page(
    *, version: str = "", chart_streams: int = 48, refresh_seconds: float = 5.0, table_limit: int = 1000
) -> str:
    """The page's HTML with its settings embedded (``chart_streams``: streams drawn with charts)."""
    cfg = {
        "version": version,
        "chartStreams": max(0, int(chart_streams)),
        "refreshMs": max(500, int(refresh_seconds * 1000)),
        "tableLimit": max(1, int(table_limit)),
    }
    cfg_json = json.dumps(cfg).replace("</", "<\\/")
    return _PAGE.replace("__SENTINEL_CONFIG__", cfg_json).replace("__SENTINEL_VERSION__", html.escape(version))
