"""Reload, one component at a time: each change is applied (shown by behaviour) or refused naming the key.

``sentinel_config_last_reload_successful`` is 1 after an applied reload (its message names
what waits for a restart) and 0 after a refused one (the old config stays whole).
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from sentinel.config import load_config_text
from sentinel.runtime.reload import SectionReloader, changed_keys, reload_all
from tests.daemon_helpers import MIN_HISTORY, RunningDaemon, config_dict, keys, wait_for
from tests.servers._proc import free_port
from tests.servers.alertmanager import WebhookReceiver

T0 = 1_900_000_000.0


def write(path: Path, data: dict) -> None:
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def daemon_for(tmp_path: Path, **kw: object) -> tuple[Path, dict, RunningDaemon]:
    """The config file (and its data, to change) and an unstarted in-process daemon on it."""
    path = tmp_path / "sentinel.yaml"
    data = config_dict(tmp_path, **kw)  # type: ignore[arg-type]
    write(path, data)
    return path, data, RunningDaemon(path)


def reload(d: RunningDaemon) -> tuple[int, str]:
    status, body = d.post("/-/reload")
    return status, body.decode()


def thresholds(d: RunningDaemon) -> list[float]:
    status, body = d.get("/api/v1/streams")
    assert status == 200
    return [s["threshold"] for s in sorted(json.loads(body)["data"], key=lambda s: s["stream"])]


def test_train_change_applies_to_the_next_job(tmp_path: Path) -> None:
    path, data, d = daemon_for(tmp_path)
    ks = keys(2)
    with d.start():
        d.feed(ks, 0, MIN_HISTORY // 2, T0)  # half of min_history: nothing trains
        assert d.counts()["warming"] == 2
        data["train"]["min_history"] = MIN_HISTORY // 4
        data["train"]["threads"] = 2
        write(path, data)
        status, msg = reload(d)
        assert status == 200 and "applied train.min_history" in msg, msg
        assert "train.threads take effect after a restart" in msg
        assert d.metric("sentinel_config_last_reload_successful") == 1
        d.wait_trained()  # the scheduler hands out jobs under the new min_history
        assert d.counts()["ready"] == 2


def test_threshold_risk_applies_and_a_new_method_is_refused(tmp_path: Path) -> None:
    """The quantile method derives its threshold from ``risk`` at every sample (SPOT at its next refit)."""
    path, data, d = daemon_for(tmp_path, extra={"detect": {"threshold": {"method": "quantile"}}})
    ks = keys(3)
    with d.start():
        d.feed(ks, 0, MIN_HISTORY, T0)
        d.wait_trained()
        d.feed(ks, MIN_HISTORY, MIN_HISTORY + 2, T0)
        before = thresholds(d)
        data["detect"]["threshold"]["risk"] = 0.05  # a far likelier tail: lower thresholds
        write(path, data)
        status, msg = reload(d)
        assert status == 200 and "applied detect.threshold.risk" in msg, msg
        d.feed(ks, MIN_HISTORY + 2, MIN_HISTORY + 4, T0)
        after = thresholds(d)
        assert all(a < b for a, b in zip(after, before, strict=True)), (before, after)

        data["detect"]["threshold"]["method"] = "dspot"
        data["alerts"]["enter"] = 0.99
        write(path, data)
        status, msg = reload(d)
        assert status == 500 and "detect.threshold.method:" in msg and "refused" in msg, msg
        assert d.metric("sentinel_config_last_reload_successful") == 0
        assert d.daemon.cfg.detect.threshold.method == "quantile" and d.daemon.cfg.alerts.enter == 0.9  # nothing applied


def test_alerts_change_applies_to_the_running_streams(tmp_path: Path) -> None:
    path, data, d = daemon_for(tmp_path)
    ks = keys(2)
    with d.start():
        d.feed(ks, 0, MIN_HISTORY, T0)
        d.wait_trained()
        data["alerts"].update({"enter": 0.01, "exit": 0.0, "severity": "page"})  # everything alerts now
        write(path, data)
        status, msg = reload(d)
        assert status == 200 and "applied alerts.enter, alerts.exit, alerts.severity" in msg, msg
        d.feed(ks, MIN_HISTORY, MIN_HISTORY + 3, T0, {MIN_HISTORY + 1: {ks[0]: 30.0}})
        assert d.metric("sentinel_alert_transitions_total", {"status": "firing"}) >= 1


def test_a_sink_change_applies_to_the_next_delivery(tmp_path: Path) -> None:
    old_port, new_port = free_port(), free_port()
    path = tmp_path / "sentinel.yaml"
    data = config_dict(tmp_path, extra={"sinks": {"webhooks": [{"name": "ops",
                                                               "url": f"http://127.0.0.1:{old_port}/hook"}]}})
    write(path, data)
    ks = keys(2)
    d = RunningDaemon(path)
    old_rx = d.call(WebhookReceiver(port=old_port).start())
    new_rx = d.call(WebhookReceiver(port=new_port).start())
    try:
        d.start()
        d.feed(ks, 0, MIN_HISTORY, T0)
        d.wait_trained()
        data["sinks"]["webhooks"][0]["url"] = f"http://127.0.0.1:{new_port}/hook"
        data["sinks"]["webhooks"].append({"name": "extra", "url": f"http://127.0.0.1:{old_port}/other"})
        write(path, data)
        status, msg = reload(d)
        assert status == 200 and "applied sinks.webhooks[ops].url" in msg, msg
        assert "sinks.webhooks[extra] take effect after a restart" in msg
        d.feed(ks, MIN_HISTORY, MIN_HISTORY + 2, T0, {MIN_HISTORY + 1: {ks[1]: 40.0}})
        wait_for(lambda: len(new_rx.received) >= 1, 20, "the alert at the new URL")
        assert old_rx.received == []
    finally:
        d.call(old_rx.stop())
        d.call(new_rx.stop())
        d.stop()


def test_a_source_change_is_named_as_waiting_for_a_restart(tmp_path: Path) -> None:
    path, data, d = daemon_for(tmp_path, source="simulator", streams=2)
    with d.start():
        data["sources"][0]["interval"] = "2s"
        write(path, data)
        status, msg = reload(d)
        assert status == 200 and "changes to sources[sim].interval take effect after a restart" in msg, msg
        assert d.metric("sentinel_config_last_reload_successful") == 1
        assert d.daemon.cfg.sources[0].interval == 1.0  # the running source keeps its settings


def test_every_changed_key_is_applied_named_for_a_restart_or_refused() -> None:
    old = load_config_text("")
    new = load_config_text("""
server: {listen: "127.0.0.1:1"}
model: {hidden: 8}
train: {epochs: 3}
detect: {threshold: {method: quantile, depth: 4}}
metrics: {per_stream: none}
logging: {level: debug, format: json}
""")
    applied: list[str] = []
    rs = [SectionReloader("train", live=["train.epochs"], on_apply=lambda c: applied.append("train")),
          SectionReloader("detect", refuse={"detect.threshold.method": "no"}),
          SectionReloader("metrics", live=["metrics"]), SectionReloader("logging", live=["logging.level"]),
          SectionReloader("server"), SectionReloader("model")]
    out = reload_all(rs, old, new)
    assert not out.ok and out.change.refused == ["detect.threshold.method: no"] and applied == []
    assert out.config is old
    assert sorted(out.change.applied) == ["logging.level", "metrics.per_stream", "train.epochs"]
    assert sorted(out.change.restart) == ["detect.threshold.depth", "logging.format", "model.hidden", "server.listen"]
    ok = reload_all(rs[:1] + rs[2:], old, new)
    assert ok.ok and applied == ["train"] and ok.config.train.epochs == 3 and ok.config.model.hidden == 32
    assert ok.config.metrics.per_stream == "none" and ok.config.server.listen == old.server.listen
    assert changed_keys(old, old, "all") == []
