"""InfluxQL windows and paging: the queries a poll, a backfill and a history read run, and their rows.

See :mod:`sentinel.sources.influxdb.source` for the cursor and the paging rule.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ...clients.influxql import quote_ident, quote_str
from ...config.schema import StreamsConfig
from ...config.source_influxdb import InfluxDBSourceConfig
from ...lineprotocol import FieldValue
from ..selector import Selection

_NS = 1_000_000_000
_FAR_FUTURE_NS = 2**63 - 2


def selection_from(cfg: InfluxDBSourceConfig, streams: StreamsConfig | None = None) -> Selection:
    """The source's selection, with the input bounds of ``streams.*`` (defaults when None)."""
    return Selection.of(cfg, streams, cfg.fields)


def own_writeback_measurement(cfg: InfluxDBSourceConfig) -> str | None:
    """The write-back measurement when it lands in the database this source follows, else None.

    Sentinel's own scores must not come back as streams (in subscription mode InfluxDB
    pushes them to ``/write``; polling would read them): a feedback loop where scores of
    scores are written back forever. Listing the measurement in ``measurements`` opts in.
    """
    wb = cfg.write_back
    if not wb.enabled or wb.measurement in cfg.measurements:
        return None
    if (wb.url or cfg.url).rstrip("/") != cfg.url.rstrip("/"):
        return None
    if wb.api == "v2":
        same = (wb.bucket or cfg.effective_bucket) == cfg.effective_bucket
    else:
        same = (wb.database or cfg.database) == cfg.database
    return wb.measurement if same else None


@dataclass(slots=True)
class SeriesRows:
    """Rows of one series (InfluxQL) or one series-field table (Flux), in time order."""

    measurement: str
    tags: dict[str, str]
    rows: list[tuple[int, dict[str, FieldValue]]] = field(default_factory=list)


def page_end(series: list[SeriesRows], limit: int, upper: int) -> int:
    """The time up to which a page is complete (see module docstring); ``upper`` if no series was cut."""
    end = upper
    for s in series:
        if len(s.rows) >= limit:
            end = min(end, s.rows[-1][0])
    return end


def merge_points(series: Iterable[SeriesRows], until: int) -> list[tuple[int, str, tuple[tuple[str, str], ...],
                                                                         dict[str, FieldValue]]]:
    """Points with ``ts <= until``, one per (measurement, tag set, ts), fields merged, in time order."""
    merged: dict[tuple[str, tuple[tuple[str, str], ...], int], dict[str, FieldValue]] = {}
    for s in series:
        tags = tuple(sorted(s.tags.items()))
        for ts, fv in s.rows:
            if ts > until:
                break
            key = (s.measurement, tags, ts)
            got = merged.get(key)
            if got is None:
                merged[key] = dict(fv)
            else:
                got.update(fv)
    out = [(ts, m, tags, fv) for (m, tags, ts), fv in merged.items()]
    out.sort(key=lambda p: p[0])
    return out


def series_from_influxql(results: list[dict[str, Any]]) -> list[SeriesRows]:
    """``GROUP BY *`` results (``epoch=ns``) -> series; null and missing values dropped."""
    out: list[SeriesRows] = []
    for res in results:
        for s in res.get("series", []) or []:
            cols = s.get("columns", [])
            sr = SeriesRows(s.get("name", ""), dict(s.get("tags") or {}))
            for row in s.get("values", []) or []:
                ts = int(row[0])
                fv = {c: v for c, v in zip(cols[1:], row[1:], strict=False) if v is not None}
                sr.rows.append((ts, fv))
            out.append(sr)
    return out


def influxql_window(cfg: InfluxDBSourceConfig, after_ns: int, upto_ns: int | None, limit: int,
                    measurements: list[str] | None = None) -> str:
    """``SELECT * ... WHERE time > after AND time <= upto [tag filters] GROUP BY * ORDER BY time LIMIT n``."""
    meas = measurements if measurements is not None else cfg.measurements
    rp = quote_ident(cfg.retention_policy) + "." if cfg.retention_policy else ""
    src = ", ".join(f"{quote_ident(cfg.database)}.{rp}{quote_ident(m)}" for m in meas) if meas \
        else f"{quote_ident(cfg.database)}.{rp}/.*/"
    cond = [f"time > {after_ns}"]
    if upto_ns is not None:
        cond.append(f"time <= {upto_ns}")
    for k, vals in sorted(cfg.tags.items()):
        cond.append("(" + " OR ".join(f"{quote_ident(k)} = {quote_str(v)}" for v in sorted(vals)) + ")")
    return f"SELECT * FROM {src} WHERE {' AND '.join(cond)} GROUP BY * ORDER BY time ASC LIMIT {limit}"
