"""Flux (InfluxDB 2.x): the window query, annotated-CSV parsing and the async client."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import aiohttp

from ...config.source_influxdb import InfluxDBSourceConfig
from ...errors import SourceError, SourceUnavailable
from ...lineprotocol import FieldValue
from .query import _NS, SeriesRows


def flux_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("${", "\\${") + '"'


def rfc3339_to_ns(s: str) -> int:
    """``2023-11-14T22:13:20.123456789Z`` (or with an offset) -> integer nanoseconds."""
    s = s.strip()
    frac_ns = 0
    dot = s.find(".")
    if dot >= 0:
        end = dot + 1
        while end < len(s) and s[end].isdigit():
            end += 1
        digits = s[dot + 1:end]
        frac_ns = int((digits + "000000000")[:9]) if digits else 0
        s = s[:dot] + s[end:]
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    dt = datetime.fromisoformat(s)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp()) * _NS + frac_ns


def ns_to_rfc3339(ns: int) -> str:
    sec, frac = divmod(ns, _NS)
    return datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


def flux_window(cfg: InfluxDBSourceConfig, after_ns: int, upto_ns: int, limit: int,
                measurements: list[str] | None = None) -> str:
    """Flux for the window ``(after, upto]``: range start is inclusive, stop exclusive."""
    meas = measurements if measurements is not None else cfg.measurements
    lines = [
        f"from(bucket: {flux_str(cfg.effective_bucket)})",
        f"  |> range(start: time(v: {after_ns + 1}), stop: time(v: {upto_ns + 1}))",
    ]
    if meas:
        lines.append("  |> filter(fn: (r) => " + " or ".join(f"r._measurement == {flux_str(m)}" for m in meas) + ")")
    for k, vals in sorted(cfg.tags.items()):
        lines.append("  |> filter(fn: (r) => " + " or ".join(f"r[{flux_str(k)}] == {flux_str(v)}" for v in sorted(vals))
                     + ")")
    if cfg.fields:
        lines.append("  |> filter(fn: (r) => " + " or ".join(f"r._field == {flux_str(f)}" for f in cfg.fields) + ")")
    lines.append('  |> sort(columns: ["_time"])')
    lines.append(f"  |> limit(n: {limit})")
    return "\n".join(lines)


_FLUX_META = frozenset({"result", "table", "_start", "_stop", "_time", "_value", "_field", "_measurement", ""})


def _flux_value(v: str, dtype: str) -> FieldValue | None:
    if v == "":
        return None
    if dtype == "double":
        return float(v)
    if dtype in ("long", "unsignedLong"):
        return int(v)
    if dtype == "boolean":
        return v == "true"
    return v


def parse_annotated_csv(text: str) -> list[SeriesRows]:
    """Flux annotated CSV (``#datatype,#group,#default`` + header, tables split by ``table``) -> tables.

    Raises SourceError for an error table (``error,reference`` header).
    """
    tables: dict[tuple[int, str], SeriesRows] = {}
    dtypes: list[str] = []
    header: list[str] | None = None
    for row in csv.reader(io.StringIO(text)):
        if not row or all(c == "" for c in row):
            header = None
            continue
        if row[0].startswith("#"):
            if row[0] == "#datatype":
                dtypes = row
            header = None
            continue
        if header is None:
            header = row
            if "error" in header and "_time" not in header:
                header = ["__error__", *header]
            continue
        if header[0] == "__error__":
            idx = header.index("error") - 1
            raise SourceError(f"Flux error: {row[idx] if idx < len(row) else row}")
        rec = dict(zip(header, row, strict=False))
        if "_time" not in rec or "_value" not in rec:
            continue
        vt = dtypes[header.index("_value")] if len(dtypes) > header.index("_value") else "double"
        val = _flux_value(rec["_value"], vt)
        if val is None:
            continue
        tkey = (int(rec.get("table") or 0), rec.get("result", ""))
        s = tables.get(tkey)
        if s is None:
            tags = {k: v for k, v in rec.items() if k not in _FLUX_META}
            s = tables[tkey] = SeriesRows(rec.get("_measurement", ""), tags)
        s.rows.append((rfc3339_to_ns(rec["_time"]), {rec.get("_field", "_value"): val}))
    return list(tables.values())


class FluxClient:
    """Flux queries through ``influxdb-client``'s async API, asking for RFC3339Nano times."""

    def __init__(self, cfg: InfluxDBSourceConfig):
        from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync

        self.cfg = cfg
        self.client = InfluxDBClientAsync(url=cfg.url, token=cfg.token or "", org=cfg.org or None,  # type: ignore[arg-type]
                                          timeout=int(cfg.query_timeout * 1000))

    async def query(self, flux: str) -> list[SeriesRows]:
        from influxdb_client import Dialect
        from influxdb_client.rest import ApiException

        dialect = Dialect(header=True, delimiter=",", comment_prefix="#",
                          annotations=["datatype", "group", "default"], date_time_format="RFC3339Nano")
        try:
            text = await self.client.query_api().query_raw(flux, org=self.cfg.org or None, dialect=dialect)
        except ApiException as e:
            if e.status is not None and e.status >= 500:
                raise SourceUnavailable(f"Flux query: HTTP {e.status}: {e.body!s:.200}") from None
            raise SourceError(f"Flux query: HTTP {e.status}: {e.body!s:.200}") from None
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            raise SourceUnavailable(f"Flux query: {type(e).__name__}: {e}") from None
        return parse_annotated_csv(text)

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except Exception:
            return False

    async def close(self) -> None:
        await self.client.close()
