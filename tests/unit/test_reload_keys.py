"""D6: every config key is applied, named for a restart or refused at reload, never silently ignored.

The test walks the whole schema (every section, every source type, every sink), changes one
key at a time and asks the daemon's real reloaders what they would do: a key added to the
schema later is covered without touching this test, and a new section without a reloader fails.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from sentinel.config import SentinelConfig, load_config_text
from sentinel.runtime.daemon import Daemon
from sentinel.runtime.reload import SectionReloader, keep_running, reload_all

BASE = """
sources:
  - {type: simulator, name: sim}
  - {type: influxdb, name: influx, mode: receiver}
  - {type: influxdb, name: poller, mode: poll_influxql, url: "http://127.0.0.1:1", database: d}
  - {type: postgres, name: pg, dsn: "postgresql://u@127.0.0.1:1/d", table: t, key_columns: [k], value_columns: [v]}
  - {type: mqtt, name: mq, url: "mqtt://127.0.0.1:1", topics: ["a/#"]}
sinks:
  webhooks: [{name: hook, url: "http://127.0.0.1:1/h"}]
  alertmanagers: [{name: am, url: "http://127.0.0.1:1"}]
"""


def base() -> SentinelConfig:
    try:
        return load_config_text(BASE)
    except Exception as e:  # a source's required keys changed: say so plainly
        pytest.fail(f"the test's base config no longer loads: {e}")


def other(v: Any) -> Any:
    """A different value of the same kind (validation is bypassed: only the key diff matters)."""
    if isinstance(v, bool):
        return not v
    if isinstance(v, int | float):
        return v + 1
    if isinstance(v, str):
        return v + "x"
    if isinstance(v, list | tuple):
        return [*v, "x"]
    if isinstance(v, dict):
        return {**v, "x": "y"}
    return "x"


def leaves(obj: Any, prefix: str) -> Iterator[tuple[str, list[tuple[str, Any]]]]:
    """``(dotted key, path)`` of every leaf value; path items are ``("f", field name)`` or ``("i", index)``."""
    if isinstance(obj, BaseModel):
        for name, f in type(obj).model_fields.items():
            v = getattr(obj, name)
            yield from ((k, [("f", name), *p]) for k, p in leaves(v, f"{prefix}.{f.alias or name}"))
    elif isinstance(obj, list) and obj and all(isinstance(x, BaseModel) and hasattr(x, "name") for x in obj):
        for i, x in enumerate(obj):
            yield from ((k, [("i", i), *p]) for k, p in leaves(x, f"{prefix}[{x.name}]"))
    else:
        yield prefix, []


def changed(obj: Any, path: list[tuple[str, Any]]) -> Any:
    if not path:
        return other(obj)
    kind, key = path[0]
    if kind == "i":
        items = list(obj)
        items[key] = changed(items[key], path[1:])
        return items
    return obj.model_copy(update={key: changed(getattr(obj, key), path[1:])})


def all_leaves(cfg: SentinelConfig) -> list[tuple[str, list[tuple[str, Any]]]]:
    out = []
    for section in type(cfg).model_fields:
        out += [(k, [("f", section), *p]) for k, p in leaves(getattr(cfg, section), section)]
    return out


@pytest.fixture(scope="module")
def reloaders() -> list[Any]:
    return Daemon(base()).reloaders()


def test_every_section_has_a_reloader(reloaders: list[Any]) -> None:
    assert sorted(r.name for r in reloaders) == sorted(SentinelConfig.model_fields)


def test_every_key_of_the_schema_is_applied_restart_or_refused(reloaders: list[Any]) -> None:
    old = base()
    keys = all_leaves(old)
    assert len(keys) > 150 and any(k.startswith("sources[mq].") for k, _ in keys)
    assert "server.open_probes" in dict(keys) and "sinks.webhooks[hook].url" in dict(keys)
    unanswered = []
    for key, path in keys:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydantic warns when dumping a value of another type
            new = changed(old, path)
            answers = [a for r in reloaders for a in (lambda c: c.applied + c.restart + c.refused)(r.check(old, new))]
        item = key.removesuffix(".name")  # a renamed list item: the old one goes, the new one comes
        under = (key, key + ".", key + ":") if item == key else (item, item[:-1] + "x]")
        if not answers or not all(a == key or a.startswith(under) for a in answers):
            unanswered.append((key, answers))
    assert unanswered == [], "\n".join(map(str, unanswered))


def test_a_section_without_a_reloader_is_named_for_a_restart() -> None:
    old = load_config_text("")
    new = load_config_text("model: {hidden: 8}\nalerts: {enter: 0.8}")
    out = reload_all([SectionReloader("alerts", live=["alerts"])], old, new)
    assert out.ok and out.change.applied == ["alerts.enter"] and out.change.restart == ["model.hidden"]
    assert out.config.model.hidden == 32 and out.config.alerts.enter == 0.8


def test_keys_waiting_for_a_restart_keep_their_running_value_so_the_next_reload_names_them_again() -> None:
    old = base()
    new = load_config_text(BASE.replace('{name: hook, url: "http://127.0.0.1:1/h"}',
                                        '{name: hook, url: "http://127.0.0.1:2/h"}, {name: extra, url: "http://x"}')
                           + "train: {epochs: 3, threads: 2}\n")
    rs = [SectionReloader("train", live=["train.epochs"]),
          SectionReloader("sinks", live=["sinks.webhooks"], on_apply=None)]
    rs[1].live = ["sinks.webhooks[hook]"]
    out = reload_all(rs, old, new)
    assert out.ok and sorted(out.change.restart) == ["sinks.webhooks[extra]", "train.threads"]
    assert out.config.train.epochs == 3 and out.config.train.threads == 1
    assert [w.name for w in out.config.sinks.webhooks] == ["hook"]
    assert out.config.sinks.webhooks[0].url == "http://127.0.0.1:2/h"
    again = reload_all(rs, out.config, new)
    assert sorted(again.change.restart) == ["sinks.webhooks[extra]", "train.threads"]
    assert keep_running(old.train, new.train, "train", ["nope.x"]) is new.train


def test_train_epochs_and_lr_reach_the_next_training_job() -> None:
    """D6: ``train.epochs`` and ``train.lr`` were reported reloaded but ignored."""
    old = load_config_text("")
    d = Daemon(old)
    out = reload_all(d.reloaders(), old, load_config_text("train: {epochs: 3, lr: 0.002}"))
    assert out.ok and sorted(out.change.applied) == ["train.epochs", "train.lr"], out.message
    assert (d.engine.settings.epochs, d.engine.settings.lr) == (3, 0.002)


@pytest.mark.parametrize("budget", ["null", "0.1"])
def test_alerts_resolve_for_ticks_reaches_the_running_streams(budget: str) -> None:
    """D6: without ``alerts.false_alerts_per_day`` a reloaded ``resolve_for_ticks`` was reported applied and
    left every running stream's resolve floor as it was (only streams trained later got it)."""
    from tests.unit.test_engine import CONFIG, MIN_HISTORY, A, B, feed

    text = CONFIG.replace("resolve_for_ticks: 0}", f"resolve_for_ticks: 0, false_alerts_per_day: {budget}}}")
    old = load_config_text(text)
    d = Daemon(old)
    feed(d.engine, [A, B], 0, MIN_HISTORY + 8)  # one sample a second: a floor of 5 ticks is 5 s
    (g,) = d.engine.groups.values()
    assert list(g.alerts.a["resolve_s"][:2]) == [0.0, 0.0]
    out = reload_all(d.reloaders(), old, load_config_text(text.replace("resolve_for_ticks: 0,",
                                                                       "resolve_for_ticks: 5,")))
    assert out.ok and out.change.applied == ["alerts.resolve_for_ticks"], out.message
    assert list(g.alerts.a["resolve_s"][:2]) == [5.0, 5.0]


def test_alerts_for_ticks_reaches_the_running_streams() -> None:
    """A reloaded ``alerts.for_ticks`` sets the pending floor of every running stream (1 Hz here: two
    ticks less half a tick), not only of streams trained later."""
    from tests.unit.test_engine import CONFIG, MIN_HISTORY, A, B, feed

    text = CONFIG.replace("for_ticks: 0,", "for_ticks: 0, for_ticks_within: 30,").replace(
        "resolve_for_ticks: 0}", "resolve_for_ticks: 0, false_alerts_per_day: null}")
    old = load_config_text(text)
    d = Daemon(old)
    feed(d.engine, [A, B], 0, MIN_HISTORY + 8)
    (g,) = d.engine.groups.values()
    assert list(g.alerts.a["for_s"][:2]) == [0.0, 0.0]
    out = reload_all(d.reloaders(), old, load_config_text(text.replace("for_ticks: 0,", "for_ticks: 2,", 1)))
    assert out.ok and out.change.applied == ["alerts.for_ticks"], out.message
    assert list(g.alerts.a["for_s"][:2]) == [1.5, 1.5]


def test_train_progress_sets_the_level_of_the_training_log_and_applies_at_reload(
        caplog: pytest.LogCaptureFixture) -> None:
    """D6: ``train.progress`` was read nowhere, yet a reload reported it applied."""
    import logging

    from sentinel.runtime.scheduler import TrainingScheduler
    from sentinel.types import Sample
    from tests.unit.test_engine import CONFIG, MIN_HISTORY, A, B, value

    old = load_config_text(CONFIG)
    d = Daemon(old)
    sched = TrainingScheduler(d.engine)

    def first_training(key: object) -> list[int]:
        for i in range(MIN_HISTORY):
            d.engine.process([Sample(key, float(i), ("value",), value(key, i, 1))])  # type: ignore[arg-type]
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="sentinel"):
            assert sched.run_once_sync(float(MIN_HISTORY)) == [{"success": 1, "rejected": 0}]
        return [r.levelno for r in caplog.records if r.getMessage() in ("training started", "training done")]

    assert first_training(A) == [logging.INFO, logging.INFO]
    out = reload_all(d.reloaders(), old, load_config_text(CONFIG.replace("drift_retrain: false",
                                                                         "drift_retrain: false, progress: false")))
    assert out.ok and out.change.applied == ["train.progress"], out.message
    assert first_training(B) == [logging.DEBUG, logging.DEBUG]
