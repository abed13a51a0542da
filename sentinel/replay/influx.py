"""InfluxDB annotated CSV (``influx query --raw``) into series: one per measurement and tag set.

Long tables (``_time,_value,_field`` plus tags) are pivoted on ``_time`` per series, one
column per ``_field``; already-pivoted tables (``fieldsAsCols``) take their non-system,
non-group columns as fields. The series key is ``_measurement`` plus the ``#group`` columns.
Fields named like a label column (``anomaly``, ...) become labels.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InputError
from ..types import StreamKey
from .formats import RawTable
from .reader import INFLUX_SYSTEM, LABEL_NAMES, ReadOptions, Series, _check_labels, parse_value
from .timeparse import parse_iso

_Cell = tuple[str, int]  # text, line


def influx_series(tables: list[RawTable], opts: ReadOptions, name: str) -> list[Series]:
    by_key: dict[StreamKey, dict[str, dict[str, _Cell]]] = {}
    for t in tables:
        h = t.header
        if "_time" not in h:
            raise InputError(f"{t.path}:{t.header_line}: InfluxDB table without a _time column; header: {h}")
        ti = h.index("_time")
        mi = h.index("_measurement") if "_measurement" in h else -1
        group = t.group or [False] * len(h)
        tags = [i for i, c in enumerate(h) if c not in INFLUX_SYSTEM and i < len(group) and group[i]]
        long = "_field" in h and "_value" in h
        fi, vi = (h.index("_field"), h.index("_value")) if long else (-1, -1)
        cols = [] if long else [i for i, c in enumerate(h) if c not in INFLUX_SYSTEM and i not in tags]
        for row, line in zip(t.rows, t.lines, strict=True):
            if len(row) != len(h):
                raise InputError(f"{t.path}:{line}: {len(row)} cells, the table's header has {len(h)}")
            meas = row[mi] if mi >= 0 else name
            key = StreamKey.of(meas, {h[i]: row[i] for i in tags})
            times = by_key.setdefault(key, {})
            cells = times.setdefault(row[ti], {})
            if long:
                cells[row[fi]] = (row[vi], line)
            else:
                for i in cols:
                    cells[h[i]] = (row[i], line)
    out = []
    for key, times in by_key.items():
        out.append(_pivot(tables[0].path, key, times, opts))
    return out


def _pivot(path: str, key: StreamKey, times: dict[str, dict[str, _Cell]], opts: ReadOptions) -> Series:
    names = sorted({f for cells in times.values() for f in cells})
    labels = [f for f in names if f.lower() in LABEL_NAMES or f in opts.label_columns]
    if opts.fields:
        missing = [f for f in opts.fields if f not in names]
        if missing:
            raise InputError(f"{path}: series {key} has no field(s) {missing}; its fields: {names}")
        fields = list(opts.fields)
    else:  # numeric fields only (string and boolean fields cannot be fed)
        fields = []
        for f in names:
            if f in labels:
                continue
            try:
                [parse_value(c[f][0]) for c in times.values() if f in c]
                fields.append(f)
            except ValueError:
                continue
        if not fields:
            raise InputError(f"{path}: series {key} has no numeric fields; its fields: {names}")
    rows = []
    for stamp, cells in times.items():
        try:
            ts = parse_iso(stamp)
        except ValueError:
            ts = math.nan
        rows.append((ts, stamp, cells))
    rows.sort(key=lambda r: (math.isnan(r[0]), r[0]))
    n, F = len(rows), len(fields)
    vals = np.full((n, F), np.nan)
    bad: list[str | None] = [None] * n
    tsa = np.array([r[0] for r in rows], dtype=np.float64)
    for j, (ts, _stamp, cells) in enumerate(rows):
        if math.isnan(ts):
            bad[j] = "bad_timestamp"
            continue
        for k, f in enumerate(fields):
            if f in cells:
                try:
                    vals[j, k] = parse_value(cells[f][0])
                except ValueError:
                    bad[j] = "non_numeric"
                    break
                if math.isinf(vals[j, k]):
                    bad[j] = "non_finite"
                    break
        if bad[j] is not None:
            vals[j] = np.nan
            tsa[j] = np.nan
    lines = np.array([min(c[1] for c in cells.values()) for _ts, _s, cells in rows], dtype=np.int64)
    ltext = {f: [cells[f][0] if f in cells else "" for _ts, _s, cells in rows] for f in labels}
    notes: list[str] = []
    lab = {}
    for f, text in ltext.items():
        v = _check_labels(path, lines, f, text, f in opts.label_columns, notes)
        if v is not None:
            lab[f] = v
    return Series(str(key), path, key, tuple(fields), [r[1] for r in rows], lines, tsa, vals, bad, lab, ltext, notes)
