"""Reload (``POST /-/reload`` and SIGHUP): a valid new file is applied, an invalid one is refused whole.

The gauge ``sentinel_config_last_reload_successful`` says which happened; after a
refused reload the old config stays in force.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from sentinel.state import checkpoint as ckpt
from tests.daemon_helpers import (
    MIN_HISTORY,
    RunningDaemon,
    SentinelProcess,
    config_dict,
    http,
    keys,
    wait_for,
)

T0 = 1_900_000_000.0


def rewrite(path: Path, change: dict) -> None:
    """Apply ``change`` (section -> {key: value}) to the YAML file at ``path``."""
    data = yaml.safe_load(path.read_text())
    for section, kv in change.items():
        data.setdefault(section, {}).update(kv)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def enter_levels(d: RunningDaemon) -> set[float]:
    return {g.alerts.rules.enter for g in d.daemon.engine.groups.values()}


def test_post_reload_applies_a_valid_file_and_keeps_the_old_config_on_an_invalid_one(tmp_path: Path) -> None:
    path = tmp_path / "sentinel.yaml"
    path.write_text(yaml.safe_dump(config_dict(tmp_path, extra={"alerts": {"enter": 0.5, "exit": 0.4}})))
    ks = keys(3)
    d = RunningDaemon(path).start()
    try:
        d.feed(ks, 0, MIN_HISTORY, T0)
        d.wait_trained()
        assert enter_levels(d) == {0.5}

        rewrite(path, {"alerts": {"enter": 0.95, "exit": 0.9}})
        status, body = d.post("/-/reload")
        assert status == 200 and body.decode().startswith("config reloaded"), body
        assert d.metric("sentinel_config_last_reload_successful") == 1
        assert enter_levels(d) == {0.95} and d.daemon.cfg.alerts.exit == 0.9

        # behaviour follows the new levels: a spike that scores 1 fires, and resolves below the new exit
        d.feed(ks, MIN_HISTORY, MIN_HISTORY + 25, T0, {MIN_HISTORY + 5: {ks[0]: 30.0}})
        assert d.metric("sentinel_alert_transitions_total", {"status": "firing"}) == 1
        assert d.metric("sentinel_alert_transitions_total", {"status": "resolved"}) == 1

        good = path.read_text()
        path.write_text(good.replace("enter: 0.95", "enter: 7").replace("exit: 0.9", "exit: 0.2"))
        status, body = d.post("/-/reload")
        assert status == 500
        assert f"{path}:alerts.enter:" in body.decode(), body
        assert d.metric("sentinel_config_last_reload_successful") == 0
        assert enter_levels(d) == {0.95} and d.daemon.cfg.alerts.exit == 0.9  # the old config, whole

        path.write_text(good + "no_such_section: {}\n")
        status, body = d.post("/-/reload")
        assert status == 500 and "no_such_section: unknown key" in body.decode()
        assert d.metric("sentinel_config_last_reload_successful") == 0

        path.write_text(good)
        rewrite(path, {"model": {"hidden": 16}})
        status, body = d.post("/-/reload")
        assert status == 200 and "model.hidden take effect after a restart" in body.decode(), body
        assert d.metric("sentinel_config_last_reload_successful") == 1
        assert d.daemon.engine.groups[2].bank.dims.hidden == 8  # the running bank is untouched
    finally:
        d.stop()


def _gauge(base: str) -> float | None:
    status, body = http(base + "/metrics")
    assert status == 200
    for fam in text_string_to_metric_families(body.decode()):
        if fam.name == "sentinel_config_last_reload_successful":
            return fam.samples[0].value
    return None


@pytest.mark.timeout(180)
def test_sighup_reloads_a_valid_file_and_refuses_an_invalid_one(tmp_path: Path) -> None:
    path = tmp_path / "sentinel.yaml"
    path.write_text(yaml.safe_dump(config_dict(tmp_path)))
    p = SentinelProcess(path, tmp_path / "sentinel.log")
    try:
        p.wait_ready()
        assert _gauge(p.base) == 1
        good = path.read_text()

        path.write_text(good.replace("for: 0", "for: 5s").replace("cooldown: 0", "cooldown: nope"))
        p.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: _gauge(p.base) == 0, 30, "the gauge to show the refused reload")
        wait_for(lambda: "alerts.cooldown" in p.log(), 10, "the reason in the log")

        rewrite(path, {"alerts": {"cooldown": "1m", "enter": 0.8}})
        p.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: _gauge(p.base) == 1, 30, "the gauge to show the applied reload")
        assert "config reloaded" in p.log()
        assert http(p.base + "/-/ready")[0] == 200  # still serving
        assert p.terminate(timeout=60) == 0, p.log()
    finally:
        p.close()


@pytest.mark.timeout(180)
def test_sigterm_during_a_long_training_exits_without_waiting_for_it(tmp_path: Path) -> None:
    """The training worker is ended with the daemon; the job is re-issued after a restart."""
    path = tmp_path / "sentinel.yaml"
    long_training = {"train": {"epochs": 100_000, "patience": 100_000, "progress": True}}  # jobs logged at info
    path.write_text(yaml.safe_dump(config_dict(tmp_path, source="simulator", streams=6, extra=long_training)))
    p = SentinelProcess(path, tmp_path / "sentinel.log")
    try:
        p.wait_ready()
        wait_for(lambda: "training started" in p.log(), 60, "the training to start")
        assert p.terminate(timeout=60) == 0, p.log()
    finally:
        p.close()
    log = p.log(20000)
    assert "stopped" in log and "training done" not in log
    c = ckpt.load_latest(tmp_path / "state")
    assert c is not None and c.meta["model_version"] == 0  # nothing trained; streams warm again on restart
