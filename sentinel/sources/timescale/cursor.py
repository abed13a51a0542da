"""The PostgreSQL source's time typing and its ``(time, key)`` cursor (see :mod:`.source`)."""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from ...errors import SourceError

CURSOR_VERSION = 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
_INT_TYPES = {"int2", "int4", "int8", "smallint", "integer", "bigint"}
_FLOAT_TYPES = {"float4", "float8", "numeric", "real", "double precision"}
_TIMESTAMP_TYPES = {"timestamptz": "timestamptz", "timestamp": "timestamp"}

Raw = int | float  # a time in the column's canonical units (µs for timestamps, the epoch unit otherwise)


# --------------------------------------------------------------------------- time typing


@dataclass(frozen=True, slots=True)
class TimeKind:
    """How the time column is stored and converted.

    ``kind`` is ``timestamptz``/``timestamp`` (canonical raw value: integer µs since the epoch, UTC)
    or ``epoch_int``/``epoch_float`` (canonical raw value: the column's own number).
    ``per_second`` converts raw units to seconds.
    """

    kind: Literal["timestamptz", "timestamp", "epoch_int", "epoch_float"]
    per_second: int

    @classmethod
    def from_type(cls, type_name: str, epoch_unit: str) -> TimeKind:
        if type_name in _TIMESTAMP_TYPES:
            return cls(_TIMESTAMP_TYPES[type_name], 1_000_000)  # type: ignore[arg-type]
        if type_name in _INT_TYPES:
            return cls("epoch_int", _PER_SECOND[epoch_unit])
        if type_name in _FLOAT_TYPES:
            return cls("epoch_float", _PER_SECOND[epoch_unit])
        raise SourceError(f"time column has type {type_name!r}; expected timestamptz, timestamp or a numeric epoch")

    @property
    def is_timestamp(self) -> bool:
        return self.kind in ("timestamptz", "timestamp")

    def from_db(self, v: Any) -> Raw:
        """A value as read from the database -> canonical raw value."""
        if isinstance(v, datetime):
            if v.tzinfo is None:
                v = v.replace(tzinfo=UTC)
            return (v - _EPOCH) // _US
        if self.kind == "epoch_int":
            return int(v)
        return float(v)

    def to_db(self, raw: Raw) -> Any:
        """Canonical raw value -> a parameter of the column's own type (keeps chunk exclusion)."""
        if self.kind == "timestamptz":
            return _EPOCH + timedelta(microseconds=int(raw))
        if self.kind == "timestamp":
            return (_EPOCH + timedelta(microseconds=int(raw))).replace(tzinfo=None)
        return raw

    def seconds(self, raw: Raw) -> float:
        return raw / self.per_second

    def from_seconds(self, s: float) -> Raw:
        v = s * self.per_second
        return v if self.kind == "epoch_float" else math.floor(v)

    def span(self, seconds: float) -> Raw:
        v = seconds * self.per_second
        return v if self.kind == "epoch_float" else math.ceil(v)


# --------------------------------------------------------------------------- cursor


class Cursor:
    """Where the source is: every row with ``time <= floor`` or ``(time, key)`` in ``seen`` is done.

    Pure data, JSON-able through :meth:`to_dict` / :meth:`from_dict`.

    >>> c = Cursor(lateness=5, max_seen=100)
    >>> c.is_new(10, ("a",)), c.mark(10, ("a",)), c.is_new(10, ("a",))
    (True, None, False)
    >>> c.advance(); c.floor, c.is_new(5, ("z",)), c.is_new(6, ("z",))
    (5, False, True)
    """

    def __init__(self, lateness: Raw, max_seen: int, floor: Raw | None = None,
                 seen: Iterable[tuple[Raw, tuple[str, ...]]] = (), last: Raw | None = None):
        self.lateness = lateness
        self.max_seen = max_seen
        self.floor = floor
        self.last = last
        self._by_time: dict[Raw, set[tuple[str, ...]]] = {}
        self._times: list[Raw] = []  # sorted keys of _by_time
        self._count = 0
        for t, k in seen:
            self.mark(t, tuple(k))

    def __len__(self) -> int:
        return self._count

    def is_new(self, t: Raw, key: tuple[str, ...]) -> bool:
        if self.floor is not None and t <= self.floor:
            return False
        keys = self._by_time.get(t)
        return keys is None or key not in keys

    def mark(self, t: Raw, key: tuple[str, ...]) -> None:
        keys = self._by_time.get(t)
        if keys is None:
            keys = self._by_time[t] = set()
            bisect.insort(self._times, t)
        if key not in keys:
            keys.add(key)
            self._count += 1
        if self.last is None or t > self.last:
            self.last = t

    def advance(self) -> None:
        """Raise ``floor`` to ``last - lateness``, forget what is at or below it, respect ``max_seen``."""
        if self.last is not None:
            lo = self.last - self.lateness
            if self.floor is None or lo > self.floor:
                self.floor = lo
        if self.floor is not None:
            self._drop_through(self.floor)
        while self._count > self.max_seen and self._times:
            # Out of memory for the window: rows at or below the oldest remembered time are declared done.
            self.floor = self._times[0] if self.floor is None else max(self.floor, self._times[0])
            self._drop_through(self.floor)

    def _drop_through(self, t: Raw) -> None:
        while self._times and self._times[0] <= t:
            self._count -= len(self._by_time.pop(self._times.pop(0)))

    def to_dict(self) -> dict:
        seen = [[t, list(k)] for t in self._times for k in sorted(self._by_time[t])]
        return {"v": CURSOR_VERSION, "floor": self.floor, "last": self.last, "seen": seen}

    @classmethod
    def from_dict(cls, d: dict, lateness: Raw, max_seen: int) -> Cursor:
        if d.get("v") != CURSOR_VERSION:
            raise SourceError(f"postgres cursor has version {d.get('v')!r}, expected {CURSOR_VERSION}")
        seen = [(t, tuple(str(x) for x in k)) for t, k in d.get("seen", [])]
        c = cls(lateness, max_seen, floor=d.get("floor"), seen=seen, last=d.get("last"))
        c.advance()
        return c

