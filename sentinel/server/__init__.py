"""Sentinel's one HTTP server: metrics, health, reload, streams API, status page (DESIGN §6)."""

from sentinel.server.app import (
    STATES,
    ServerHandle,
    StatusProvider,
    build_app,
    parse_listen,
    serve,
    update_web_config,
)
from sentinel.server.webconfig import (
    TLSServerConfig,
    WebConfig,
    load_web_config,
    parse_web_config,
    ssl_context,
)

__all__ = [
    "STATES",
    "ServerHandle",
    "StatusProvider",
    "TLSServerConfig",
    "WebConfig",
    "build_app",
    "load_web_config",
    "parse_listen",
    "parse_web_config",
    "serve",
    "ssl_context",
    "update_web_config",
]
