"""Samples as columns: the hot path's batch (DESIGN §3: a source hands over columns, not objects).

A :class:`Columns` batch is ``n`` samples held as arrays: ``sid`` (an id into a
:class:`SeriesTable`, the stream key and field names of each series a selector has seen),
``ts`` (seconds, float64) and ``values`` (``[n, W]`` float64, NaN where missing; a row of a
series with ``F < W`` fields is NaN-padded). The engine scores it straight from the arrays
and caches the table id -> slot lookup (:meth:`Engine.process
<sentinel.runtime.engine.core.Engine.process>`).

It is also a read-only ``Sequence[Sample]``: code that iterates samples (write-back,
sharding, de-duplication, tests) sees the same :class:`~sentinel.types.Sample` objects
the object path would have made, built on demand. Missing values are the one NaN object
(as the parser's), so ``Columns == list_of_samples`` compares as the object path does.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import overload

import numpy as np

from .types import Sample, StreamKey

NAN = float("nan")  #: the one NaN object of a missing value (the selector's too)
_NAN = NAN
_serials = itertools.count(1)


class SeriesTable:
    """Append-only: series id -> ``(StreamKey, fields)``. A new table (new ``serial``) replaces a cleared one."""

    __slots__ = ("_ix", "_meas", "_warr", "fields", "keys", "serial", "widths")

    def __init__(self) -> None:
        self.serial = next(_serials)
        self.keys: list[StreamKey] = []
        self.fields: list[tuple[str, ...]] = []
        self.widths: list[int] = []
        self._ix: dict[tuple[StreamKey, tuple[str, ...]], int] | None = None  # for :meth:`id_of`
        self._meas: dict[str, np.ndarray] = {}  # measurement -> which ids have it (see measurement_mask)
        self._warr = np.zeros(0, np.int64)

    def add(self, key: StreamKey, fields: tuple[str, ...]) -> int:
        self.keys.append(key)
        self.fields.append(fields)
        self.widths.append(len(fields))
        i = len(self.keys) - 1
        if self._ix is not None:
            self._ix.setdefault((key, fields), i)
        return i

    def id_of(self, key: StreamKey, fields: tuple[str, ...]) -> int:
        """The id of ``(key, fields)``, added when new."""
        if self._ix is None:
            self._ix = {(k, f): i for i, (k, f) in enumerate(zip(self.keys, self.fields, strict=True))}
        i = self._ix.get((key, fields))
        return self.add(key, fields) if i is None else i

    def width_array(self) -> np.ndarray:
        """``widths`` as an int64 array (cached, extended as the table grows)."""
        n, w = len(self.widths), self._warr
        if len(w) < n:
            w = self._warr = np.concatenate((w, np.asarray(self.widths[len(w):], np.int64)))
        return w

    def measurement_mask(self, name: str) -> np.ndarray:
        """Which series ids have measurement ``name`` (cached, extended as the table grows)."""
        m = self._meas.get(name)
        n = len(self.keys)
        if m is None or len(m) < n:
            done = 0 if m is None else len(m)
            more = np.fromiter((k.measurement == name for k in self.keys[done:n]), bool, n - done)
            m = self._meas[name] = more if m is None else np.concatenate((m, more))
        return m

    def __len__(self) -> int:
        return len(self.keys)


class Columns(Sequence[Sample]):
    """``n`` samples as arrays; see the module docstring."""

    __slots__ = ("sid", "table", "ts", "values")

    def __init__(self, table: SeriesTable, sid: np.ndarray, ts: np.ndarray, values: np.ndarray):
        self.table = table
        self.sid = sid
        self.ts = ts
        self.values = values

    def __len__(self) -> int:
        return len(self.sid)

    def _sample(self, i: int) -> Sample:
        s = int(self.sid[i])
        t = self.table
        F = t.widths[s]
        row = self.values[i, :F].tolist()
        return Sample(t.keys[s], float(self.ts[i]), t.fields[s], tuple(_NAN if x != x else x for x in row))

    @overload
    def __getitem__(self, i: int) -> Sample: ...
    @overload
    def __getitem__(self, i: slice) -> Columns: ...
    def __getitem__(self, i: int | slice) -> Sample | Columns:
        if isinstance(i, slice):
            return Columns(self.table, self.sid[i], self.ts[i], self.values[i])
        n = len(self.sid)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("Columns index out of range")
        return self._sample(i)

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self.sid)):
            yield self._sample(i)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Columns | list | tuple):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Columns(n={len(self)}, width={self.values.shape[1] if self.values.ndim == 2 else 0})"

    @staticmethod
    def from_samples(samples: Sequence[Sample], table: SeriesTable) -> Columns:
        """``samples`` as columns over ``table`` (new series are added to it)."""
        n = len(samples)
        sid = np.fromiter((table.id_of(s.key, s.fields) for s in samples), np.int64, n)
        W = max((len(s.values) for s in samples), default=0)
        V = np.full((n, W), np.nan)
        for i, s in enumerate(samples):
            V[i, : len(s.values)] = s.values
        return Columns(table, sid, np.fromiter((s.ts for s in samples), np.float64, n), V)

    def take(self, idx: np.ndarray) -> Columns:
        """The rows ``idx`` (indices or a boolean mask), in that order."""
        return Columns(self.table, self.sid[idx], self.ts[idx], self.values[idx])

    @staticmethod
    def concat(parts: Sequence[Columns]) -> Columns:
        """One batch of ``parts`` (same table), in order."""
        if len(parts) == 1:
            return parts[0]
        W = max(p.values.shape[1] for p in parts)
        vals = [p.values if p.values.shape[1] == W else
                np.pad(p.values, ((0, 0), (0, W - p.values.shape[1])), constant_values=np.nan) for p in parts]
        return Columns(parts[0].table, np.concatenate([p.sid for p in parts]), np.concatenate([p.ts for p in parts]),
                       np.concatenate(vals))


def join(parts: Iterable[Sequence[Sample]]) -> Sequence[Sample]:
    """The samples of ``parts`` in order: one :class:`Columns` when every non-empty part is columns of one
    table, else a list of :class:`~sentinel.types.Sample` (the object path)."""
    ps = [p for p in parts if len(p)]
    if ps and all(isinstance(p, Columns) for p in ps) and len({p.table.serial for p in ps}) == 1:  # type: ignore[attr-defined]
        return Columns.concat(ps)  # type: ignore[arg-type]
    out: list[Sample] = []
    for p in ps:
        out.extend(p)
    return out


def newest_ts(samples: Sequence[Sample], default: float) -> float:
    """The largest timestamp of ``samples`` (``default`` when empty)."""
    if not len(samples):
        return default
    if isinstance(samples, Columns):
        return float(samples.ts.max())
    return max(s.ts for s in samples)


def without_measurement(samples: Sequence[Sample], name: str) -> Sequence[Sample] | None:
    """``samples`` less those of measurement ``name``; None when there are none to leave out."""
    if isinstance(samples, Columns):
        hit = samples.table.measurement_mask(name)[samples.sid]
        return samples.take(~hit) if hit.any() else None
    if any(s.key.measurement == name for s in samples):
        return [s for s in samples if s.key.measurement != name]
    return None
