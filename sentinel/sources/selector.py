"""Stream selection: line protocol (or query rows) straight into :class:`~sentinel.types.Sample` objects.

:class:`StreamSelector` applies a source's :class:`Selection` (measurements, tag filters,
fields, one stream per tag set or per field) and remembers each stream's field order.
It takes a ``str.split`` fast path for lines without quotes or backslashes and falls
back to the full scanner of :mod:`sentinel.lineprotocol` otherwise, so both paths
accept and reject exactly the same lines.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ..lineprotocol import _I64_MAX, _U64_MAX, PRECISION_NS, FieldValue, LineError, Point, _scan_body
from ..types import Sample, StreamKey

_NAN = float("nan")
# --------------------------------------------------------------------------- selection


@dataclass(slots=True)
class Selection:
    """Which points form streams (see InfluxDBSourceConfig for the meaning of each knob)."""

    measurements: frozenset[str] = frozenset()
    tags: dict[str, frozenset[str]] = field(default_factory=dict)
    ignore_tags: frozenset[str] = frozenset()
    fields: tuple[str, ...] = ()
    stream_per: str = "tagset"
    field_label: str = "field"
    max_streams: int = 100_000


@dataclass(slots=True)
class ParseOutcome:
    """Samples from one body (per stream in timestamp order), rejected counts and the first errors."""

    samples: list[Sample]
    rejected: dict[str, int]
    errors: list[LineError]
    lines: int = 0
    max_ts_ns: int = -1


class _Head:
    """Cached decision for one series head (``measurement,tag=v...`` as written)."""

    __slots__ = ("key", "keys", "labels", "measurement", "order", "perm", "rx", "selected")

    def __init__(self, measurement: str, labels: dict[str, str], selected: bool):
        self.measurement = measurement
        self.labels = labels
        self.selected = selected
        self.key: StreamKey | None = None  # tagset mode
        self.order: tuple[str, ...] | None = None  # tagset mode: the stream's fields
        self.keys: dict[str, StreamKey | None] = {}  # field mode: field -> key (None = refused)
        self.rx: re.Pattern[str] | None = None  # tagset mode: the field layout last seen, as one regex
        self.perm: tuple[int, ...] | None = None  # stream field i <- layout value perm[i] (-1: missing)


class StreamSelector:
    """Turns line protocol (or query rows) into Samples, applying the stream selection.

    Stateful: remembers each stream's field order (fixed at first sight when
    ``fields`` is empty) and the number of streams created, refusing new ones past
    ``max_streams`` (``on_refused`` is called once per refused stream). Not thread-safe;
    use from the event loop.
    """

    MAX_ERRORS_KEPT = 10
    HEAD_CACHE_MAX = 200_000

    def __init__(self, sel: Selection, on_refused=None):
        self.sel = sel
        self._on_refused = on_refused
        self._heads: dict[str, _Head] = {}
        self._streams: dict[StreamKey, tuple[str, ...]] = {}
        self._refused: set[StreamKey] = set()
        self._max_ns = -1

    @property
    def stream_count(self) -> int:
        return len(self._streams)

    # -- stream registry -------------------------------------------------------
    def _admit(self, key: StreamKey, order: tuple[str, ...]) -> tuple[str, ...] | None:
        got = self._streams.get(key)
        if got is not None:
            return got
        if key in self._refused:
            return None
        if len(self._streams) >= self.sel.max_streams:
            self._refused.add(key)
            if self._on_refused is not None:
                self._on_refused(key)
            return None
        self._streams[key] = order
        return order

    def _head_for(self, measurement: str, tags: Iterable[tuple[str, str]]) -> _Head:
        sel = self.sel
        labels = {k: v for k, v in tags if k not in sel.ignore_tags}
        ok = not sel.measurements or measurement in sel.measurements
        if ok and sel.tags:
            ok = all(labels.get(k) in allowed for k, allowed in sel.tags.items())
        return _Head(measurement, labels, ok)

    def _emit(self, h: _Head, fv: Mapping[str, FieldValue], ts_ns: int, out: list[Sample], rej: dict[str, int]) -> None:
        sel = self.sel
        ts = ts_ns / 1e9
        if ts_ns > self._max_ns:
            self._max_ns = ts_ns
        if sel.stream_per == "field":
            names = sel.fields or [k for k, v in fv.items() if type(v) is float or type(v) is int]
            for f in names:
                if f not in fv:
                    continue
                v = fv[f]
                if type(v) is str:
                    continue
                key = h.keys.get(f, _MISSING)
                if key is _MISSING:
                    labels = dict(h.labels)
                    labels[sel.field_label] = f
                    k = StreamKey.of(h.measurement, labels)
                    key = k if self._admit(k, (f,)) is not None else None
                    h.keys[f] = key
                if key is None:
                    rej["max_streams"] = rej.get("max_streams", 0) + 1
                    continue
                out.append(Sample(key, ts, (f,), (float(v),)))
            return
        order = h.order
        if order is None:
            key = StreamKey.of(h.measurement, h.labels)
            want = tuple(sel.fields) or tuple(sorted(k for k, v in fv.items() if type(v) is float or type(v) is int))
            if not want:
                return
            got = self._admit(key, want)
            if got is None:
                rej["max_streams"] = rej.get("max_streams", 0) + 1
                return
            h.key, h.order, order = key, got, got
        vals = []
        anyv = False
        for f in order:
            x = fv.get(f)
            if x is None or type(x) is str:
                vals.append(_NAN)
            else:
                vals.append(float(x))
                anyv = True
        if anyv:
            out.append(Sample(h.key, ts, order, tuple(vals)))  # type: ignore[arg-type]

    # -- entry points ----------------------------------------------------------
    def add_point(self, measurement: str, tags: Iterable[tuple[str, str]], fields: dict[str, FieldValue],
                  ts_ns: int, out: list[Sample], rejected: dict[str, int]) -> None:
        """Select one point (from a query result or the scanner) into ``out``."""
        h = self._head_for(measurement, tags)
        if h.selected:
            self._emit(h, fields, ts_ns, out, rejected)

    def parse_body(self, body: str, precision: str = "ns", now_ns: int = 0) -> ParseOutcome:
        """Parse a whole body; lines without a timestamp get ``now_ns``. Never raises on content."""
        mult = PRECISION_NS[precision]
        out: list[Sample] = []
        rej: dict[str, int] = {}
        errors: list[LineError] = []
        heads = self._heads
        nlines = 0
        self._max_ns = -1
        if len(heads) > self.HEAD_CACHE_MAX:
            heads.clear()
        if '"' in body:
            nlines = self._slow(body, mult, now_ns, out, rej, errors, 1)
        else:
            # Fast path: str.split on lines without quotes or backslashes; anything unusual
            # (extra spaces, booleans, odd numbers, bad timestamps) goes to the full scanner.
            tagset = self.sel.stream_per == "tagset"
            append = out.append
            max_ns = -1
            lineno = 0
            for line in body.split("\n"):
                lineno += 1
                if not line or line[0] == "#":
                    continue
                if "\\" not in line:
                    parts = line.split(" ")
                    np_ = len(parts)
                    if np_ == 2 or np_ == 3:
                        head = parts[0]
                        h = heads.get(head)
                        if h is None:
                            h = self._fast_head(head)
                        if np_ == 3:  # the timestamp, in ns (-1: not a valid one)
                            t = parts[2]
                            ts = int(t) if t.isdigit() and t.isascii() and len(t) <= 19 else _TOO_BIG
                            ts = ts * mult if ts <= _I64_MAX else -1
                        else:
                            ts = now_ns
                        if h is not None and h.rx is not None:
                            # Fastest path: this head's usual field layout, validated and split
                            # by one regex; values straight into the stream's field order.
                            m = h.rx.fullmatch(parts[1])
                            if m is not None:
                                lv = tuple(map(float, m.groups()))
                                tot = sum(lv)
                                if ts >= 0 and tot - tot == 0.0:
                                    nlines += 1
                                    perm = h.perm
                                    if perm is not None:
                                        lv = tuple([lv[i] if i >= 0 else _NAN for i in perm])
                                    if ts > max_ns:
                                        max_ns = ts
                                    append(Sample(h.key, ts / 1e9, h.order, lv))  # type: ignore[arg-type]
                                    continue
                        if h is not None:
                            fv = _fast_fields(parts[1])
                            if fv is not None and ts >= 0:
                                nlines += 1
                                if not h.selected:
                                    continue
                                order = h.order
                                if tagset and order is not None:
                                    vals = tuple([fv.get(f, _NAN) for f in order])
                                    if vals.count(_NAN) < len(vals):
                                        if ts > max_ns:
                                            max_ns = ts
                                        append(Sample(h.key, ts / 1e9, order, vals))  # type: ignore[arg-type]
                                        _learn_layout(h, parts[1])
                                else:
                                    self._emit(h, fv, ts, out, rej)
                                continue
                nlines += self._slow(line, mult, now_ns, out, rej, errors, lineno)
            if max_ns > self._max_ns:
                self._max_ns = max_ns
        if len(out) > 1:
            out.sort(key=_by_ts)
        return ParseOutcome(out, rej, errors, nlines, self._max_ns if out else -1)

    def _fast_head(self, head: str) -> _Head | None:
        parts = head.split(",")
        meas = parts[0]
        if not meas or meas[0] in " \t\r":  # the scanner skips leading white space: let it decide
            return None
        tags = []
        for p in parts[1:]:
            kv = p.split("=")
            if len(kv) != 2 or not kv[0] or not kv[1]:
                return None
            tags.append((kv[0], kv[1]))
        h = self._head_for(meas, tags)
        self._heads[head] = h
        return h

    def _slow(self, text: str, mult: int, now_ns: int, out: list[Sample], rej: dict[str, int],
              errors: list[LineError], first_lineno: int) -> int:
        n = 0
        for lineno, start, end, item in _scan_body(text, mult, first_lineno):
            n += 1
            if isinstance(item, Point):
                self.add_point(item.measurement, item.tags, item.fields,
                               now_ns if item.ts is None else item.ts, out, rej)
            else:
                rej[item.reason] = rej.get(item.reason, 0) + 1
                if len(errors) < self.MAX_ERRORS_KEPT:
                    errors.append(LineError(lineno, item.reason, text[start:end].rstrip("\r"), item.message))
        return n


_MISSING = StreamKey("\x00missing")


_by_ts = operator.attrgetter("ts")


_TOO_BIG = 2**64
_RX_CACHE: dict[tuple[tuple[str, str], ...], re.Pattern[str]] = {}
_RX_KIND = {
    "f": r"(-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?)",
    "i": r"(-?[0-9]{1,18})i",
    "u": r"([0-9]{1,19})u",
}


def _learn_layout(h: _Head, text: str) -> None:
    """Remember a selected head's field layout (keys in written order and their kinds) as a regex.

    Only for heads whose stream is known (tagset mode) and layouts whose every value is
    numeric; the regex accepts a subset of what the full grammar accepts, so a line it
    does not match simply takes the general path.
    """
    if h.rx is not None or h.order is None:
        return
    layout = []
    for kv in text.split(","):
        k, _, v = kv.partition("=")
        c = v[-1:]
        layout.append((k, c if c in ("i", "u") else "f"))
    if len({k for k, _ in layout}) != len(layout):
        return
    lt = tuple(layout)
    rx = _RX_CACHE.get(lt)
    if rx is None:
        if len(_RX_CACHE) > 10_000:
            _RX_CACHE.clear()
        rx = _RX_CACHE[lt] = re.compile(",".join(re.escape(k) + "=" + _RX_KIND[kind] for k, kind in lt))
    keys = [k for k, _ in lt]
    perm = tuple(keys.index(f) if f in keys else -1 for f in h.order)
    if all(i < 0 for i in perm):
        return
    h.perm = None if perm == tuple(range(len(keys))) else perm
    h.rx = rx


_KEY = r'[^,=\s"\\]+'
_NUM = r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
_INT = r"(?:-?[0-9]{1,18}i|[0-9]{1,19}u)"
_KV = rf"{_KEY}=(?:{_NUM}|{_INT})"
_FIELDS_FAST = re.compile(rf"{_KV}(?:,{_KV})*", re.ASCII)


def _fast_fields(text: str) -> dict[str, float] | None:
    """``k=v,k=v`` with float/integer/unsigned values, as floats; None when the full scanner must decide
    (booleans, anything odd). One C-level regex validates the syntax; callers ensure no quotes or backslashes."""
    if _FIELDS_FAST.fullmatch(text) is None:
        return None
    fv: dict[str, float] = {}
    for kv in text.split(","):
        k, _, v = kv.partition("=")
        c = v[-1]
        if c == "i" or c == "u":
            f = float(int(v[:-1]))
            if c == "u" and int(v[:-1]) > _U64_MAX:
                return None
        else:
            f = float(v)
            if f - f != 0.0:
                return None
        fv[k] = f
    return fv


def is_finite(x: float) -> bool:
    return math.isfinite(x)

