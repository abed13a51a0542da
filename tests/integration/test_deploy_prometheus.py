"""deploy/prometheus with the real Debian tools: promtool check config / check rules /
test rules, and a real Prometheus loading the shipped rules."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.servers._proc import require_binary

ROOT = Path(__file__).resolve().parents[2]
PROM_DIR = ROOT / "deploy" / "prometheus"
RULES = PROM_DIR / "rules" / "sentinel.yml"
RULE_TESTS = PROM_DIR / "tests" / "sentinel_test.yml"

pytestmark = pytest.mark.prometheus


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_binary("promtool"), *args], capture_output=True, text=True, timeout=120)


def test_promtool_check_config() -> None:
    r = promtool("check", "config", str(PROM_DIR / "prometheus.yml"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS: 1 rule files found" in r.stdout + r.stderr


def test_promtool_check_rules() -> None:
    r = promtool("check", "rules", str(RULES))
    assert r.returncode == 0, r.stdout + r.stderr
    n = sum(len(g["rules"]) for g in yaml.safe_load(RULES.read_text())["groups"])
    assert f"SUCCESS: {n} rules found" in r.stdout + r.stderr


def test_every_alert_rule_is_unit_tested_with_firing_and_quiet_cases() -> None:
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r}
    cases = [c for t in yaml.safe_load(RULE_TESTS.read_text())["tests"] for c in t.get("alert_rule_test", [])]
    firing = {c["alertname"] for c in cases if c["exp_alerts"]}
    quiet = {c["alertname"] for c in cases if not c["exp_alerts"]}
    assert alerts - firing == set(), f"alerts never shown firing: {alerts - firing}"
    assert alerts - quiet == set(), f"alerts never shown quiet: {alerts - quiet}"


def test_promtool_test_rules() -> None:
    r = promtool("test", "rules", str(RULE_TESTS))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    """The checks above can fail: a rule with a PromQL syntax error is refused."""
    bad = tmp_path / "bad.yml"
    bad.write_text("groups:\n  - name: x\n    rules:\n      - alert: Broken\n        expr: sum(rate(up[5m])\n")
    r = promtool("check", "rules", str(bad))
    assert r.returncode != 0
