"""The payload of one JetStream message: the samples of one partition from one parsed body.

JSON, grouped by stream so a key and its field names are written once per message::

    {"v": 1, "s": [[key, [field, ...], [[ts, v0, v1, ...], ...]], ...]}

Missing values (NaN) are written as ``NaN`` (Python's JSON extension; ``null`` is read as NaN too). Routers have parsed and validated the
samples already; a scorer only decodes.
"""

from __future__ import annotations

import json
import math

from ..types import Sample, StreamKey

VERSION = 1
_KEYS: dict[str, StreamKey] = {}  # text -> parsed stream key, bounded (cleared past _KEYS_MAX)
_KEYS_MAX = 200_000


def encode(samples: list[Sample]) -> bytes:
    """Samples (any order; each stream's kept in order) -> one message body.

    >>> k = StreamKey.of("m", site="a")
    >>> s = [Sample(k, 1.0, ("t",), (2.5,)), Sample(k, 2.0, ("t",), (float("nan"),))]
    >>> out = decode(encode(s))
    >>> out[0] == s[0], out[1].ts, math.isnan(out[1].values[0])
    (True, 2.0, True)
    """
    groups: dict[tuple[StreamKey, tuple[str, ...]], list[list[float]]] = {}
    for s in samples:
        g = groups.get((s.key, s.fields))
        if g is None:
            g = groups[(s.key, s.fields)] = []
        g.append([s.ts, *s.values])
    body = {"v": VERSION, "s": [[str(k), list(f), rows] for (k, f), rows in groups.items()]}
    return json.dumps(body, separators=(",", ":"), allow_nan=True).encode()  # NaN: Python's JSON extension


def decode(data: bytes) -> list[Sample]:
    """One message body -> samples; raises ValueError on a body this version cannot read."""
    body = json.loads(data)
    if not isinstance(body, dict) or body.get("v") != VERSION:
        raise ValueError(f"unknown sample message version {body.get('v') if isinstance(body, dict) else None!r}")
    out: list[Sample] = []
    keys = _KEYS
    if len(keys) > _KEYS_MAX:
        keys.clear()
    for ks, fields, rows in body["s"]:
        key = keys.get(ks)
        if key is None:
            key = keys[ks] = StreamKey.parse(ks)  # parsing a key costs more than its samples
        ft = tuple(fields)
        for row in rows:
            vals = tuple(row[1:])
            if None in vals:
                vals = tuple(math.nan if v is None else v for v in vals)
            out.append(Sample(key, float(row[0]), ft, vals))
    return out
