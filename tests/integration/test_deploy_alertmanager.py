"""deploy/alertmanager with the real Debian tools: amtool check-config, amtool routes
test for SentinelAnomaly, and a real Alertmanager showing the inhibition and routing
(webhooks go to a recorder on 127.0.0.1; nothing else is contacted)."""

from __future__ import annotations

import json
import subprocess
import tempfile
import threading
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.servers._proc import free_port, http_ok, require_binary, stop_process, wait_until

ROOT = Path(__file__).resolve().parents[2]
AM_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"

pytestmark = pytest.mark.alertmanager

STREAM = {"measurement": "sensor", "site": "s1", "sensor": "t7"}


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_binary("amtool"), *args], capture_output=True, text=True, timeout=60)


def route(*labels: str) -> str:
    r = amtool("config", "routes", "test", f"--config.file={AM_CONFIG}", *labels)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout.strip()


def test_amtool_check_config() -> None:
    r = amtool("check-config", str(AM_CONFIG))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout and "2 inhibit rules" in r.stdout


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["alertname=SentinelAnomaly", "severity=critical", "measurement=sensor", "site=s1", "sensor=t7"],
         "sentinel-anomaly-critical"),
        (["alertname=SentinelAnomaly", "severity=warning", "measurement=sensor", "site=s1", "sensor=t7"],
         "sentinel-anomaly-warning"),
        (["alertname=SentinelAnomaly", "severity=warning", "measurement=power", "site=s1"], "power-team"),
        (["alertname=SentinelAnomaly", "severity=critical", "measurement=grid", "site=s1"], "power-team-critical"),
        (["alertname=SentinelDown", "severity=critical", "instance=a:9680"], "sentinel-ops-critical"),
        (["alertname=SentinelCheckpointStale", "severity=warning", "instance=a:9680"], "sentinel-ops"),
    ],
)
def test_amtool_routes(labels: list[str], receiver: str) -> None:
    assert route(*labels) == receiver
    r = amtool("config", "routes", "test", f"--config.file={AM_CONFIG}", f"--verify.receivers={receiver}", *labels)
    assert r.returncode == 0, r.stdout + r.stderr


def test_amtool_verify_fails_for_the_wrong_receiver() -> None:
    r = amtool("config", "routes", "test", f"--config.file={AM_CONFIG}", "--verify.receivers=sentinel-ops",
               "alertname=SentinelAnomaly", "severity=critical")
    assert r.returncode != 0


# --- a real Alertmanager ------------------------------------------------------------------


class Recorder:
    """Records Alertmanager webhook payloads POSTed to 127.0.0.1."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                rec.payloads.append({"path": self.path, **json.loads(body)})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def local_config(path: Path, receiver_url: str) -> None:
    """The shipped config with webhook URLs on the recorder and timers in seconds."""
    cfg = yaml.safe_load(AM_CONFIG.read_text())
    for r in cfg["receivers"]:
        for w in r.get("webhook_configs", []):
            w["url"] = receiver_url + "/" + r["name"]

    def fast(route: dict[str, Any]) -> None:
        for k, v in (("group_wait", "1s"), ("group_interval", "1s")):
            if k in route:
                route[k] = v
        for child in route.get("routes", []):
            fast(child)

    fast(cfg["route"])
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


@pytest.fixture
def alertmanager() -> Iterator[tuple[str, Recorder]]:
    binary = require_binary("prometheus-alertmanager", "alertmanager")
    rec = Recorder()
    with tempfile.TemporaryDirectory(prefix="sentinel-am-") as d:
        work = Path(d)
        local_config(work / "alertmanager.yml", rec.url)
        port = free_port()
        log = open(work / "am.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [binary, f"--config.file={work / 'alertmanager.yml'}", f"--storage.path={work / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT, cwd=work,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until(lambda: proc.poll() is None and http_ok(f"{url}/-/ready"), timeout=30, what="alertmanager")
            yield url, rec
        finally:
            stop_process(proc)
            log.close()
            rec.close()


def post_alerts(url: str, alerts: list[dict[str, Any]]) -> None:
    now = datetime.now(UTC)
    body = [{"labels": a, "annotations": {"summary": "test"}, "startsAt": now.isoformat(),
             "endsAt": (now + timedelta(minutes=10)).isoformat()} for a in alerts]
    req = urllib.request.Request(f"{url}/api/v2/alerts", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200


def alert_states(url: str) -> dict[tuple[str, str], dict[str, Any]]:
    with urllib.request.urlopen(f"{url}/api/v2/alerts", timeout=5) as r:
        alerts = json.loads(r.read())
    return {(a["labels"]["alertname"], a["labels"].get("severity", "")): a["status"] for a in alerts}


def test_real_alertmanager_routes_anomalies_and_inhibits_them_while_sentinel_is_unhealthy(
    alertmanager: tuple[str, Recorder],
) -> None:
    url, rec = alertmanager
    critical = {"alertname": "SentinelAnomaly", "severity": "critical", **STREAM}
    warning = {"alertname": "SentinelAnomaly", "severity": "warning", **STREAM}
    post_alerts(url, [critical, warning])
    # The critical anomaly is delivered to its receiver; the warning on the same stream is inhibited.
    wait_until(lambda: any(p["receiver"] == "sentinel-anomaly-critical" for p in rec.payloads), timeout=30,
               what="critical anomaly notification")
    states = alert_states(url)
    assert states[("SentinelAnomaly", "critical")]["state"] == "active"
    assert states[("SentinelAnomaly", "warning")]["state"] == "suppressed"
    delivered = next(p for p in rec.payloads if p["receiver"] == "sentinel-anomaly-critical")
    assert delivered["path"] == "/sentinel-anomaly-critical" and delivered["version"] == "4"
    assert delivered["groupLabels"] == {"alertname": "SentinelAnomaly", "measurement": "sensor", "site": "s1"}
    assert [a["labels"]["sensor"] for a in delivered["alerts"]] == ["t7"]

    # Sentinel becomes unhealthy: every anomaly alert is inhibited, the health alert goes to ops.
    post_alerts(url, [{"alertname": "SentinelNotReady", "severity": "warning", "inhibits_anomalies": "true",
                       "instance": "a:9680", "source": "influxdb"}])
    wait_until(lambda: alert_states(url)[("SentinelAnomaly", "critical")]["state"] == "suppressed", timeout=30,
               what="anomaly inhibited")
    states = alert_states(url)
    assert states[("SentinelAnomaly", "critical")]["inhibitedBy"]
    assert states[("SentinelNotReady", "warning")]["state"] == "active"
    wait_until(lambda: any(p["receiver"] == "sentinel-ops" for p in rec.payloads), timeout=30,
               what="health alert notification")
    assert not any(p["receiver"] == "sentinel-anomaly-warning" for p in rec.payloads)
