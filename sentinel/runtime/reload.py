"""Reload: the whole new file is validated, then each component's ``apply_config`` says what it does.

Each reloader compares the running config with the new one for its own section and
answers with a :class:`Change`: the keys it *applies* live, the keys that *need a
restart* (kept at their running value until then), and the keys it *refuses* (a
value that cannot take effect while running). Nothing is ignored silently: a key
that differs is in one of the three lists, and a section without a reloader is
named for a restart.

Like Prometheus: every reloader is asked first; if any refuses, nothing is applied,
the old config stays whole and ``sentinel_config_last_reload_successful`` is 0.
Otherwise every reloader applies its part, the gauge is 1 and the message names what
needs a restart.

======================  ==========================================================
component               live / restart / refused
======================  ==========================================================
``server``              the web config file re-read (users, headers, TLS files
                        live; TLS on/off, client auth, versions at restart),
                        ``web_config_file`` and ``open_probes`` live; the rest
                        at restart (:class:`ServerReloader`)
``train``               live (next job), except ``train.threads`` (restart)
``detect``              ``risk`` live (quantile: at once; SPOT: at each stream's
                        next refit), ``score_decades`` live; ``method``,
                        ``depth``, ``max_peaks`` refused (the fitted state has
                        their shape); ``init_quantile``, ``decay``,
                        ``level_tail``, ``level_halflife`` at restart
``alerts``              live (rules of every stream; severity of new alerts)
``metrics``             live
``logging``             ``level`` live; ``format`` at restart
``sinks``               a kept sink's settings live; added/removed sinks and
                        ``sinks.outbox`` at restart
``sources``             at restart (a source holds its connection and cursor)
``model``               at restart
``streams`` ``state``
``queues`` ``fields``
======================  ==========================================================
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel

from ..config import SentinelConfig

log = logging.getLogger("sentinel")


def changed_keys(old: Any, new: Any, prefix: str) -> list[str]:
    """Dotted keys whose values differ (lists of named items are matched by ``name``).

    >>> from sentinel.config.schema import AlertsConfig
    >>> changed_keys(AlertsConfig(), AlertsConfig(enter=0.9, cooldown=5), "alerts")
    ['alerts.enter', 'alerts.cooldown']
    """
    if isinstance(old, BaseModel) and isinstance(new, BaseModel):
        old, new = old.model_dump(by_alias=True), new.model_dump(by_alias=True)
    if isinstance(old, list) and isinstance(new, list):
        old, new = ([x.model_dump(by_alias=True) if isinstance(x, BaseModel) else x for x in v] for v in (old, new))
    if isinstance(old, dict) and isinstance(new, dict):
        return _changed_items(old, new, lambda k: f"{prefix}.{k}")
    if (isinstance(old, list) and isinstance(new, list) and old and new
            and all(isinstance(x, dict) and "name" in x for x in (*old, *new))):
        return _changed_items({x["name"]: x for x in old}, {x["name"]: x for x in new}, lambda n: f"{prefix}[{n}]")
    return [] if old == new else [prefix]


def _changed_items(a: dict, b: dict, key: Callable[[Any], str]) -> list[str]:
    out: list[str] = []
    for k in dict.fromkeys([*a, *b]):
        out += [key(k)] if k not in a or k not in b else changed_keys(a[k], b[k], key(k))
    return out


@dataclass
class Change:
    applied: list[str] = field(default_factory=list)
    restart: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # "key: reason"


class Reloader(Protocol):
    name: str

    def check(self, old: SentinelConfig, new: SentinelConfig) -> Change:
        """What applying ``new`` would do (no side effects)."""
        ...

    def apply(self, new: SentinelConfig) -> list[str]:
        """Apply the live part of ``new``; returns keys found to need a restart while applying."""
        ...


@dataclass
class SectionReloader:
    """A reloader for one section: ``live`` keys (prefixes) apply through ``on_apply``,
    ``refuse`` maps a key prefix to the reason, every other changed key needs a restart."""

    name: str
    live: Sequence[str] = ()
    refuse: dict[str, str] = field(default_factory=dict)
    on_apply: Callable[[SentinelConfig], list[str] | None] | None = None

    def check(self, old: SentinelConfig, new: SentinelConfig) -> Change:
        ch = Change()
        for key in changed_keys(getattr(old, self.name), getattr(new, self.name), self.name):
            why = next((r for p, r in self.refuse.items() if _under(key, p)), None)
            if why is not None:
                ch.refused.append(f"{key}: {why}")
            elif any(_under(key, p) for p in self.live):
                ch.applied.append(key)
            else:
                ch.restart.append(key)
        return ch

    def apply(self, new: SentinelConfig) -> list[str]:
        if self.on_apply is None:
            return []
        return list(self.on_apply(new) or [])


def _under(key: str, prefix: str) -> bool:
    return key == prefix or key.startswith(prefix + ".") or key.startswith(prefix + "[")


@dataclass
class Outcome:
    ok: bool
    message: str
    change: Change
    config: SentinelConfig  # the running config afterwards: live sections from the new file, the rest kept


def reload_all(reloaders: Sequence[Reloader], old: SentinelConfig, new: SentinelConfig) -> Outcome:
    """Ask every reloader, then apply all or nothing (see the module docstring).

    A section no reloader answers for is named for a restart (never ignored); a key that
    waits for a restart keeps its running value in the returned config, so the next
    reload names it again.
    """
    total = Change()
    checks = []
    for r in reloaders:
        ch = r.check(old, new)
        checks.append((r, ch))
        total.applied += ch.applied
        total.restart += ch.restart
        total.refused += ch.refused
    covered = {r.name for r in reloaders}
    for name in type(old).model_fields:
        if name not in covered:
            total.restart += changed_keys(getattr(old, name), getattr(new, name), name)
    if total.refused:
        msg = "reload refused, keeping the old config: " + "; ".join(total.refused)
        return Outcome(False, msg, total, old)
    running = old.model_copy(update={r.name: keep_running(getattr(old, r.name), getattr(new, r.name), r.name,
                                                          ch.restart)
                                     for r, ch in checks if ch.applied and hasattr(old, r.name)})
    for r, ch in checks:
        if ch.applied:
            later = r.apply(running)  # keys the component found it cannot take live after all
            total.applied = [k for k in total.applied if k not in later]
            total.restart += later
    msg = "config reloaded"
    if total.applied:
        msg += f"; applied {', '.join(total.applied)}"
    if total.restart:
        msg += f"; changes to {', '.join(total.restart)} take effect after a restart"
    return Outcome(True, msg, total, running)


_SEGMENT = re.compile(r"\.([^.\[]+)|\[([^\]]*)\]")


def keep_running(old: Any, new: Any, prefix: str, keys: Sequence[str]) -> Any:
    """``new`` with the values at ``keys`` (dotted, ``[name]`` for named list items) taken from ``old``.

    Falls back to ``new`` whole when a key cannot be followed (the running config then shows
    the new value for it, as before this was kept).

    >>> from sentinel.config.schema import AlertsConfig
    >>> keep_running(AlertsConfig(), AlertsConfig(enter=0.9, cooldown=5), "alerts", ["alerts.cooldown"]).cooldown
    300.0
    """
    out = new
    for key in keys:
        if not _under(key, prefix):
            continue
        segs = [(m.group(1), m.group(2)) for m in _SEGMENT.finditer(key, len(prefix))]
        try:
            out = _restore(out, old, segs)
        except (AttributeError, KeyError, IndexError, TypeError, ValueError):
            log.debug("reload: could not keep the running value of %s", key)
            return new
    return out


def _restore(new: Any, old: Any, segs: list[tuple[str | None, str | None]]) -> Any:
    if not segs:
        return old
    field_key, item = segs[0]
    if item is not None:  # a named item of a list
        items = list(new)
        ni = next((i for i, x in enumerate(items) if x.name == item), None)
        oi = next((x for x in old if x.name == item), None)
        if len(segs) == 1:
            if oi is None and ni is not None:
                del items[ni]
            elif ni is None and oi is not None:
                items.append(oi)
            elif ni is not None:
                items[ni] = oi
            return items
        assert ni is not None and oi is not None
        items[ni] = _restore(items[ni], oi, segs[1:])
        return items
    assert field_key is not None
    if isinstance(new, dict):
        d = dict(new)
        if len(segs) == 1 and field_key not in old:
            d.pop(field_key, None)
        else:
            d[field_key] = _restore(new.get(field_key), old[field_key], segs[1:])
        return d
    fields = type(new).model_fields
    name = next(n for n, f in fields.items() if field_key in (n, f.alias))
    return new.model_copy(update={name: _restore(getattr(new, name), getattr(old, name), segs[1:])})


SECTIONS = ("server", "sources", "streams", "model", "train", "detect", "alerts", "sinks", "metrics", "state",
            "queues", "logging", "fields")


def restart_only(names: Sequence[str]) -> list[SectionReloader]:
    """Reloaders for sections that take effect only at a restart (every changed key is named)."""
    return [SectionReloader(n) for n in names]


class ServerReloader:
    """``server``: the web config file is re-read at every reload (users, headers, TLS files) and
    ``server.web_config_file`` / ``server.open_probes`` apply live; the other server keys at restart.

    Keys of the web config are named ``web_config.<key>``. Changing the certificate, key or
    client CA files (or their contents, e.g. a rotated certificate) applies from the next
    connection on; turning TLS on or off, ``client_auth_type`` and the TLS versions wait for a
    restart. An unreadable or invalid web config file refuses the whole reload.
    """

    name = "server"

    def __init__(self, handle: Any) -> None:
        """``handle``: the running :class:`~sentinel.server.ServerHandle` (None: no server, nothing to swap)."""
        self.handle = handle
        self._section = SectionReloader("server", live=["server.web_config_file", "server.open_probes"])
        self._prepared: tuple[Any, Any] | None = None  # (WebConfig | None, prepared TLS | None)

    def check(self, old: SentinelConfig, new: SentinelConfig) -> Change:
        from ..config import ConfigError
        from ..server import load_web_config
        from ..server.app import WEB_KEY

        ch = self._section.check(old, new)
        self._prepared = None
        if self.handle is None:
            return ch
        path = new.server.web_config_file
        try:
            wc = load_web_config(path) if path else None
        except ConfigError as e:
            ch.refused.append(f"server.web_config_file: {e}")
            return ch
        running = self.handle.app[WEB_KEY].config
        web: list[str] = []
        if running.basic_auth_users != (wc.basic_auth_users if wc else {}):
            web.append("web_config.basic_auth_users")
        if running.headers != (wc.headers if wc else {}):
            web.append("web_config.http_server_config.headers")
        tls, prepared = self.handle.tls_reloader, None
        new_tls = wc.tls if wc is not None else None
        if (tls is None) != (new_tls is None):
            ch.restart.append("web_config.tls_server_config")  # HTTP <-> HTTPS: a new listening socket
        elif tls is not None and new_tls is not None:
            from ..server.webconfig import tls_digest

            ch.restart += [f"web_config.tls_server_config.{f}" for f in tls.restart_fields(new_tls)]
            try:
                prepared = tls.prepare(new_tls)
            except ConfigError as e:
                ch.refused.append(f"web_config.tls_server_config: {e}")
                return ch
            if tls_digest(prepared[0]) != tls.digest:
                web.append("web_config.tls_server_config (certificate, key, client CA)")
            else:
                prepared = None
        if web and "server.web_config_file" not in ch.applied:
            ch.applied += web  # the file's contents changed, not its path
        elif web:
            ch.applied[ch.applied.index("server.web_config_file") + 1:0] = web
        self._prepared = (wc, prepared)
        return ch

    def apply(self, new: SentinelConfig) -> list[str]:
        from ..server import update_web_config

        if self.handle is None or self._prepared is None:
            return []
        wc, tls = self._prepared
        update_web_config(self.handle.app, wc, open_probes=new.server.open_probes)
        if tls is not None:
            self.handle.tls_reloader.swap(tls)
        return []
