"""MQTT payloads -> samples: line protocol (the one codec) or JSON picked by paths, plus topic labels.

Every message goes through :meth:`PayloadDecoder.decode`, which never raises on
content: what it cannot use is counted under a reason (:data:`REASONS`, or the line
protocol codec's ``lp_*`` reasons) and the rest of the message is kept.

>>> from sentinel.config.source_mqtt import MQTTSourceConfig
>>> from sentinel.sources.mqtt.source import selection_from
>>> from sentinel.sources.selector import StreamSelector
>>> cfg = MQTTSourceConfig(format="json", topic_prefix="plant", key_from_topic=["site", "machine"],
...                        json={"fields": {"temp": "m.t"}, "timestamp_path": "ts"})
>>> d = PayloadDecoder(cfg, StreamSelector(selection_from(cfg)))
>>> out, rej = [], {}
>>> d.decode("plant/s1/m7", b'{"ts": 1700000000, "m": {"t": 21.5}}', 0.0, out, rej)
>>> str(out[0].key), out[0].ts, out[0].values, rej
('mqtt,machine=m7,site=s1', 1700000000.0, (21.5,), {})
>>> d.decode("plant/s1/m7", b'{"m": {"t": "hot"}, "ts": 1}', 0.0, out, rej); rej
{'mqtt_non_numeric': 1}
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

from ...config.source_mqtt import MQTTSourceConfig
from ...lineprotocol import _I64_MAX, FieldValue, parse
from ...types import Sample
from ..selector import StreamSelector
from .topics import TopicKey

#: Rejection reasons of the MQTT source (besides the line protocol codec's ``lp_*``).
REASONS = (
    "mqtt_oversize",         # payload larger than max_payload_bytes
    "mqtt_bad_json",         # not JSON, or not an object / array of objects
    "mqtt_non_numeric",      # a field whose value is not a finite number
    "mqtt_no_fields",        # a point without any numeric field
    "mqtt_too_many_fields",  # more than max_fields fields in one point
    "mqtt_bad_timestamp",    # the timestamp path is missing or unreadable
    "mqtt_topic",            # the topic lacks the prefix or a segment key_from_topic names
    "mqtt_overflow",         # more than max_pending messages waiting for the runtime
)

_UNIT_NS = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
_MAX_TAG_LEN = 256
_MISSING = object()


def lookup(doc: Any, path: str) -> Any:
    """The value at a dotted path (keys, and list indices as numbers); ``_MISSING`` if absent.

    >>> lookup({"a": {"b": [1, {"c": 2}]}}, "a.b.1.c"), lookup({"a": 1}, "a.x") is _MISSING
    (2, True)
    """
    cur = doc
    for part in path.split("."):
        if isinstance(cur, dict):
            if part not in cur:
                return _MISSING
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return _MISSING
    return cur


def number(v: Any) -> float | None:
    """A finite float from a JSON number or numeric string; None otherwise (booleans are not numbers)."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        f = float(v)
    elif isinstance(v, str) and len(v) <= 64:
        try:
            f = float(v)
        except ValueError:
            return None
    else:
        return None
    return f if math.isfinite(f) else None


def timestamp_ns(v: Any, unit: str) -> int | None:
    """Nanoseconds since the epoch from a number in ``unit`` or an ISO 8601 string; None if unreadable.

    >>> timestamp_ns(1.5, "s"), timestamp_ns("2023-11-14T22:13:20Z", "s"), timestamp_ns("soon", "s")
    (1500000000, 1700000000000000000, None)
    """
    f = number(v)
    if f is not None:
        ns = int(f * _UNIT_NS[unit])
    elif isinstance(v, str) and len(v) <= 64:
        try:
            dt = datetime.fromisoformat(v)
        except ValueError:
            return None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        ns = int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000
    else:
        return None
    return ns if 0 <= ns <= _I64_MAX else None


def _count(rej: dict[str, int], reason: str, n: int = 1) -> None:
    rej[reason] = rej.get(reason, 0) + n


class PayloadDecoder:
    """Decodes one source's messages into samples through its shared :class:`StreamSelector`."""

    def __init__(self, cfg: MQTTSourceConfig, selector: StreamSelector):
        self.cfg = cfg
        self.selector = selector
        self.topic_key = TopicKey(cfg.topic_prefix, cfg.key_from_topic)

    def decode(self, topic: str, payload: bytes, now: float, out: list[Sample], rej: dict[str, int]) -> None:
        """Append the message's samples to ``out`` and count what was rejected in ``rej``."""
        if len(payload) > self.cfg.max_payload_bytes:
            _count(rej, "mqtt_oversize")
            return
        labels = self.topic_key.labels(topic)
        if labels is None:
            _count(rej, "mqtt_topic")
            return
        now_ns = int(now * 1e9)
        if self.cfg.format == "json":
            self._json(payload, labels, now_ns, out, rej)
        else:
            self._line_protocol(payload, labels, now_ns, out, rej)

    def _add(self, measurement: str, tags: dict[str, str], labels: tuple[tuple[str, str], ...],
             fields: dict[str, FieldValue], ts_ns: int, out: list[Sample], rej: dict[str, int],
             now_ns: int = 0) -> None:
        sel = self.selector.sel  # streams.max_future / max_age against the receipt time (D5)
        if now_ns > 0 and sel.max_future_ns > 0 and ts_ns > now_ns + sel.max_future_ns:
            _count(rej, "future")
            return
        if now_ns > 0 and sel.max_age_ns > 0 and ts_ns < now_ns - sel.max_age_ns:
            _count(rej, "too_old")
            return
        if labels:
            tags = {**tags, **dict(labels)}
        self.selector.add_point(measurement, tags.items(), fields, ts_ns, out, rej)

    # -- line protocol -----------------------------------------------------------------
    def _line_protocol(self, payload: bytes, labels: tuple[tuple[str, str], ...], now_ns: int,
                       out: list[Sample], rej: dict[str, int]) -> None:
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:  # reject the lines that are not UTF-8, never turn them into U+FFFD
            good = []
            for line in payload.split(b"\n"):
                try:
                    good.append(line.decode("utf-8"))
                except UnicodeDecodeError:
                    _count(rej, "invalid_utf8")
            text = "\n".join(good)
        points, errors = parse(text, self.cfg.precision)
        for e in errors:
            _count(rej, e.reason)
        for p in points:
            if not any(type(v) is float or type(v) is int for v in p.fields.values()):
                _count(rej, "mqtt_non_numeric")
                continue
            self._add(p.measurement, dict(p.tags), labels, p.fields, now_ns if p.ts is None else p.ts, out, rej,
                      now_ns)

    # -- JSON --------------------------------------------------------------------------
    def _json(self, payload: bytes, labels: tuple[tuple[str, str], ...], now_ns: int,
              out: list[Sample], rej: dict[str, int]) -> None:
        try:
            doc = json.loads(payload)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            _count(rej, "mqtt_bad_json")
            return
        for item in doc if isinstance(doc, list) else [doc]:
            if not isinstance(item, dict):
                _count(rej, "mqtt_bad_json")
                continue
            self._json_point(item, labels, now_ns, out, rej)

    def _json_point(self, item: dict, labels: tuple[tuple[str, str], ...], now_ns: int,
                    out: list[Sample], rej: dict[str, int]) -> None:
        jc = self.cfg.json_payload
        fields: dict[str, FieldValue] = {}
        bad = 0
        if jc.fields:
            for name, path in jc.fields.items():
                v = lookup(item, path)
                if v is _MISSING:
                    continue
                f = number(v)
                if f is None:
                    bad += 1
                else:
                    fields[name] = f
        else:
            for k, v in item.items():
                if isinstance(v, int | float) and not isinstance(v, bool):
                    if math.isfinite(v):
                        fields[k] = float(v)
                    else:
                        bad += 1
        if bad:
            _count(rej, "mqtt_non_numeric", bad)
        if len(fields) > self.cfg.max_fields:
            _count(rej, "mqtt_too_many_fields")
            return
        if not fields:
            if not bad:
                _count(rej, "mqtt_no_fields")
            return
        ts = now_ns
        if jc.timestamp_path is not None:
            got = timestamp_ns(lookup(item, jc.timestamp_path), jc.timestamp_unit)
            if got is None:
                _count(rej, "mqtt_bad_timestamp")
                return
            ts = got
        tags: dict[str, str] = {}
        for name, path in jc.tags.items():
            v = lookup(item, path)
            if isinstance(v, str | int | float | bool):
                s = str(v)
                if 0 < len(s) <= _MAX_TAG_LEN:
                    tags[name] = s
        measurement = jc.measurement
        if jc.measurement_path is not None:
            m = lookup(item, jc.measurement_path)
            if isinstance(m, str) and 0 < len(m) <= _MAX_TAG_LEN:
                measurement = m
        self._add(measurement, tags, labels, fields, ts, out, rej, now_ns)
