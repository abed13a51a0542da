"""The per-stream alert state machine, vectorised over streams. Pure logic; time is passed in.

States (:class:`~sentinel.types.AlertState`)::

    OK --score>=enter--> PENDING --held `for` (and a per-stream floor)--> FIRING --below exit for `resolve_for`--> RESOLVED
    PENDING --score<exit--> OK
    RESOLVED --score>=enter within `cooldown` (held the per-stream ticks)--> FIRING (the same alert re-opened: a flap)
    RESOLVED --`cooldown` over--> OK

Hysteresis: a stream enters at ``enter`` and leaves at ``exit`` (<= enter).
Flap suppression: resolves are counted with exponential forgetting over
``flap_window``; while that count is at least ``flap_max``, a firing alert needs
``flap_hold`` below ``exit`` (instead of ``resolve_for``) to resolve.

:meth:`AlertMachine.advance` applies one tick to many streams and returns the
transitions that receivers care about (to firing, to resolved).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..slots import SlotArrays
from ..types import AlertState

OK, PENDING, FIRING, RESOLVED = (int(s) for s in AlertState)


@dataclass(frozen=True)
class AlertRules:
    enter: float = 0.5
    exit: float = 0.4
    for_s: float = 0.0
    resolve_for_s: float = 0.0
    cooldown_s: float = 300.0
    flap_window_s: float = 3600.0
    flap_max: int = 4
    flap_hold_s: float = 600.0

    @classmethod
    def from_config(cls, a: Any) -> AlertRules:
        """The rules of an ``alerts`` config section (passed whole)."""
        return cls(a.enter, a.exit, a.for_, a.resolve_for, a.cooldown, a.flap_window, a.flap_max, a.flap_hold)


@dataclass(frozen=True, slots=True)
class Transition:
    slot: int
    status: str  # "firing" | "resolved"
    at: float
    starts_at: float


class AlertMachine(SlotArrays):
    """Alert state of every slot (arrays in ``a``; grow with :meth:`ensure`, free with :meth:`reset`)."""

    FIELDS: ClassVar[dict[str, tuple[type, float]]] = {
        "state": (np.int8, OK),
        "since": (np.float64, np.nan),       # PENDING: when it started
        "starts_at": (np.float64, np.nan),   # FIRING/RESOLVED: when the alert began
        "below_since": (np.float64, np.nan),
        "resolved_at": (np.float64, np.nan),
        "flaps": (np.float64, 0.0),
        "flaps_at": (np.float64, np.nan),
        "fired": (np.int64, 0),              # alerts that went firing (sentinel_alerts_total)
        # per-stream alert levels (NaN: the rules' enter/exit), e.g. from a false-alert budget per day
        "enter": (np.float64, np.nan),
        "exit": (np.float64, np.nan),
        "resolve_s": (np.float64, 0.0),       # per-stream floor on resolve_for (e.g. some ticks of its cadence)
        "for_s": (np.float64, 0.0),           # per-stream floor on `for` (e.g. a tick or two of its cadence)
    }

    def __init__(self, rules: AlertRules, capacity: int = 64):
        self.rules = rules
        super().__init__({k: ((), dt, fill) for k, (dt, fill) in self.FIELDS.items()}, capacity)

    def set_resolve_floor(self, slots: np.ndarray, seconds: np.ndarray) -> None:
        """Per-stream least time below exit before a firing alert resolves (the rules' own if larger)."""
        self.a["resolve_s"][slots] = np.nan_to_num(np.asarray(seconds, dtype=np.float64), nan=0.0)

    def set_for_floor(self, slots: np.ndarray, seconds: np.ndarray) -> None:
        """Per-stream least time pending (score at or above exit since the crossing) before firing (the
        rules' ``for`` if larger)."""
        self.a["for_s"][slots] = np.nan_to_num(np.asarray(seconds, dtype=np.float64), nan=0.0)

    def set_levels(self, slots: np.ndarray, enter: np.ndarray) -> None:
        """Per-stream enter levels (exit keeps the rules' hysteresis below each); NaN = the rules' own."""
        enter = np.asarray(enter, dtype=np.float64)
        self.a["enter"][slots] = enter
        self.a["exit"][slots] = np.maximum(enter - (self.rules.enter - self.rules.exit), 0.0)

    def state(self, slots: np.ndarray | None = None) -> np.ndarray:
        return self.a["state"] if slots is None else self.a["state"][slots]

    def flapping(self, slots: np.ndarray, now: np.ndarray) -> np.ndarray:
        a, r = self.a, self.rules
        age = np.nan_to_num(now - a["flaps_at"][slots], nan=0.0)
        # flap_max quick resolves decay to a little under flap_max: count them as flap_max
        return a["flaps"][slots] * np.exp(-np.maximum(age, 0) / r.flap_window_s) >= r.flap_max - 0.5

    def advance(self, slots: np.ndarray, now: np.ndarray, score: np.ndarray) -> list[Transition]:
        """Apply one tick (``now`` and ``score`` per slot; slots unique) and return the transitions.

        Only the streams whose state can change are stepped: an OK stream below its enter level
        stays OK with nothing to update, and most streams are that on most ticks."""
        slots = np.asarray(slots, dtype=np.int64)
        now = np.broadcast_to(np.asarray(now, dtype=np.float64), slots.shape)
        score = np.nan_to_num(np.asarray(score, dtype=np.float64), nan=0.0)
        a = self.a
        st = a["state"][slots]
        enter = a["enter"][slots]
        above = score >= np.where(np.isnan(enter), self.rules.enter, enter)
        live = above | (st != OK)
        if not live.any():
            return []
        if not live.all():
            slots, now, score, st, above = slots[live], now[live], score[live], st[live], above[live]
        return self._step(slots, now, score, st.copy(), above)

    def _step(self, slots: np.ndarray, now: np.ndarray, score: np.ndarray, st: np.ndarray, above: np.ndarray
              ) -> list[Transition]:
        a, r = self.a, self.rules
        exit_ = a["exit"][slots]
        below = score < np.where(np.isnan(exit_), r.exit, exit_)
        out: list[Transition] = []

        ticks = a["for_s"][slots]  # the per-stream floor: a tick or two of the stream's cadence
        # RESOLVED: cooldown over -> OK; a new crossing within it re-opens the same alert without the
        # rules' `for`, once it has held those ticks (`since`: when the crossing began, NaN: none).
        res = st == RESOLVED
        over = res & (now - a["resolved_at"][slots] >= r.cooldown_s)
        st[over] = OK
        live = res & ~over
        since = a["since"][slots]
        # a crossing counts only from after the resolve (a checkpoint from before kept the pending's `since`)
        since = np.where(live & (since < a["resolved_at"][slots]), np.nan, since)
        since = np.where(live & above & np.isnan(since), now, since)
        since = np.where(live & below, np.nan, since)
        a["since"][slots] = since
        reopen = live & ~below & ~np.isnan(since) & (now - since >= ticks)
        st[reopen] = FIRING
        # OK -> PENDING
        go_pending = (st == OK) & above
        st[go_pending] = PENDING
        a["since"][slots[go_pending]] = now[go_pending]
        # PENDING -> OK (fell below exit) or -> FIRING (held for `for`)
        pend = st == PENDING
        back = pend & below
        st[back] = OK
        fire = pend & ~below & (now - a["since"][slots] >= np.maximum(r.for_s, ticks))
        st[fire] = FIRING
        a["starts_at"][slots[fire]] = now[fire]
        a["below_since"][slots[fire | reopen]] = np.nan
        # FIRING: track time below exit; resolve after resolve_for (flap_hold while flapping).
        firing = st == FIRING
        bs = a["below_since"][slots]
        bs = np.where(firing & below & np.isnan(bs), now, bs)
        bs = np.where(firing & ~below, np.nan, bs)
        a["below_since"][slots] = bs
        hold = np.where(self.flapping(slots, now), r.flap_hold_s, np.maximum(r.resolve_for_s, a["resolve_s"][slots]))
        resolve = firing & below & (now - bs >= hold)
        st[resolve] = RESOLVED
        rs = slots[resolve]
        a["resolved_at"][rs] = now[resolve]
        a["since"][rs] = np.nan
        age = np.nan_to_num(now[resolve] - a["flaps_at"][rs], nan=0.0)
        a["flaps"][rs] = a["flaps"][rs] * np.exp(-np.maximum(age, 0) / r.flap_window_s) + 1.0
        a["flaps_at"][rs] = now[resolve]

        a["state"][slots] = st
        a["fired"][slots[fire]] += 1
        for i in np.flatnonzero(fire | reopen):
            out.append(Transition(int(slots[i]), "firing", float(now[i]), float(a["starts_at"][slots[i]])))
        for i in np.flatnonzero(resolve):
            out.append(Transition(int(slots[i]), "resolved", float(now[i]), float(a["starts_at"][slots[i]])))
        return out
