"""Hostile and broken config files: exit 2 with ``file:key: reason``, fast, never a traceback (D10)."""

from __future__ import annotations

import math
import string
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sentinel.cli import main
from sentinel.config import ConfigError, load_config, load_config_text, override, parse_duration


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as ei:
        load_config_text(text, source="c.yaml", env={})
    return ei.value.problems


def billion_laughs(levels: int = 9) -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        prev, cur = chr(96 + i), chr(97 + i)
        lines.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(("text", "line"), [
    ("state: {checkpoint_interval: .nan}", "c.yaml:state.checkpoint_interval: duration must be finite, got nan"),
    ("alerts: {cooldown: .inf}", "c.yaml:alerts.cooldown: duration must be finite, got inf"),
    ("alerts: {flap_hold: -.inf}", "c.yaml:alerts.flap_hold: duration must be finite, got -inf"),
    ("train: {retrain_interval: 200000w}", "c.yaml:train.retrain_interval: duration '200000w' is longer than a century"),
    ("state: {checkpoint_interval: 0}", "c.yaml:state.checkpoint_interval: Input should be greater than or equal to 1"),
    ("model: {hidden: 8, hidden: 9}", "c.yaml:line 1: key 'hidden' given twice in one mapping"),
])
def test_values_that_make_no_sense_are_refused(text: str, line: str) -> None:
    assert errors_of(text) == [line]


@pytest.mark.parametrize("text", [
    "model: " + "[" * 5000 + "]" * 5000,
    "model: " + "{a: " * 5000 + "1" + "}" * 5000,
    "model:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(200)),
])
def test_deep_nesting_is_refused_without_recursion(text: str) -> None:
    errs = errors_of(text)
    assert len(errs) == 1 and errs[0].startswith("c.yaml:line ") and ("nest" in errs[0]), errs


def test_an_alias_bomb_is_refused_at_once() -> None:
    t0 = time.process_time()
    errs = errors_of("model: {hidden: 8}\n" + billion_laughs())
    assert "alias bomb" in errs[0] and errs[0].startswith("c.yaml:line ")
    assert time.process_time() - t0 < 5  # generous: it is milliseconds; the old loader took 30 s and 1.3 GB


@pytest.mark.parametrize("text", ["model: &a [*a]", "model: &a {x: *a}", "a: &a [1, [2, *a]]\nmodel: *a"])
def test_a_value_that_contains_itself_is_refused(text: str) -> None:
    errs = errors_of(text)
    assert len(errs) == 1 and "refers to a value that contains it" in errs[0], errs


def test_modest_aliases_still_work() -> None:
    cfg = load_config_text("sinks:\n  webhooks:\n    - &w {url: 'http://127.0.0.1:1/a', timeout: 2s}\n"
                           "    - {<<: *w, name: b, url: 'http://127.0.0.1:1/b'}\n", source="c.yaml", env={})
    assert [w.timeout for w in cfg.sinks.webhooks] == [2.0, 2.0]


def test_a_huge_integer_is_a_config_error() -> None:
    errs = errors_of("model: {hidden: " + "9" * 6000 + "}")
    assert errs[0].startswith("c.yaml:") and "invalid YAML value" in errs[0]


def test_an_env_var_holding_a_bomb_is_only_a_string() -> None:
    with pytest.raises(ConfigError) as ei:
        load_config_text("alerts: {severity: '${S}'}\nmodel: {hidden: '${H}'}", source="c.yaml",
                         env={"S": "[" * 5000, "H": "[" * 5000})
    assert ei.value.problems[0].startswith("c.yaml:model.hidden: ")


def test_non_utf8_and_oversized_files(tmp_path: Path) -> None:
    p = tmp_path / "latin1.yaml"
    p.write_bytes(b"model: {hidden: 8}\nalerts: {severity: caf\xe9}\n")
    with pytest.raises(ConfigError, match=r"latin1.yaml:line 2: not UTF-8 text \(byte 0xe9 at offset 41\)"):
        load_config(p)
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (5 * 1024 * 1024))
    with pytest.raises(ConfigError, match=r"big.yaml:\(file\): larger than 4 MiB"):
        load_config(big)
    bom = tmp_path / "bom.yaml"
    bom.write_bytes("\ufeffmodel: {hidden: 8}\n".encode())
    assert load_config(bom).model.hidden == 8


@pytest.mark.parametrize("content", [
    b"\xff\xfe\x00m\x00o",  # UTF-16
    ("model: " + "[" * 5000).encode(),
    billion_laughs().encode(),
    b"model: {hidden: 8, hidden: 9}",
    b"state: {checkpoint_interval: .nan}",
])
def test_check_config_exits_2_without_a_traceback(tmp_path: Path, content: bytes) -> None:
    p = tmp_path / "bad.yaml"
    p.write_bytes(content)
    r = CliRunner().invoke(main, ["check-config", str(p)])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and f"{p}:" in r.output
    assert not isinstance(r.exception, Exception) or isinstance(r.exception, SystemExit)


def test_override_names_the_option() -> None:
    cfg = load_config_text("", source="c.yaml", env={})
    with pytest.raises(ConfigError) as ei:
        override(cfg, "server.listen", ":9680", "--listen")
    assert ei.value.problems == ["--listen: listen must be HOST:PORT (0.0.0.0:PORT or [::]:PORT for every "
                                 "interface), got ':9680'"]
    assert cfg.server.listen == "127.0.0.1:9680"  # unchanged
    new = override(cfg, "server.listen", "[::1]:0", "--listen")
    assert new.server.listen == "[::1]:0" and new.server.wal == cfg.server.wal and new.model == cfg.model
    assert cfg.server.listen == "127.0.0.1:9680"


def test_new_bounds_and_wal_defaults(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("state: {dir: st}\n")
    cfg = load_config(tmp_path / "c.yaml")
    s = cfg.streams
    assert (s.max_fields, s.max_future, s.max_age) == (64, 600.0, 0.0)
    assert s.max_key_length == 256 and s.max_tag_value_length == 1024 and s.max_series_per_body == 100_000
    w = cfg.server.wal
    assert w.enabled and w.fsync == "always" and w.dir == str((tmp_path / "st" / "wal").resolve())
    (tmp_path / "d.yaml").write_text("server: {wal: {dir: mywal, fsync: batch, fsync_delay: 2ms}}\n")
    cfg = load_config(tmp_path / "d.yaml")
    assert cfg.server.wal.dir == str((tmp_path / "mywal").resolve()) and cfg.server.wal.fsync_delay == 0.002
    errs = errors_of("server: {max_body_bytes: 400000000}")
    assert errs[0].startswith("c.yaml:server: wal.max_bytes") and "twice max_body_bytes" in errs[0]
    assert load_config_text("server: {max_body_bytes: 400000000, wal: {enabled: false}}", source="c.yaml",
                            env={}).server.wal.enabled is False


@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**30, 10**30),
                 st.text(alphabet=string.digits + ".smhdw e+-n", max_size=12)))
@settings(max_examples=300, deadline=None)
def test_parse_duration_is_finite_non_negative_or_value_error(v: object) -> None:
    try:
        x = parse_duration(v)
    except ValueError:
        return
    assert math.isfinite(x) and 0 <= x <= 100 * 366 * 86400


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                     st.text(max_size=8), st.sampled_from(["5m", "0", ".nan", "lstm", "dspot", "1e9"]))
_keys = st.sampled_from(["model", "train", "state", "alerts", "streams", "server", "hidden", "cell", "epochs",
                         "checkpoint_interval", "dir", "enter", "exit", "for", "listen", "wal", "fsync", "bogus",
                         "max_fields", "sources", "type", "name"])
_trees = st.recursive(_scalars, lambda ch: st.lists(ch, max_size=4) | st.dictionaries(_keys, ch, max_size=4),
                      max_leaves=20)


@given(tree=st.dictionaries(_keys, _trees, max_size=6))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_yaml_tree_loads_or_is_a_config_error(tree: dict) -> None:
    text = yaml.safe_dump(tree)
    try:
        load_config_text(text, source="c.yaml", env={})
    except ConfigError as e:
        assert all(p.startswith("c.yaml:") for p in e.problems)


@given(text=st.text(alphabet=st.sampled_from([*list("{}[]:,&*!|>-'\"#%@ \n\tab1."), "\\"]), max_size=80))
@settings(max_examples=300, deadline=None)
def test_any_text_loads_or_is_a_config_error(text: str) -> None:
    try:
        load_config_text(text, source="c.yaml", env={})
    except ConfigError as e:
        assert all(p.startswith("c.yaml:") for p in e.problems)


@pytest.mark.parametrize("listen", [":9680", "localhost:http", "127.0.0.1:70000", "nowhere"])
def test_run_with_a_bad_listen_option_exits_2_naming_it(tmp_path: Path, listen: str) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("model: {hidden: 8}\n")
    r = CliRunner().invoke(main, ["run", "--config", str(p), "--listen", listen])
    assert r.exit_code == 2 and r.output.startswith("--listen: listen must be HOST:PORT"), r.output
    assert "Traceback" not in r.output
