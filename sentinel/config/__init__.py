"""Load, validate and print Sentinel's one YAML config file.

>>> cfg = load_config_text("model: {hidden: 16}", source="inline.yaml")
>>> cfg.model.hidden, cfg.train.min_history
(16, 256)
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..errors import ConfigError
from . import _yaml
from ._base import parse_duration
from .schema import SentinelConfig

__all__ = ["ConfigError", "SentinelConfig", "dump_config", "load_config", "load_config_text", "override",
           "parse_duration"]

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand(node: Any, path: str, problems: list[str], source: str, env: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {k: _expand(v, f"{path}.{k}" if path else str(k), problems, source, env) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand(v, f"{path}[{i}]", problems, source, env) for i, v in enumerate(node)]
    if isinstance(node, str) and "${" in node:

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            problems.append(f"{source}:{path}: environment variable {name} is not set (use ${{{name}:-default}})")
            return ""

        expanded = _ENV.sub(sub, node)
        # A value that was exactly one reference gets YAML scalar typing (so ${PORT} can be an int).
        if _ENV.fullmatch(node):
            try:
                return _yaml.safe_load(expanded) if expanded else expanded
            except _yaml.YamlProblem:
                return expanded
        return expanded
    return node


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("simulator", "influxdb", "postgres", "mqtt") and out.endswith("]"):
            continue  # the discriminated-union tag pydantic inserts; the user's key path has no such level
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def load_config_text(text: str, source: str = "<config>", base_dir: Path | None = None,
                     env: dict[str, str] | None = None) -> SentinelConfig:
    """Parse and validate YAML text; raise ConfigError with ``source:key: reason`` lines."""
    try:
        raw = _yaml.safe_load(text) if text.strip() else {}
    except _yaml.YamlProblem as e:
        raise ConfigError(f"{source}:{e.where}: {e.reason}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}:(top level): expected a mapping of sections, got {type(raw).__name__}")
    problems: list[str] = []
    raw = _expand(raw, "", problems, source, dict(os.environ) if env is None else env)
    if problems:
        raise ConfigError(problems)
    try:
        cfg = SentinelConfig.model_validate(raw)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            lines.append(f"{source}:{_loc(err['loc'])}: {msg}")
        raise ConfigError(lines) from None
    return _with_wal_dir(_resolve_paths(cfg, base_dir), base_dir)


def _resolve_paths(cfg: SentinelConfig, base_dir: Path | None) -> SentinelConfig:
    """Paths in a config are relative to the config file unless absolute (DESIGN §5)."""
    if base_dir is None:
        return cfg

    def rel(p: str) -> str:
        return p if os.path.isabs(p) else str((base_dir / p).resolve())

    outbox = cfg.sinks.outbox.model_copy(update={"path": rel(cfg.sinks.outbox.path)})
    update: dict[str, Any] = {"state": cfg.state.model_copy(update={"dir": rel(cfg.state.dir)}),
                              "sinks": cfg.sinks.model_copy(update={"outbox": outbox})}
    if cfg.server.web_config_file:
        update["server"] = cfg.server.model_copy(update={"web_config_file": rel(cfg.server.web_config_file)})
    if any(s.type == "mqtt" for s in cfg.sources):
        update["sources"] = [_resolve_tls(s, rel) if s.type == "mqtt" else s for s in cfg.sources]
    return cfg.model_copy(update=update)


def _with_wal_dir(cfg: SentinelConfig, base_dir: Path | None) -> SentinelConfig:
    """``server.wal.dir``: relative to the config file; by default ``wal/`` inside ``state.dir`` (same volume)."""
    d = cfg.server.wal.dir
    if d is None:
        d = os.path.join(cfg.state.dir, "wal")
    elif base_dir is not None and not os.path.isabs(d):
        d = str((base_dir / d).resolve())
    wal = cfg.server.wal.model_copy(update={"dir": d})
    return cfg.model_copy(update={"server": cfg.server.model_copy(update={"wal": wal})})


def _resolve_tls(src: Any, rel: Any) -> Any:
    """An MQTT source's TLS files, relative to the config file."""
    tls = src.tls
    files = {k: rel(getattr(tls, k)) for k in ("ca_file", "cert_file", "key_file") if getattr(tls, k)}
    return src.model_copy(update={"tls": tls.model_copy(update=files)}) if files else src


def load_config(path: str | os.PathLike[str], env: dict[str, str] | None = None) -> SentinelConfig:
    p = Path(path)
    try:
        with open(p, "rb") as f:
            data = f.read(_yaml.MAX_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"{p}:(file): cannot read: {e.strerror or e}") from None
    try:
        text = _yaml.decode(data)
    except _yaml.YamlProblem as e:
        raise ConfigError(f"{p}:{e.where}: {e.reason}") from None
    return load_config_text(text, source=str(p), base_dir=p.resolve().parent, env=env)


def override(cfg: SentinelConfig, key: str, value: Any, source: str) -> SentinelConfig:
    """A copy of ``cfg`` with one dotted ``key`` set from outside the file (a command-line option),
    validated as the file is; ``cfg`` itself is left alone.

    Raises :class:`ConfigError` ``<source>: reason`` (e.g. ``--listen: listen must be HOST:PORT ...``).
    """
    *parents, name = key.split(".")
    chain: list[Any] = [cfg]
    for part in parents:
        chain.append(getattr(chain[-1], part))
    leaf = chain[-1]
    field = type(leaf).model_fields[name]
    data = leaf.model_dump(by_alias=True)
    data[field.alias or name] = value
    try:
        new = type(leaf).model_validate(data)
    except ValidationError as e:
        raise ConfigError([f"{source}: {err['msg'].removeprefix('Value error, ')}" for err in e.errors()]) from None
    for obj, part in zip(reversed(chain[:-1]), reversed(parents), strict=True):
        new = obj.model_copy(update={part: new})
    return new


def dump_config(cfg: SentinelConfig) -> str:
    """The effective config as YAML (defaults filled in, secrets masked)."""
    data = cfg.model_dump(mode="json", by_alias=True)
    for wh in data.get("sinks", {}).get("webhooks", []):
        if wh.get("hmac_secret"):
            wh["hmac_secret"] = "<secret>"
    for src in data.get("sources", []):
        if src.get("type") == "mqtt" and src.get("password"):
            src["password"] = "<secret>"
    return yaml.safe_dump(data, sort_keys=False)
