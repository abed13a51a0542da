"""Series out of raw tables: the time column, the value columns, the label columns, the series.

A :class:`Series` is one stream's rows in file order: the time text as written (echoed in
the output), epoch seconds, values ``[N, F]`` (NaN = missing field), a reader-level bad-row
reason per row (``ragged``, ``bad_timestamp``, ``non_numeric``, ``non_finite``), and the
label columns (never fed to the model). A file that cannot be used at all raises
:class:`~sentinel.errors.InputError` as ``file:line: reason``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..types import StreamKey
from .formats import RawTable, read_tables
from .timeparse import make_parser

TIME_NAMES = ("timestamp", "time", "datetime", "date", "ts", "_time")
LABEL_NAMES = ("label", "anomaly", "is_anomaly", "changepoint")
INFLUX_SYSTEM = {"", "result", "table", "_start", "_stop", "_time", "_value", "_field", "_measurement"}
MISSING = {"", "nan", "null", "none", "na", "n/a"}
LABEL_WORDS = {"1": 1.0, "0": 0.0, "true": 1.0, "false": 0.0, "yes": 1.0, "no": 0.0, "anomaly": 1.0,
               "normal": 0.0, "abnormal": 1.0, "ok": 0.0}
_UNIT = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*[A-Za-z%°µ/][^\d]{0,7}$")
_DEC_COMMA = re.compile(r"^\s*[-+]?\d+,\d+\s*$")
SAMPLE_ROWS = 200


@dataclass
class ReadOptions:
    fields: list[str] | None = None   # --fields, or the config's explicit `fields`: all must exist
    preferred: tuple[str, ...] = ("value",)  # used when present and no fields are given
    time_column: str | None = None
    label_columns: list[str] = field(default_factory=list)
    series_column: str | None = None
    time_format: str | None = None
    epoch_unit: str | None = None


@dataclass
class Series:
    name: str
    path: str
    key: StreamKey
    fields: tuple[str, ...]
    stamps: list[str]
    lines: np.ndarray
    ts: np.ndarray
    values: np.ndarray
    bad: list[str | None]
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    label_text: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.stamps)


def parse_value(x: str, units: bool = False, decimal_comma: bool = False) -> float:
    """A value cell -> float (NaN when missing). Raises ValueError when it is not a number."""
    t = x.strip()
    if t.lower() in MISSING:
        return math.nan
    try:
        return float(t)
    except ValueError:
        pass
    if decimal_comma and _DEC_COMMA.match(t):
        return float(t.replace(",", "."))
    if units:  # Grafana's "formatted data": "23.5 °C", "45%"
        m = _UNIT.match(t)
        if m:
            return float(m.group(1))
    raise ValueError(t)


def parse_label(x: str) -> float:
    t = x.strip().lower()
    if t in LABEL_WORDS:
        return LABEL_WORDS[t]
    if t in MISSING:
        return math.nan
    try:
        v = float(t)
    except ValueError:
        return math.nan
    return float(v != 0) if math.isfinite(v) else math.nan


def _find(header: list[str], name: str, path: str, line: int, what: str) -> int:
    """Index of column ``name`` (exact, else case-insensitive); a duplicated name is an error."""
    hits = [i for i, h in enumerate(header) if h == name] or [i for i, h in enumerate(header)
                                                              if h.lower() == name.lower()]
    if len(hits) > 1:
        cols = ", ".join(str(i + 1) for i in hits)
        raise InputError(f"{path}:{line}: {what} column {name!r} appears {len(hits)} times (columns {cols}); "
                         "rename one or name another with --time-column/--fields")
    return hits[0] if hits else -1


def _time_index(t: RawTable, opts: ReadOptions) -> int:
    if opts.time_column:
        i = _find(t.header, opts.time_column, t.path, t.header_line, "time")
        if i < 0:
            raise InputError(f"{t.path}:{t.header_line}: no time column {opts.time_column!r} (--time-column); "
                             f"header: {t.header}")
        return i
    for name in TIME_NAMES:
        i = _find(t.header, name, t.path, t.header_line, "time")
        if i >= 0:
            return i
    raise InputError(f"{t.path}:{t.header_line}: no time column (looked for {', '.join(TIME_NAMES)}); "
                     f"name it with --time-column; header: {t.header}")


def _numeric(col: list[str], units: bool, dec: bool) -> bool:
    ok = seen = 0
    for x in col:
        if x.strip().lower() in MISSING:
            continue
        seen += 1
        try:
            parse_value(x, units, dec)
            ok += 1
        except ValueError:
            pass
    return seen > 0 and ok >= 0.8 * seen


def _time_parser(t: RawTable, ti: int, rows: list[list[str]], opts: ReadOptions) -> Callable[[str], float]:
    sample = [r[ti] for r in rows[:SAMPLE_ROWS] if ti < len(r) and r[ti].strip()]
    try:
        return make_parser(sample, opts.time_format, opts.epoch_unit)[0]
    except ValueError as e:
        raise InputError(f"{t.path}: {e}") from None


def _label_columns(t: RawTable, opts: ReadOptions, taken: set[int]) -> list[int]:
    idx = []
    for name in opts.label_columns:
        i = _find(t.header, name, t.path, t.header_line, "label")
        if i < 0:
            raise InputError(f"{t.path}:{t.header_line}: no label column {name!r} (--label-column); header: {t.header}")
        idx.append(i)
    for i, h in enumerate(t.header):
        if h.lower() in LABEL_NAMES and i not in idx and i not in taken:
            idx.append(i)
    return idx


def _check_labels(path: str, lines: np.ndarray, name: str, text: list[str], explicit: bool, notes: list[str]
                  ) -> np.ndarray | None:
    vals = np.array([parse_label(x) for x in text], dtype=np.float64)
    bad = [i for i, x in enumerate(text) if math.isnan(vals[i]) and x.strip().lower() not in MISSING]
    if text and len(bad) == len(text):
        msg = f"{path}:{lines[bad[0]]}: label column {name!r}: {text[bad[0]]!r} is not 0/1 (or true/false)"
        if explicit:
            raise InputError(msg)
        notes.append(msg + "; the column is carried to the output but not used as labels")
        return None
    if bad:
        notes.append(f"{path}: label column {name!r}: {len(bad)} cells are not 0/1 (first at line "
                     f"{lines[bad[0]]}: {text[bad[0]]!r}); counted as unlabelled")
    return vals


def stream_name(path: str) -> str:
    return Path(path).stem


def read_series(path: str | Path, opts: ReadOptions | None = None, name: str | None = None) -> list[Series]:
    """Every series of ``path``: one for a plain file, one per series key otherwise."""
    opts = opts or ReadOptions()
    tables = read_tables(path)
    if tables[0].kind == "influx":
        from .influx import influx_series

        return influx_series(tables, opts, name or stream_name(str(path)))
    return table_series(tables[0], opts, name or stream_name(str(path)))


def table_series(t: RawTable, opts: ReadOptions, name: str) -> list[Series]:
    ti = _time_index(t, opts)
    si = -1
    if opts.series_column:
        si = _find(t.header, opts.series_column, t.path, t.header_line, "series")
        if si < 0:
            raise InputError(f"{t.path}:{t.header_line}: no series column {opts.series_column!r}; header: {t.header}")
    li = _label_columns(t, opts, {ti, si})
    units, dec = t.kind == "grafana", t.delimiter != ","
    taken = {ti, si, *li}
    if opts.fields:
        vi = [_find(t.header, f, t.path, t.header_line, "value") for f in opts.fields]
        missing = [f for f, i in zip(opts.fields, vi, strict=True) if i < 0]
        if missing:
            raise InputError(f"{t.path}:{t.header_line}: header lacks value column(s) {missing} (--fields or the "
                             f"config's 'fields'); header: {t.header}")
    elif all(_find(t.header, f, t.path, t.header_line, "value") >= 0 for f in opts.preferred):
        vi = [_find(t.header, f, t.path, t.header_line, "value") for f in opts.preferred]
    else:
        sample = t.rows[:SAMPLE_ROWS]
        vi = [i for i in range(len(t.header)) if i not in taken
              and _numeric([r[i] for r in sample if i < len(r)], units, dec)]
        if not vi:
            raise InputError(f"{t.path}:{t.header_line}: no numeric value columns besides the time and label "
                             f"columns; header: {t.header}")
    clash = [t.header[i] for i in vi if i in (ti, si) or i in li]
    if clash:
        raise InputError(f"{t.path}:{t.header_line}: column(s) {clash} cannot be both a value and the time/label column")
    parse_ts = _time_parser(t, ti, t.rows, opts)
    groups: dict[str, list[int]] = {}
    for r, row in enumerate(t.rows):
        key = row[si].strip() if 0 <= si < len(row) else ""
        groups.setdefault(key, []).append(r)
    fields = tuple(t.header[i] for i in vi)
    out = []
    for gkey, rows in groups.items():
        skey = StreamKey.of("replay", series=name) if si < 0 else StreamKey.of(
            "replay", {"series": name, str(opts.series_column): gkey})
        out.append(_build(t, rows, ti, vi, li, parse_ts, units, dec, fields, opts,
                          name if si < 0 else f"{name}.{gkey}", skey))
    if not out:  # header only
        out.append(_build(t, [], ti, vi, li, parse_ts, units, dec, fields, opts, name,
                          StreamKey.of("replay", series=name)))
    return out


def _build(t: RawTable, rows: list[int], ti: int, vi: list[int], li: list[int], parse_ts: Callable[[str], float],
           units: bool, dec: bool, fields: tuple[str, ...], opts: ReadOptions, name: str, key: StreamKey) -> Series:
    n, F, ncol = len(rows), len(vi), len(t.header)
    ts = np.full(n, np.nan)
    vals = np.full((n, F), np.nan)
    bad: list[str | None] = [None] * n
    stamps: list[str] = []
    ltext: dict[str, list[str]] = {t.header[i]: [] for i in li}
    for j, r in enumerate(rows):
        row = t.rows[r]
        stamps.append(row[ti] if ti < len(row) else "")
        for i in li:
            ltext[t.header[i]].append(row[i] if i < len(row) else "")
        if len(row) < ncol or (len(row) > ncol and any(c.strip() for c in row[ncol:])):
            bad[j] = "ragged"
            continue
        try:
            x = parse_ts(row[ti])
            if not math.isfinite(x):
                raise ValueError
        except (ValueError, OverflowError):
            bad[j] = "bad_timestamp"
            continue
        reason = None
        out = vals[j]
        for k, i in enumerate(vi):
            try:
                out[k] = parse_value(row[i], units, dec)
            except ValueError:
                reason = "non_numeric"
                break
            if math.isinf(out[k]):
                reason = "non_finite"
                break
        if reason is not None:
            out[:] = np.nan
            bad[j] = reason
            continue
        ts[j] = x
    notes: list[str] = []
    explicit = {c.lower() for c in opts.label_columns}
    lines = np.array([t.lines[r] for r in rows], dtype=np.int64)
    labels = {}
    for lname, text in ltext.items():
        v = _check_labels(t.path, lines, lname, text, lname.lower() in explicit, notes)
        if v is not None:
            labels[lname] = v
    return Series(name, t.path, key, fields, stamps, lines, ts, vals, bad, labels, ltext, notes)
