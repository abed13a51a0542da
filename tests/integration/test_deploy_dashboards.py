"""Every PromQL expression in both Grafana dashboards, run against a real Prometheus
that loads the shipped recording rules: each must parse and return data.

Two scrape targets:
* a tiny exporter on loopback serving Sentinel's own ``Metrics`` class (every contract
  metric, with counters that grow on each scrape) — fast, always runs;
* the real daemon, ``sentinel run`` (the one installed beside the test interpreter) on a
  temp copy of ``config/demo.yaml``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from sentinel.band_metrics import BandCollector
from sentinel.cluster.metrics import RouterMetrics, ScorerMetrics
from sentinel.metrics import Metrics, StreamRow
from sentinel.runtime.views import StreamView
from sentinel.types import StreamKey
from tests.servers._proc import free_port, http_ok, sentinel_exe, stop_process, wait_until
from tests.servers.prometheus import PrometheusServer, PromQueryError, prometheus_server

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
RULES = ROOT / "deploy" / "prometheus" / "rules" / "sentinel.yml"

pytestmark = pytest.mark.prometheus

# What Grafana would put in for its built-in variables (the scrape interval here is 1s).
BUILTINS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m"}
FALLBACK = " or on() vector(0)"
_LABEL_VALUES = re.compile(r"^label_values\((?:(?P<metric>.+),\s*)?(?P<label>\w+)\)$")


@dataclass(frozen=True)
class Expr:
    where: str  # "<dashboard uid> / <panel title> / <refId>" etc.
    promql: str
    needs_data: bool = True


def dashboard_exprs() -> list[Expr]:
    """Every Prometheus expression of both dashboards: targets, query variables, annotations."""
    out: list[Expr] = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        d = json.loads(path.read_text())
        panels = [q for p in d["panels"] for q in (p, *p.get("panels", []))]
        for p in panels:
            if p.get("datasource", {}).get("type") != "prometheus":
                continue
            for t in p["targets"]:
                out.append(Expr(f"{d['uid']} / {p['title']} / {t['refId']}", t["expr"]))
        for v in d["templating"]["list"]:
            if v["type"] == "query" and v.get("datasource", {}).get("type") == "prometheus":
                m = _LABEL_VALUES.match(v["query"])
                assert m, f"unsupported variable query {v['query']!r}"
                metric = m["metric"] or "{__name__=~\".+\"}"
                out.append(Expr(f"{d['uid']} / variable {v['name']}", f"group by ({m['label']}) ({metric})"))
        for a in d["annotations"]["list"]:
            if a.get("expr"):
                # An alert-span annotation has data only while the stream fires.
                out.append(Expr(f"{d['uid']} / annotation {a['name']}", a["expr"], needs_data=False))
    return out


def pick_stream(prom: PrometheusServer) -> dict[str, str]:
    """Values for $measurement/$site/$sensor: a firing stream if there is one, else any."""
    for q in ("sentinel_alert_state == 2", "sentinel_anomaly_score"):
        res = prom.query(f"group by (measurement, site, sensor) ({q})")
        res = [r for r in res if {"measurement", "site", "sensor"} <= set(r["metric"])]
        if res:
            m = sorted(res, key=lambda r: sorted(r["metric"].items()))[0]["metric"]
            sel = f'measurement="{m["measurement"]}", site="{m["site"]}", sensor="{m["sensor"]}"'
            fields = sorted(r["metric"].get("field", "") for r in prom.query(f"sentinel_expected_value{{{sel}}}"))
            return {"$measurement": m["measurement"], "$site": m["site"], "$sensor": m["sensor"],
                    "$field": fields[0] if fields else "value"}
    raise AssertionError("no stream with measurement/site/sensor labels is exported")


def substitute(expr: str, values: dict[str, str]) -> str:
    for k in sorted(values, key=len, reverse=True):
        expr = expr.replace(k, values[k])
    assert "$" not in expr, f"unsubstituted variable in {expr!r}"
    return expr


def fast_rules(tmp: Path) -> Path:
    """The shipped rules with every group evaluated each second (so the test needs seconds, not minutes)."""
    rules = yaml.safe_load(RULES.read_text())
    for g in rules["groups"]:
        g["interval"] = "1s"
    out = tmp / "sentinel.yml"
    out.write_text(yaml.safe_dump(rules, sort_keys=False))
    return out


def check_all(prom: PrometheusServer, exprs: list[Expr], timeout: float) -> dict[str, str]:
    """Query every expression until all have data (bounded); return what still fails, by ``where``."""
    problems: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    values: dict[str, str] = {}
    for _attempt in range(int(timeout) + 1):
        problems.clear()
        try:
            values = {**BUILTINS, **pick_stream(prom)}
        except AssertionError as e:
            problems["(stream variables)"] = str(e)
        if values:
            for e in exprs:
                q = substitute(e.promql, values)
                try:
                    res = prom.query(q)
                except PromQueryError as err:  # a parse error never heals: fail at once
                    return {e.where: f"{q!r}: {err}"}
                if e.needs_data and not res:
                    problems[e.where] = f"{q!r}: no data"
        if not problems or time.monotonic() > deadline:
            return problems
        time.sleep(1.0)
    return problems


# --- a static exporter serving Sentinel's own Metrics class -------------------------------


class ContractExporter:
    """Serves ``sentinel.metrics.Metrics`` on 127.0.0.1 with every contract metric labelled;
    counters and histograms grow on each scrape so rates are non-zero."""

    STREAMS: ClassVar[list[tuple[str, str, str, int]]] = [("sensor", "s0", "t0", 0), ("sensor", "s0", "t1", 2), ("sensor", "s1", "t2", 1)]

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.m = Metrics(self.registry)
        self.scrapes = 0
        self.m.add_stream_collector(self._rows)
        self.registry.register(BandCollector(self._views, lambda: "all"))
        # the cluster roles' metrics (the overview's "Cluster" row), as a router and a scorer export them
        self.router = RouterMetrics(self.registry)
        self.scorer = ScorerMetrics(self.registry)
        self.scorer.own([0, 1, 2])
        self.scorer.lag.labels("1").set(7)
        self.scorer.model_version.labels("0").set(2)
        self.router.lease_held.set(1)
        self.m.model_version.set(3)
        self.m.checkpoint_last_success.set(time.time())
        for state, n in (("warming", 1), ("ready", 0), ("ok", 1), ("pending", 1), ("firing", 1)):
            self.m.streams.labels(state=state).set(n)
        self.m.source_up.labels(source="simulator").set(1)
        self.m.outbox_pending.labels(sink="alertmanager").set(2)
        self.m.queue_depth.labels(queue="ingest").set(5)
        self._lock = threading.Lock()
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = exporter.scrape()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def _views(self) -> list[StreamView]:
        return [StreamView(StreamKey.of(me, site=si, sensor=se), ("value",), True, st, 0.5, 0.2, 0.5, 1, 0.0, 0,
                           (20.0 + st,), (19.0 + st,), (21.0 + st,)) for me, si, se, st in self.STREAMS]

    def _rows(self) -> list[StreamRow]:
        return [
            StreamRow({"measurement": me, "site": si, "sensor": se}, score=0.1 + 0.3 * st, error=0.2 * (1 + st),
                      threshold=0.5, alert_state=st, alerts_total=self.scrapes * st)
            for me, si, se, st in self.STREAMS
        ]

    def scrape(self) -> bytes:
        with self._lock:
            self.scrapes += 1
            m = self.m
            m.samples_ingested.labels(source="simulator").inc(30)
            m.samples_rejected.labels(reason="out_of_order").inc()
            m.score_batch_seconds.observe(0.002)
            m.ingest_lag_seconds.labels(source="simulator").set(0.5)
            m.retrain.labels(result="success").inc()
            m.retrain_duration_seconds.observe(12.0)
            m.notifications.labels(sink="alertmanager", result="success").inc()
            m.outbox_dropped.labels(sink="alertmanager").inc()
            m.queue_dropped.labels(queue="ingest").inc()
            m.alert_transitions.labels(status="firing").inc()
            self.router.published.inc(30)
            self.router.publish_errors.inc()
            self.scorer.checkpoint_seconds.observe(0.05)
            return generate_latest(self.registry)

    def __enter__(self) -> ContractExporter:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_extraction_finds_every_panel_query() -> None:
    exprs = dashboard_exprs()
    wheres = {e.where.split(" / ")[0] for e in exprs}
    assert wheres == {"sentinel-overview", "sentinel-stream"}
    assert len(exprs) >= 30
    assert substitute("rate(x[$__rate_interval])", BUILTINS) == "rate(x[1m])"


def test_every_dashboard_query_returns_data_from_contract_exporter(tmp_path: Path) -> None:
    exprs = dashboard_exprs()
    with ContractExporter() as exporter, prometheus_server([exporter.target], [fast_rules(tmp_path)]) as prom:
        wait_until(prom.targets_up, timeout=30, what="first scrape of the exporter")
        problems = check_all(prom, exprs, timeout=60)
        assert not problems, "\n".join(f"{k}: {v}" for k, v in problems.items())
        # The `or on() vector(0)` fallbacks must not hide a broken left-hand side.
        values = {**BUILTINS, **pick_stream(prom)}
        for e in exprs:
            if e.promql.endswith(FALLBACK):
                q = substitute(e.promql.removesuffix(FALLBACK), values)
                assert prom.query(q), f"{e.where}: {q!r} has no data without its fallback"
        # With a firing stream picked, the alert-span annotation has data too.
        for e in exprs:
            if not e.needs_data:
                assert prom.query(substitute(e.promql, values)), e.where
        # The shipped rules loaded and evaluated without error.
        groups = prom.rule_groups()
        assert {g["name"] for g in groups} == {"sentinel-recording", "sentinel-health"}
        assert all(r["health"] == "ok" for g in groups for r in g["rules"]), groups
        assert exporter.scrapes >= 2


def test_a_wrong_metric_name_is_caught(tmp_path: Path) -> None:
    """The check can fail: an expression on a metric the exporter lacks has no data."""
    with ContractExporter() as exporter, prometheus_server([exporter.target]) as prom:
        wait_until(prom.targets_up, timeout=30, what="first scrape of the exporter")
        problems = check_all(prom, [Expr("typo", "sentinel_anomaly_scores")], timeout=2)
        assert "typo" in problems
        problems = check_all(prom, [Expr("syntax", "sum(rate(sentinel_streams[1m])")], timeout=2)
        assert "parse error" in problems["syntax"]


# --- the real daemon ---------------------------------------------------------------------


def _daemon_config(tmp: Path) -> Path:
    demo = ROOT / "config" / "demo.yaml"
    cfg = yaml.safe_load(demo.read_text()) or {}
    cfg.setdefault("state", {})["dir"] = str(tmp / "state")
    cfg.setdefault("sinks", {}).setdefault("outbox", {})["path"] = str(tmp / "outbox")
    out = tmp / "demo.yaml"
    out.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return out


@pytest.fixture
def sentinel_daemon(tmp_path: Path) -> Iterator[str]:
    """``sentinel run`` on the demo config; yields host:port once /-/ready answers (bounded)."""
    exe = sentinel_exe()
    config = _daemon_config(tmp_path)
    port = free_port()
    log = open(tmp_path / "sentinel.log", "wb")  # noqa: SIM115
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.Popen([str(exe), "run", "--config", str(config), "--listen", f"127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, env=env)
    try:
        try:
            wait_until(lambda: proc.poll() is None and http_ok(f"http://127.0.0.1:{port}/-/ready"),
                       timeout=240, interval=0.5, what="sentinel /-/ready")
        except TimeoutError:
            pytest.fail(f"sentinel exited ({proc.poll()}) or never became ready:\n"
                        + (tmp_path / "sentinel.log").read_text(errors="replace")[-4000:])
        yield f"127.0.0.1:{port}"
    finally:
        stop_process(proc, timeout=60)
        log.close()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_every_dashboard_query_returns_data_from_running_sentinel(sentinel_daemon: str, tmp_path: Path) -> None:
    exprs = dashboard_exprs()
    with prometheus_server([sentinel_daemon], [fast_rules(tmp_path)]) as prom:
        wait_until(prom.targets_up, timeout=30, what="first scrape of sentinel")
        problems = check_all(prom, exprs, timeout=180)
        assert not problems, "\n".join(f"{k}: {v}" for k, v in problems.items())
        groups = prom.rule_groups()
        assert all(r["health"] == "ok" for g in groups for r in g["rules"]), groups
