"""InfluxDB line protocol, the one codec: a full-grammar parser and a writer (and the samples writer).

Grammar (InfluxDB 1.x/2.x)::

    measurement[,tag=value...] field=value[,field=value...] [timestamp]

* measurement: ``\\,`` ``\\ `` (and ``\\\\``) escaped; tag keys/values and field keys
  also escape ``=``; a backslash before any other character is literal.
* field values: float (``1``, ``-1.5e3``), integer ``12i`` (int64), unsigned ``12u``
  (uint64), boolean (``t T true True TRUE f F false False FALSE``), string
  ``"..."`` (``\\"`` and ``\\\\`` escaped; may span lines).
* timestamp: optional integer in the request's precision (missing: receipt time).
* ``#`` comment lines and blank lines are skipped.

:func:`parse` is the reference parser (every line through the scanner);
:func:`format_point` its inverse (``parse(format_point(p)) == [p]`` for any valid point);
:func:`samples_to_lines` writes :class:`~sentinel.types.Sample` objects (``sentinel simulate``,
the simulator, write-back and the benchmarks all write through it).
:class:`~sentinel.sources.selector.StreamSelector` turns a body straight into samples; it
takes a ``str.split`` fast path for lines without quotes or backslashes (the common case)
and falls back to this module's scanner otherwise, so both paths accept and reject exactly
the same lines.

Errors are per line: a bad line is counted under a reason
(:data:`REASONS`) and the good lines of the same body are kept.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from .types import Sample

FieldValue = float | int | bool | str

#: Multiplier from a request's ``precision`` to nanoseconds (v1 and v2 spellings).
PRECISION_NS: dict[str, int] = {
    "n": 1, "ns": 1, "u": 1_000, "us": 1_000, "µ": 1_000, "µs": 1_000,
    "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000,
}

#: Rejection reasons (``sentinel_samples_rejected_total{reason=...}`` for unparseable lines).
REASONS = (
    "lp_missing_measurement", "lp_bad_tag", "lp_missing_fields", "lp_bad_field",
    "lp_bad_field_value", "lp_unbalanced_quotes", "lp_bad_timestamp",
)

_I64_MIN, _I64_MAX, _U64_MAX = -(2**63), 2**63 - 1, 2**64 - 1
_BOOLS = {"t": True, "T": True, "true": True, "True": True, "TRUE": True,
          "f": False, "F": False, "false": False, "False": False, "FALSE": False}
_NUM_START = frozenset("-0123456789.")
_NUM_END = frozenset("0123456789.")
_NAN = float("nan")


@dataclass(frozen=True, slots=True)
class Point:
    """One parsed line. ``ts`` is in nanoseconds since the epoch, or None when the line had none."""

    measurement: str
    tags: tuple[tuple[str, str], ...]
    fields: dict[str, FieldValue]
    ts: int | None = None


@dataclass(frozen=True, slots=True)
class LineError:
    """A rejected line: 1-based ``lineno`` within the body, a ``reason`` from REASONS, the text."""

    lineno: int
    reason: str
    line: str
    message: str

    def influx_text(self) -> str:
        """InfluxDB's wording: ``unable to parse '<line>': <message>``."""
        return f"unable to parse '{self.line[:200]}': {self.message}"


class _Bad(Exception):
    def __init__(self, reason: str, message: str):
        self.reason, self.message = reason, message


# --------------------------------------------------------------------------- values


def parse_field_value(v: str) -> FieldValue:
    """One unquoted field value (see the module grammar); raises ValueError if invalid."""
    if not v:
        raise ValueError("missing field value")
    b = _BOOLS.get(v)
    if b is not None:
        return b
    c = v[-1]
    if c == "i" or c == "u":
        d = v[:-1]
        if not d or "_" in d or not (d.isascii() and (d.isdigit() or (d[0] == "-" and d[1:].isdigit()))):
            raise ValueError(f"invalid integer {v!r}")
        x = int(d)
        if c == "i" and not _I64_MIN <= x <= _I64_MAX:
            raise ValueError(f"integer out of range {v!r}")
        if c == "u" and not 0 <= x <= _U64_MAX:
            raise ValueError(f"unsigned out of range {v!r}")
        return x
    if v[0] not in _NUM_START or v[-1] not in _NUM_END or "_" in v or not v.isascii():
        raise ValueError(f"invalid number {v!r}")
    f = float(v)
    if f - f != 0.0:  # inf or nan
        raise ValueError(f"invalid number {v!r}")
    return f


def _parse_ts(t: str, mult: int) -> int:
    if not (t.isascii() and (t.isdigit() or (len(t) > 1 and t[0] == "-" and t[1:].isdigit()))):
        raise ValueError(f"bad timestamp {t!r}")
    x = int(t)
    if not _I64_MIN <= x <= _I64_MAX:
        raise ValueError(f"timestamp out of range {t!r}")
    return x * mult


# --------------------------------------------------------------------------- scanner (full grammar)


def _scan_name(s: str, i: int, n: int, stops: str, escapable: str) -> tuple[str, int]:
    """Read an escaped identifier from ``i`` until an unescaped char in ``stops`` (or newline/end)."""
    out: list[str] = []
    start = i
    while i < n:
        c = s[i]
        if c == "\\" and i + 1 < n and s[i + 1] in escapable:
            out.append(s[start:i])
            out.append(s[i + 1])
            i += 2
            start = i
            continue
        if c in stops or c == "\n":
            break
        i += 1
    out.append(s[start:i])
    return "".join(out), i


def _scan_line(s: str, i: int, n: int, mult: int) -> tuple[Point, int]:
    """Parse one line starting at ``i`` (not blank, not a comment); return (point, index of its end).

    The end is the index of the terminating newline (or ``n``). Raises _Bad with the
    end stored in ``_Bad.end`` so the caller can skip the line.
    """
    meas, i = _scan_name(s, i, n, ", ", ", \\=")
    if not meas:
        raise _Bad("lp_missing_measurement", "missing measurement")
    tags: list[tuple[str, str]] = []
    while i < n and s[i] == ",":
        k, i = _scan_name(s, i + 1, n, ",= ", ",= \\")
        if i >= n or s[i] != "=" or not k:
            raise _Bad("lp_bad_tag", "missing tag key" if not k else "missing tag value")
        v, i = _scan_name(s, i + 1, n, ",= ", ",= \\")
        if not v:
            raise _Bad("lp_bad_tag", "missing tag value")
        if i < n and s[i] == "=":
            raise _Bad("lp_bad_tag", "invalid tag format")
        tags.append((k, v))
    if i >= n or s[i] != " ":
        raise _Bad("lp_missing_fields", "missing fields")
    while i < n and s[i] == " ":
        i += 1
    fields: dict[str, FieldValue] = {}
    while True:
        k, i = _scan_name(s, i, n, ",= ", ",= \\")
        if not k:
            raise _Bad("lp_missing_fields" if not fields else "lp_bad_field", "missing field key")
        if i >= n or s[i] != "=":
            raise _Bad("lp_bad_field", "missing field value")
        i += 1
        if i < n and s[i] == '"':
            i += 1
            out: list[str] = []
            start = i
            while True:
                if i >= n:
                    raise _Bad("lp_unbalanced_quotes", "unbalanced quotes")
                c = s[i]
                if c == "\\" and i + 1 < n and s[i + 1] in '"\\':
                    out.append(s[start:i])
                    out.append(s[i + 1])
                    i += 2
                    start = i
                    continue
                if c == '"':
                    out.append(s[start:i])
                    i += 1
                    break
                i += 1
            fields[k] = "".join(out)
        else:
            start = i
            while i < n and s[i] not in ", \n":
                i += 1
            try:
                fields[k] = parse_field_value(s[start:i])
            except ValueError as e:
                raise _Bad("lp_bad_field_value", f"invalid field format: {e}") from None
        if i < n and s[i] == ",":
            i += 1
            continue
        break
    ts: int | None = None
    while i < n and s[i] == " ":
        i += 1
    if i < n and s[i] not in "\r\n":
        start = i
        while i < n and s[i] not in " \r\n":
            i += 1
        try:
            ts = _parse_ts(s[start:i], mult)
        except ValueError as e:
            raise _Bad("lp_bad_timestamp", str(e)) from None
        while i < n and s[i] == " ":
            i += 1
    if i < n and s[i] == "\r":
        i += 1
    if i < n and s[i] != "\n":
        raise _Bad("lp_bad_timestamp", "unexpected text after the timestamp")
    return Point(meas, tuple(tags), fields, ts), i


def _skip_line(s: str, i: int, n: int) -> int:
    j = s.find("\n", i)
    return n if j < 0 else j


def _scan_body(s: str, mult: int, first_lineno: int = 1) -> Iterable[tuple[int, int, int, Point | _Bad]]:
    """Yield ``(lineno, start, end, point-or-error)`` for every non-blank, non-comment line of ``s``."""
    i, n, lineno = 0, len(s), first_lineno
    while i < n:
        # skip leading whitespace and blank lines
        while i < n and s[i] in " \t\r\n":
            if s[i] == "\n":
                lineno += 1
            i += 1
        if i >= n:
            break
        start = i
        if s[i] == "#":
            i = _skip_line(s, i, n)
            continue
        try:
            p, end = _scan_line(s, i, n, mult)
            item: Point | _Bad = p
        except _Bad as e:
            item, end = e, _skip_line(s, i, n)
        yield lineno, start, end, item
        lineno += s.count("\n", start, end)
        i = end


def parse(body: str, precision: str = "ns") -> tuple[list[Point], list[LineError]]:
    """Reference parser: every line through the full-grammar scanner.

    >>> pts, errs = parse('cpu,host=a usage=0.5,n=3i 1700000000000000000\\nbad')
    >>> pts[0].tags, pts[0].fields, pts[0].ts, errs[0].reason
    ((('host', 'a'),), {'usage': 0.5, 'n': 3}, 1700000000000000000, 'lp_missing_fields')
    """
    mult = PRECISION_NS[precision]
    points: list[Point] = []
    errors: list[LineError] = []
    for lineno, start, end, item in _scan_body(body, mult):
        if isinstance(item, Point):
            points.append(item)
        else:
            errors.append(LineError(lineno, item.reason, body[start:end].rstrip("\r"), item.message))
    return points, errors


# --------------------------------------------------------------------------- writer


def _esc_meas(s: str) -> str:
    return s.replace("\\", "\\\\").replace(",", "\\,").replace(" ", "\\ ")


def _esc_key(s: str) -> str:
    return s.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def format_value(v: FieldValue) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return f"{v}i"
    if isinstance(v, float):
        return repr(v)
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_point(p: Point) -> str:
    """One line of line protocol (no newline); inverse of the parser for any valid point."""
    head = _esc_meas(p.measurement)
    if p.tags:
        head += "," + ",".join(f"{_esc_key(k)}={_esc_key(v)}" for k, v in p.tags)
    body = ",".join(f"{_esc_key(k)}={format_value(v)}" for k, v in p.fields.items())
    return f"{head} {body}" if p.ts is None else f"{head} {body} {p.ts}"


def format_line(measurement: str, tags: dict[str, str] | Iterable[tuple[str, str]],
                fields: dict[str, FieldValue], ts_ns: int | None) -> str:
    items = tags.items() if isinstance(tags, dict) else tags
    return format_point(Point(measurement, tuple(items), fields, ts_ns))


def samples_to_lines(samples: Iterable[Sample], field_label: str | None = None) -> list[str]:
    r"""Samples as line protocol (ns timestamps), one line each, leaving out what line protocol cannot
    say: non-finite values (a sample with none is skipped), empty tag values, and a measurement that
    starts with ``#`` (the line would read as a comment).

    ``field_label``: a univariate per-field key's label naming the field, dropped from the tags.

    >>> from sentinel.types import StreamKey
    >>> samples_to_lines([Sample(StreamKey.of("m,x", {"a b": "c\\d", "e": ""}), 1.5, ("f", "g"), (2.0, math.nan))])
    ['m\\,x,a\\ b=c\\\\d f=2.0 1500000000']
    """
    lines = []
    for s in samples:
        fv: dict[str, FieldValue] = {f: float(v) for f, v in zip(s.fields, s.values, strict=False) if math.isfinite(v)}
        if not fv or s.key.measurement.startswith("#"):
            continue
        tags = tuple((k, v) for k, v in s.key.labels if k != field_label and v != "")
        lines.append(format_point(Point(s.key.measurement, tags, fv, round(s.ts * 1_000_000_000))))
    return lines

