"""Config loading: strict keys, ``file:key: reason`` errors, env expansion, relative paths, check-config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from sentinel.cli import main
from sentinel.config import ConfigError, dump_config, load_config, load_config_text, parse_duration

REPO = Path(__file__).resolve().parents[2]


def errors_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as ei:
        load_config_text(text, source="c.yaml", env=env or {})
    return ei.value.problems


def test_defaults_from_an_empty_file() -> None:
    cfg = load_config_text("", source="c.yaml", env={})
    assert cfg.model.hidden == 32 and cfg.model.cell == "lstm"
    assert cfg.train.min_history == 256 and cfg.detect.threshold.method == "dspot"
    assert cfg.fields == ["value"] and cfg.alerts.for_ == 0.0


@pytest.mark.parametrize(("text", "line"), [
    ("model: {hiden: 8}", "c.yaml:model.hiden: unknown key"),
    ("bogus: 1", "c.yaml:bogus: unknown key"),
    ("detect: {threshold: {method: dspot, riskk: 0.1}}", "c.yaml:detect.threshold.riskk: unknown key"),
])
def test_unknown_keys(text: str, line: str) -> None:
    assert errors_of(text) == [line]


@pytest.mark.parametrize(("text", "prefix"), [
    ("model: {hidden: many}", "c.yaml:model.hidden: "),
    ("model: {hidden: 1}", "c.yaml:model.hidden: "),
    ("model: {cell: transformer}", "c.yaml:model.cell: "),
    ("train: {epochs: 0}", "c.yaml:train.epochs: "),
    ("train: {retrain_interval: soon}", "c.yaml:train.retrain_interval: "),
    ("alerts: {for: -5}", "c.yaml:alerts.for: "),
    ("detect: {threshold: {risk: 2}}", "c.yaml:detect.threshold.risk: "),
    ("server: {listen: nowhere}", "c.yaml:server: "),
    ("fields: []", "c.yaml:fields: "),
])
def test_wrong_types_and_bad_values(text: str, prefix: str) -> None:
    errs = errors_of(text)
    assert len(errs) == 1 and errs[0].startswith(prefix), errs


def test_cross_field_check_and_several_errors_at_once() -> None:
    errs = errors_of("alerts: {enter: 0.3, exit: 0.6}")
    assert len(errs) == 1 and errs[0].startswith("c.yaml:alerts: ") and "exit (0.6)" in errs[0]
    errs = errors_of("model: {hidden: x, window: 0}\ntrain: {nope: 1}")
    assert sorted(e.split(": ")[0] for e in errs) == ["c.yaml:model.hidden", "c.yaml:model.window",
                                                        "c.yaml:train.nope"]


def test_invalid_yaml_names_the_line() -> None:
    errs = errors_of("model:\n  hidden: [1,\n")
    assert len(errs) == 1 and errs[0].startswith("c.yaml:line ")


def test_top_level_must_be_a_mapping() -> None:
    assert errors_of("- a\n- b\n")[0].startswith("c.yaml:(top level): ")


def test_env_expansion() -> None:
    env = {"HIDDEN": "16", "LISTEN_HOST": "0.0.0.0"}
    cfg = load_config_text(
        "model: {hidden: '${HIDDEN}'}\nserver: {listen: '${LISTEN_HOST}:${PORT:-9999}'}\n"
        "alerts: {severity: '${SEV:-page}'}\nstate: {dir: '${EMPTY:-}x'}",
        source="c.yaml", env=env)
    assert cfg.model.hidden == 16  # a whole-value reference gets YAML typing
    assert cfg.server.listen == "0.0.0.0:9999"
    assert cfg.alerts.severity == "page"
    assert cfg.state.dir == "x"
    errs = errors_of("alerts: {severity: '${MISSING}'}")
    assert errs == ["c.yaml:alerts.severity: environment variable MISSING is not set (use ${MISSING:-default})"]
    # a set variable wins over the default, and a value that is not a valid type is still caught
    assert load_config_text("model: {hidden: '${H:-8}'}", env={"H": "12"}).model.hidden == 12
    assert errors_of("model: {hidden: '${H}'}", env={"H": "big"})[0].startswith("c.yaml:model.hidden: ")


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    d = tmp_path / "conf"
    d.mkdir()
    p = d / "s.yaml"
    p.write_text("state: {dir: st}\nsinks: {outbox: {path: ob}}\n")
    cfg = load_config(p)
    assert cfg.state.dir == str((d / "st").resolve())
    assert cfg.sinks.outbox.path == str((d / "ob").resolve())
    p.write_text(f"state: {{dir: {tmp_path / 'abs'}}}\n")
    assert load_config(p).state.dir == str(tmp_path / "abs")


def test_durations() -> None:
    assert [parse_duration(x) for x in ("30s", "5m", "6h", "1d", "1w", "250ms", 12, 1.5)] == [
        30.0, 300.0, 21600.0, 86400.0, 604800.0, 0.25, 12.0, 1.5]
    for bad in ("5 minutes", "-1s", True, -3, "1y"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert load_config_text("alerts: {for: 2m, cooldown: 90}").alerts.cooldown == 90.0


def test_check_config_prints_the_effective_config(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("model: {hidden: 16}\nalerts: {for: 2m}\n")
    r = CliRunner().invoke(main, ["check-config", str(p)])
    assert r.exit_code == 0, r.output
    eff = yaml.safe_load(r.output)
    assert eff["model"]["hidden"] == 16 and eff["alerts"]["for"] == 120.0
    assert eff["train"]["min_history"] == 256  # defaults are filled in
    # the printed config is itself a valid config that loads to the same thing
    p2 = tmp_path / "c2.yaml"
    p2.write_text(r.output)
    assert load_config(p2).model_dump() == load_config(p).model_dump()


def test_check_config_exits_2_with_file_key_reason(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("model: {hidden: many}\nextra: 1\n")
    r = CliRunner().invoke(main, ["check-config", str(p)])
    assert r.exit_code == 2
    assert f"{p}:model.hidden: " in r.output and f"{p}:extra: unknown key" in r.output
    r = CliRunner().invoke(main, ["check-config", str(tmp_path / "missing.yaml")])
    assert r.exit_code == 2 and "cannot read" in r.output


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "config").glob("*.yaml")))
def test_shipped_configs_are_valid(name: str) -> None:
    cfg = load_config(REPO / "config" / name, env={})
    assert yaml.safe_load(dump_config(cfg))


def test_a_loaded_config_is_frozen_and_paths_are_resolved_on_a_copy(tmp_path) -> None:
    import pydantic

    path = tmp_path / "sentinel.yaml"
    path.write_text("state: {dir: st}\nsinks: {outbox: {path: ob}}\n")
    cfg = load_config(path)
    assert cfg.state.dir == str(tmp_path / "st") and cfg.sinks.outbox.path == str(tmp_path / "ob")
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        cfg.alerts.enter = 0.9  # type: ignore[misc]
    changed = cfg.model_copy(update={"alerts": cfg.alerts.model_copy(update={"enter": 0.9})})
    assert changed.alerts.enter == 0.9 and cfg.alerts.enter == 0.5
