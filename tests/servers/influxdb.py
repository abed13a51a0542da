"""An ephemeral, real InfluxDB 1.x (``/usr/bin/influxd``) for integration tests.

:func:`start_influxd` writes a config with its own temp dirs for meta/data/wal, the
HTTP API on a free 127.0.0.1 port, the RPC service (8088) on another free loopback
port, every other listener (graphite, collectd, opentsdb, udp) disabled, reporting and
the ``_internal`` monitor store off. The handle can stop and start the same instance
(same port, same data) to simulate an outage. Only loopback addresses are contacted.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._proc import LoggedServer, free_port, http_ok, require_binary

CONFIG = """\
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{dir}/meta"
  retention-autocreate = true
  logging-enabled = false

[data]
  dir = "{dir}/data"
  wal-dir = "{dir}/wal"
  wal-fsync-delay = "0s"
  query-log-enabled = false
  index-version = "inmem"

[retention]
  enabled = false

[shard-precreation]
  enabled = false

[monitor]
  store-enabled = false

[subscriber]
  enabled = true
  http-timeout = "5s"
  # one writer per subscription keeps pushes in write order (the default 40 writers can reorder
  # them, and Sentinel rejects a sample older than its stream's last one); docs/influxdb.md says so
  write-concurrency = 1

[http]
  enabled = true
  bind-address = "127.0.0.1:{port}"
  auth-enabled = false
  log-enabled = false
  pprof-enabled = false
  flux-enabled = false

[logging]
  level = "warn"
  suppress-logo = true

[ifql]
  enabled = false

[continuous_queries]
  enabled = false

[[graphite]]
  enabled = false

[[collectd]]
  enabled = false

[[opentsdb]]
  enabled = false

[[udp]]
  enabled = false
"""


@dataclass
class InfluxServer(LoggedServer):
    """A running (or stopped) influxd: base URL, work dir, and a tiny HTTP client."""

    url: str
    port: int
    workdir: Path
    binary: str
    config_path: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    _log: Any = field(default=None, repr=False)

    def start(self, timeout: float = 60.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        tail = self.launch([self.binary, "-config", str(self.config_path)], lambda: http_ok(f"{self.url}/ping"),
                           "influxd /ping", timeout)
        if tail is not None:
            raise RuntimeError(f"influxd did not start:\n{tail}")

    def query(self, q: str, db: str | None = None) -> list[dict[str, Any]]:
        """POST /query (epoch=ns); returns ``results``; raises on a statement error."""
        params = {"q": q, "epoch": "ns"}
        if db:
            params["db"] = db
        data = urllib.parse.urlencode(params).encode()
        with urllib.request.urlopen(urllib.request.Request(f"{self.url}/query", data=data), timeout=30) as r:
            body = json.loads(r.read())
        for res in body.get("results", []):
            if "error" in res:
                raise RuntimeError(res["error"])
        return body["results"]

    def write(self, db: str, lines: list[str] | str, rp: str = "") -> None:
        text = lines if isinstance(lines, str) else "\n".join(lines) + "\n"
        qs = urllib.parse.urlencode({"db": db, "precision": "ns", **({"rp": rp} if rp else {})})
        req = urllib.request.Request(f"{self.url}/write?{qs}", data=text.encode(), method="POST")
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.status == 204, r.status

    def count(self, db: str, measurement: str, fld: str) -> int:
        res = self.query(f'SELECT count("{fld}") FROM "{measurement}"', db)
        series = res[0].get("series") or []
        return int(series[0]["values"][0][1]) if series else 0


def start_influxd(timeout: float = 60.0) -> InfluxServer:
    """Start an ephemeral influxd; skips locally (fails under CI=true) if it is not installed."""
    binary = require_binary("influxd")
    workdir = Path(tempfile.mkdtemp(prefix="sentinel-influxd-"))
    port, rpc_port = free_port(), free_port()
    while rpc_port == port:
        rpc_port = free_port()
    config_path = workdir / "influxdb.conf"
    config_path.write_text(CONFIG.format(dir=workdir, port=port, rpc_port=rpc_port))
    server = InfluxServer(f"http://127.0.0.1:{port}", port, workdir, binary, config_path, workdir / "influxd.log")
    try:
        server.start(timeout)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return server


def stop_influxd(server: InfluxServer) -> None:
    """Stop the process and remove its dirs; safe to call twice."""
    server.stop()
    shutil.rmtree(server.workdir, ignore_errors=True)


@contextlib.contextmanager
def influxd() -> Iterator[InfluxServer]:
    server = start_influxd()
    try:
        yield server
    finally:
        stop_influxd(server)
