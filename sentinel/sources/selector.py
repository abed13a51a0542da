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
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..columns import NAN
from ..lineprotocol import _I64_MAX, PRECISION_NS, FieldValue, LineError, Point, _scan_body
from ..types import Sample, StreamKey
from .bulk import Bulk
from .fastpath import _fast_fields, _learn_layout

_intern = sys.intern
_NAN = NAN  # the one NaN object of missing values (Columns materialise the same)

#: Bounds on what one input may make Sentinel hold (``streams.max_*``), counted under these reasons.
BOUND_REASONS = ("max_fields", "key_too_long", "tag_value_too_long", "series_per_body", "future", "too_old",
                 "invalid_utf8")
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
    # bounds (``streams.*``); time bounds 0 = none, and apply only when the caller gives ``now_ns``
    max_fields: int = 64
    max_key_length: int = 256
    max_tag_value_length: int = 1024
    max_series_per_body: int = 100_000
    max_refused_keys: int = 10_000
    max_future_ns: int = 0
    max_age_ns: int = 0

    @classmethod
    def of(cls, cfg: Any, streams: Any, fields: Sequence[str]) -> Selection:
        """A push or query source's selection (``cfg``: its config's measurements, tags, ignore_tags,
        stream_per, field_label, max_streams) with the input bounds of ``streams`` (a
        ``StreamsConfig``; its defaults when None) and the stream fields ``fields``."""
        if streams is None:
            from ..config.schema import StreamsConfig

            streams = StreamsConfig()
        b = streams
        return cls(
            max_fields=b.max_fields, max_key_length=b.max_key_length, max_tag_value_length=b.max_tag_value_length,
            max_series_per_body=b.max_series_per_body, max_refused_keys=b.max_refused_keys,
            max_future_ns=int(b.max_future * 1e9), max_age_ns=int(b.max_age * 1e9),
            measurements=frozenset(cfg.measurements),
            tags={k: frozenset(v) for k, v in cfg.tags.items()},
            ignore_tags=frozenset(cfg.ignore_tags),
            fields=tuple(fields),
            stream_per=cfg.stream_per,
            field_label=cfg.field_label,
            max_streams=cfg.max_streams,
        )


@dataclass(slots=True)
class ParseOutcome:
    """Samples from one body (per stream in timestamp order), rejected counts and the first errors."""

    samples: Sequence[Sample]  # a list, or Columns from the columnar path (:mod:`.bulk`)
    rejected: dict[str, int]
    errors: list[LineError]
    lines: int = 0
    max_ts_ns: int = -1


class _Head:
    """Cached decision for one series head (``measurement,tag=v...`` as written)."""

    __slots__ = ("key", "keys", "labels", "measurement", "order", "perm", "refused", "rx", "selected")

    def __init__(self, measurement: str, labels: dict[str, str], selected: bool, refused: str | None = None):
        self.measurement = measurement
        self.labels = labels
        self.selected = selected
        self.refused = refused  # a bound this head breaks (its lines are rejected under this reason)
        self.key: StreamKey | None = None  # tagset mode
        self.order: tuple[str, ...] | None = None  # tagset mode: the stream's fields
        self.keys: dict[str, StreamKey | None] | None = None  # field mode: field -> key (None = refused)
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
        self._refused: set[StreamKey] = set()  # bounded by sel.max_refused_keys
        self._max_ns = -1
        self._hi_ns = _NO_HI  # timestamp bounds of the body being parsed
        self._lo_ns = -1
        self._new_heads = 0  # series first seen in the body being parsed
        self._slow_seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()  # those of its scanner lines
        self._bulk = Bulk()  # the columnar path's series table and layouts

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
            if len(self._refused) < self.sel.max_refused_keys:  # beyond it, refused again each time (counted)
                self._refused.add(key)
            if self._on_refused is not None:
                self._on_refused(key)
            return None
        self._streams[key] = order
        return order

    def _head_for(self, measurement: str, tags: Iterable[tuple[str, str]], new_series: bool = False) -> _Head:
        """``new_series``: a series first seen in the body being parsed (counted against the bound)."""
        sel = self.sel
        tags = tuple(tags)
        refused = None
        if new_series:
            self._new_heads += 1
        if self._new_heads > sel.max_series_per_body:
            refused = "series_per_body"
        elif len(measurement) > sel.max_key_length or any(len(k) > sel.max_key_length for k, _ in tags):
            refused = "key_too_long"
        elif any(len(v) > sel.max_tag_value_length for _, v in tags):
            refused = "tag_value_too_long"
        if refused is not None:
            return _Head(measurement, {}, False, refused)
        # interned: one str per distinct measurement, tag key and tag value, not one each per series (100k
        # series `pump,site=s3,pump=p17` held 5 str each; the StreamKeys made from the labels share them)
        measurement = _intern(measurement)
        labels = {_intern(k): _intern(v) for k, v in tags if k not in sel.ignore_tags}
        ok = not sel.measurements or measurement in sel.measurements
        if ok and sel.tags:
            ok = all(labels.get(k) in allowed for k, allowed in sel.tags.items())
        return _Head(measurement, labels, ok)

    def _bounded(self, fv: Mapping[str, FieldValue], ts_ns: int, rej: dict[str, int]) -> bool:
        """False (and counted) when a point breaks a bound on its fields or timestamp."""
        sel = self.sel
        reason = None
        if ts_ns > self._hi_ns:
            reason = "future"
        elif ts_ns < self._lo_ns:
            reason = "too_old"
        elif len(fv) > sel.max_fields:
            reason = "max_fields"
        elif any(len(k) > sel.max_key_length for k in fv):
            reason = "key_too_long"
        if reason is None:
            return True
        rej[reason] = rej.get(reason, 0) + 1
        return False

    def _emit(self, h: _Head, fv: Mapping[str, FieldValue], ts_ns: int, out: list[Sample], rej: dict[str, int]) -> None:
        sel = self.sel
        if not self._bounded(fv, ts_ns, rej):
            return
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
                keys = h.keys
                if keys is None:  # made at first use: a tagset head never needs one (64 B a series)
                    keys = h.keys = {}
                key = keys.get(f, _MISSING)
                if key is _MISSING:
                    labels = dict(h.labels)
                    labels[sel.field_label] = f
                    k = StreamKey.of(h.measurement, labels)
                    key = k if self._admit(k, (f,)) is not None else None
                    keys[f] = key
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
            h.labels = _NO_LABELS  # in the key now, and not read again (a dict of ~110 B a series)
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
        elif h.refused is not None:
            rejected[h.refused] = rejected.get(h.refused, 0) + 1

    def parse_body(self, body: str, precision: str = "ns", now_ns: int = 0) -> ParseOutcome:
        """Parse a whole body; lines without a timestamp get ``now_ns``. Never raises on content."""
        mult = PRECISION_NS[precision]
        out: list[Sample] = []
        rej: dict[str, int] = {}
        errors: list[LineError] = []
        heads = self._heads
        nlines = 0
        self._max_ns = -1
        sel = self.sel
        if len(heads) > max(self.HEAD_CACHE_MAX, sel.max_streams + sel.max_refused_keys):
            heads.clear()
            self._bulk.reset()
        self._new_heads = 0
        self._slow_seen = set()
        self._hi_ns = now_ns + sel.max_future_ns if now_ns > 0 and sel.max_future_ns > 0 else _NO_HI
        self._lo_ns = now_ns - sel.max_age_ns if now_ns > 0 and sel.max_age_ns > 0 else -1
        hi, lo, max_fields = self._hi_ns, self._lo_ns, sel.max_fields
        bulk = self._bulk.parse(body, mult, now_ns, lo, hi, max_fields) if sel.stream_per == "tagset" else None
        if bulk is not None:
            cols, rej, nlines, max_ts = bulk
            self._hi_ns, self._lo_ns = _NO_HI, -1
            self._max_ns = max_ts
            return ParseOutcome(cols if cols is not None else [], rej, errors, nlines, max_ts if cols is not None else -1)
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
                                if lo <= ts <= hi and ts >= 0 and tot - tot == 0.0:
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
                            if fv is not None and lo <= ts <= hi and ts >= 0 and len(fv) <= max_fields:
                                nlines += 1
                                if not h.selected:
                                    if h.refused is not None:
                                        rej[h.refused] = rej.get(h.refused, 0) + 1
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
                                    if tagset and h.order is not None:  # first sight: learn its layout now
                                        _learn_layout(h, parts[1])
                                if h.rx is not None and head not in self._bulk.hid:
                                    self._bulk.register(head, h)
                                continue
                nlines += self._slow(line, mult, now_ns, out, rej, errors, lineno)
            if max_ns > self._max_ns:
                self._max_ns = max_ns
        self._hi_ns, self._lo_ns = _NO_HI, -1
        self._slow_seen = set()
        if len(out) > 1:
            out.sort(key=_by_ts)
        return ParseOutcome(out, rej, errors, nlines, self._max_ns if out else -1)

    def parse_bytes(self, body: bytes, precision: str = "ns", now_ns: int = 0) -> ParseOutcome:
        """:meth:`parse_body` of a request body; lines that are not valid UTF-8 are rejected (``invalid_utf8``)."""
        try:
            return self.parse_body(body.decode("utf-8"), precision, now_ns)
        except UnicodeDecodeError:
            pass
        good, bad = [], []
        for i, line in enumerate(body.split(b"\n"), 1):
            try:
                good.append(line.decode("utf-8"))
            except UnicodeDecodeError:
                good.append("")  # keeps the line numbers of the rest
                bad.append(LineError(i, "invalid_utf8", line[:200].decode("utf-8", "replace"), "invalid UTF-8"))
        out = self.parse_body("\n".join(good), precision, now_ns)
        out.rejected["invalid_utf8"] = out.rejected.get("invalid_utf8", 0) + len(bad)
        out.errors[:0] = bad[: self.MAX_ERRORS_KEPT]
        del out.errors[self.MAX_ERRORS_KEPT:]
        out.lines += len(bad)
        return out

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
        h = self._head_for(meas, tags, new_series=True)
        if h.refused != "series_per_body":  # not cached: the next body may take it
            self._heads[head] = h
            if not h.selected:
                self._bulk.skip[head] = h.refused
        return h

    def _slow(self, text: str, mult: int, now_ns: int, out: list[Sample], rej: dict[str, int],
              errors: list[LineError], first_lineno: int) -> int:
        n = 0
        for lineno, start, end, item in _scan_body(text, mult, first_lineno):
            n += 1
            if isinstance(item, Point):
                series = (item.measurement, item.tags)
                new = series not in self._slow_seen
                if new and len(self._slow_seen) <= self.sel.max_series_per_body:
                    self._slow_seen.add(series)
                h = self._head_for(item.measurement, item.tags, new_series=new)
                ts = now_ns if item.ts is None else item.ts
                if h.selected:
                    self._emit(h, item.fields, ts, out, rej)
                elif h.refused is not None:
                    rej[h.refused] = rej.get(h.refused, 0) + 1
            else:
                rej[item.reason] = rej.get(item.reason, 0) + 1
                if len(errors) < self.MAX_ERRORS_KEPT:
                    errors.append(LineError(lineno, item.reason, text[start:end].rstrip("\r"), item.message))
        return n


_MISSING = StreamKey("\x00missing")
_NO_LABELS: dict[str, str] = {}  # a tagset head's labels once its key holds them (never written)


_by_ts = operator.attrgetter("ts")


_TOO_BIG = 2**64
_NO_HI = 2**64  # no upper timestamp bound
def is_finite(x: float) -> bool:
    return math.isfinite(x)

