"""An ephemeral, real Prometheus for integration tests.

:func:`start_prometheus` runs ``/usr/bin/prometheus`` on a free 127.0.0.1 port with
its TSDB in a temp dir, a generated config that scrapes the given targets every
``scrape_interval`` and loads the given rule files, and returns a handle with a
small query client. :func:`prometheus_server` is the context-manager form. Only
loopback addresses are ever contacted.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ._proc import file_tail, free_port, http_ok, require_binary, stop_process, wait_until


class PromQueryError(RuntimeError):
    """Prometheus answered a query with ``status != success`` (e.g. a parse error)."""


@dataclass
class PrometheusServer:
    """A running Prometheus: its base URL, process and the files it was given."""

    url: str
    proc: subprocess.Popen[bytes]
    workdir: Path
    config_path: Path
    log_path: Path
    _log: Any = field(default=None, repr=False)

    def api(self, path: str, params: dict[str, str] | None = None, timeout: float = 10.0) -> Any:
        """GET ``/api/v1/<path>``; returns ``data`` or raises PromQueryError with Prometheus' reason."""
        qs = f"?{urllib.parse.urlencode(params)}" if params else ""
        req = urllib.request.Request(f"{self.url}/api/v1/{path}{qs}")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as e:  # 400/422 carry a JSON error body
            body = json.loads(e.read() or b"{}")
        if body.get("status") != "success":
            raise PromQueryError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; returns the result vector (a scalar comes back as one sample)."""
        data = self.api("query", {"query": expr})
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        if data["resultType"] == "matrix":
            return [{"metric": s["metric"], "value": s["values"][-1]} for s in data["result"] if s["values"]]
        return list(data["result"])

    def targets_up(self) -> bool:
        """True when every active target has been scraped successfully at least once."""
        active = self.api("targets")["activeTargets"]
        return bool(active) and all(t["health"] == "up" for t in active)

    def rule_groups(self) -> list[dict[str, Any]]:
        return list(self.api("rules")["groups"])

    def log_tail(self, n: int = 4000) -> str:
        return file_tail(self.log_path, n)


def write_config(path: Path, targets: Sequence[str], rule_files: Sequence[Path], scrape_interval: str) -> None:
    """A minimal prometheus.yml: one ``sentinel`` job scraping ``targets`` (host:port)."""
    cfg = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [
            {
                "job_name": "sentinel",
                "scrape_interval": scrape_interval,
                "scrape_timeout": scrape_interval,
                "static_configs": [{"targets": list(targets)}],
            }
        ],
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


def start_prometheus(
    targets: Sequence[str],
    rule_files: Sequence[Path] = (),
    scrape_interval: str = "1s",
    startup_timeout: float = 60.0,
) -> PrometheusServer:
    """Start Prometheus scraping ``targets``; blocks (bounded) until it answers ``/-/ready``.

    Skips the test locally (fails under ``CI=true``) when the binary is missing.
    Copies ``rule_files`` into its work dir so the shipped files are never touched.
    """
    binary = require_binary("prometheus")
    workdir = Path(tempfile.mkdtemp(prefix="sentinel-prom-"))
    copied = []
    for i, rf in enumerate(rule_files):
        dst = workdir / f"rules-{i}-{Path(rf).name}"
        shutil.copyfile(rf, dst)
        copied.append(dst)
    config_path = workdir / "prometheus.yml"
    write_config(config_path, targets, copied, scrape_interval)
    port = free_port()
    log_path = workdir / "prometheus.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed by stop()
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=workdir,
    )
    server = PrometheusServer(f"http://127.0.0.1:{port}", proc, workdir, config_path, log_path, log)
    try:
        wait_until(
            lambda: proc.poll() is None and http_ok(f"{server.url}/-/ready"),
            timeout=startup_timeout,
            what="prometheus /-/ready",
        )
    except TimeoutError:
        tail = server.log_tail()
        stop_prometheus(server)
        raise RuntimeError(f"prometheus did not become ready:\n{tail}") from None
    return server


def stop_prometheus(server: PrometheusServer) -> None:
    """Stop the process and remove its work dir; safe to call twice."""
    stop_process(server.proc)
    if server._log is not None:
        server._log.close()
        server._log = None
    shutil.rmtree(server.workdir, ignore_errors=True)


@contextlib.contextmanager
def prometheus_server(
    targets: Sequence[str], rule_files: Sequence[Path] = (), scrape_interval: str = "1s"
) -> Iterator[PrometheusServer]:
    server = start_prometheus(targets, rule_files, scrape_interval)
    try:
        yield server
    finally:
        stop_prometheus(server)
