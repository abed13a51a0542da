"""Reload: the whole new file is validated, then each component's ``apply_config`` says what it does.

Each reloader compares the running config with the new one for its own section and
answers with a :class:`Change`: the keys it *applies* live, the keys that *need a
restart* (kept at their running value until then), and the keys it *refuses* (a
value that cannot take effect while running). Nothing is ignored silently: a key
that differs is in one of the three lists.

Like Prometheus: every reloader is asked first; if any refuses, nothing is applied,
the old config stays whole and ``sentinel_config_last_reload_successful`` is 0.
Otherwise every reloader applies its part, the gauge is 1 and the message names what
needs a restart.

======================  ==========================================================
component               live / restart / refused
======================  ==========================================================
``train``               live (next job), except ``train.threads`` (restart)
``detect``              ``risk`` live (quantile: at once; SPOT: at each stream's
                        next refit), ``score_decades`` live; ``method``,
                        ``depth``, ``max_peaks`` refused (the fitted state has
                        their shape); ``init_quantile``, ``decay`` at restart
``alerts``              live (rules of every stream; severity of new alerts)
``metrics``             live
``logging``             ``level`` live; ``format`` at restart
``sinks``               a kept sink's settings live; added/removed sinks and
                        ``sinks.outbox`` at restart
``sources``             at restart (a source holds its connection and cursor)
``server`` ``model``    at restart
``streams`` ``state``
``queues`` ``fields``
======================  ==========================================================
"""

from __future__ import annotations

import logging
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
    """Ask every reloader, then apply all or nothing (see the module docstring)."""
    total = Change()
    checks = []
    for r in reloaders:
        ch = r.check(old, new)
        checks.append((r, ch))
        total.applied += ch.applied
        total.restart += ch.restart
        total.refused += ch.refused
    if total.refused:
        msg = "reload refused, keeping the old config: " + "; ".join(total.refused)
        return Outcome(False, msg, total, old)
    running = old.model_copy(update={r.name: getattr(new, r.name) for r, ch in checks if ch.applied})
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


SECTIONS = ("server", "sources", "streams", "model", "train", "detect", "alerts", "sinks", "metrics", "state",
            "queues", "logging", "fields")


def restart_only(names: Sequence[str]) -> list[SectionReloader]:
    """Reloaders for sections that take effect only at a restart (every changed key is named)."""
    return [SectionReloader(n) for n in names]
