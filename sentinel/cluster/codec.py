"""The payload of one JetStream message: the samples of one partition from one parsed body.

JSON, grouped by stream so a key and its field names are written once per message::

    {"v": 1, "s": [[key, [field, ...], [[ts, v0, v1, ...], ...]], ...]}

Missing values (NaN) are written as ``null``. Routers have parsed and validated the
samples already; a scorer only decodes.
"""

from __future__ import annotations

import json
import math

from ..types import Sample, StreamKey

VERSION = 1


def encode(samples: list[Sample]) -> bytes:
    """Samples (any order; each stream's kept in order) -> one message body.

    >>> k = StreamKey.of("m", site="a")
    >>> s = [Sample(k, 1.0, ("t",), (2.5,)), Sample(k, 2.0, ("t",), (float("nan"),))]
    >>> out = decode(encode(s))
    >>> out[0] == s[0], out[1].ts, math.isnan(out[1].values[0])
    (True, 2.0, True)
    """
    groups: dict[tuple[StreamKey, tuple[str, ...]], list[list[float | None]]] = {}
    for s in samples:
        groups.setdefault((s.key, s.fields), []).append([s.ts, *(None if v != v else v for v in s.values)])
    body = {"v": VERSION, "s": [[str(k), list(f), rows] for (k, f), rows in groups.items()]}
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()


def decode(data: bytes) -> list[Sample]:
    """One message body -> samples; raises ValueError on a body this version cannot read."""
    body = json.loads(data)
    if not isinstance(body, dict) or body.get("v") != VERSION:
        raise ValueError(f"unknown sample message version {body.get('v') if isinstance(body, dict) else None!r}")
    out: list[Sample] = []
    keys: dict[str, StreamKey] = {}
    for ks, fields, rows in body["s"]:
        key = keys.get(ks) or keys.setdefault(ks, StreamKey.parse(ks))
        ft = tuple(fields)
        for row in rows:
            vals = tuple(row[1:])
            if None in vals:
                vals = tuple(math.nan if v is None else v for v in vals)
            out.append(Sample(key, float(row[0]), ft, vals))
    return out
