"""The InfluxDB source: subscription push (1.x), InfluxQL and Flux polling, history, write.

Cursor (``SourceBatch.cursor``): ``{"t": <ns>}`` — every selected point with
``time <= t`` has been handed over. A source rebuilt from ``resume`` continues
with ``time > t``: no gap, no duplicate.

* **Polling** (``poll_influxql``, ``poll_flux``) reads the window ``(t, now - lateness]``,
  so a point that reaches the database up to ``lateness`` after its timestamp is
  still read, exactly once. Large catch-ups are paged: each query returns at most
  ``page_size`` rows per series; the page ends at the earliest last-row time among
  the series that hit the limit (a series has at most one point per timestamp, so
  nothing at or before that time is missing), and the next page starts after it.
* **Subscription** (1.x): Sentinel creates ``CREATE SUBSCRIPTION`` towards its own
  ``/write`` and InfluxDB pushes every write. After a start or an outage it
  *backfills*: pushes are held while an InfluxQL catch-up reads ``time > t``; the
  held pushes are then released minus the overlap (per stream, a pushed sample at or
  before the last backfilled one is a duplicate). Backfill repeats once the first push
  has arrived, so writes made before the subscription took effect are read too.
* **Receiver**: only pushed line protocol (Telegraf etc.); no database is read.

Connection loss is retried with :func:`~sentinel.sources.base.backoff_delays`.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web

from ..config.schema import StreamsConfig
from ..config.source_influxdb import InfluxDBSourceConfig
from ..errors import SourceError, SourceUnavailable
from ..metrics import Metrics
from ..types import Sample, SourceBatch, StreamKey
from .base import Emit, backoff_delays
from .lineprotocol import FieldValue, Selection, StreamSelector, format_line
from .receiver import LineProtocolReceiver, Pushed

log = logging.getLogger(__name__)

_NS = 1_000_000_000
_FAR_FUTURE_NS = 2**63 - 2


# =========================================================================== helpers


def selection_from(cfg: InfluxDBSourceConfig, streams: StreamsConfig | None = None) -> Selection:
    """The source's selection, with the input bounds of ``streams.*`` (defaults when None)."""
    b = streams or StreamsConfig()
    return Selection(
        max_fields=b.max_fields, max_key_length=b.max_key_length, max_tag_value_length=b.max_tag_value_length,
        max_series_per_body=b.max_series_per_body, max_refused_keys=b.max_refused_keys,
        max_future_ns=int(b.max_future * 1e9), max_age_ns=int(b.max_age * 1e9),
        measurements=frozenset(cfg.measurements),
        tags={k: frozenset(v) for k, v in cfg.tags.items()},
        ignore_tags=frozenset(cfg.ignore_tags),
        fields=tuple(cfg.fields),
        stream_per=cfg.stream_per,
        field_label=cfg.field_label,
        max_streams=cfg.max_streams,
    )


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


def quote_ident(s: str) -> str:
    """InfluxQL identifier: ``"name"`` with ``"`` and ``\\`` escaped."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_str(s: str) -> str:
    """InfluxQL string literal: ``'value'`` with ``'`` and ``\\`` escaped."""
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


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


# =========================================================================== InfluxQL over HTTP


class InfluxQLClient:
    """``/query``, ``/write`` and ``/ping`` of an InfluxDB 1.x (or a v1-compatible 2.x/3.x API).

    Connection errors and 5xx become :class:`SourceUnavailable`; query errors :class:`SourceError`.
    """

    def __init__(self, cfg: InfluxDBSourceConfig, session: aiohttp.ClientSession, url: str | None = None):
        self.cfg = cfg
        self.session = session
        self.url = (url or cfg.url).rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=cfg.query_timeout)

    def _auth(self) -> tuple[dict[str, str], dict[str, str]]:
        headers: dict[str, str] = {}
        params: dict[str, str] = {}
        if self.cfg.token:
            headers["Authorization"] = f"Token {self.cfg.token}"
        if self.cfg.username is not None:
            params["u"] = self.cfg.username
            params["p"] = self.cfg.password or ""
        return headers, params

    async def ping(self) -> bool:
        try:
            async with self.session.get(f"{self.url}/ping", timeout=aiohttp.ClientTimeout(total=5)) as r:
                return r.status < 500
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False

    async def query(self, q: str, db: str | None = None) -> list[dict[str, Any]]:
        """Run statements; returns ``results``. Raises SourceError on a statement error
        (except ``database not found``, which yields an empty result)."""
        headers, params = self._auth()
        params.update({"q": q, "epoch": "ns"})
        if db:
            params["db"] = db
        try:
            async with self.session.post(f"{self.url}/query", data=params, headers=headers,
                                         timeout=self.timeout) as r:
                text = await r.text()
                status = r.status
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            raise SourceUnavailable(f"{self.url}: {type(e).__name__}: {e}") from None
        if status >= 500:
            raise SourceUnavailable(f"{self.url}/query: HTTP {status}: {text[:200]}")
        try:
            body = json.loads(text) if text else {}
        except ValueError:
            raise SourceError(f"{self.url}/query: HTTP {status}: not JSON: {text[:200]}") from None
        if status >= 400 or "error" in body:
            raise SourceError(f"{self.url}/query: HTTP {status}: {body.get('error', text[:200])}")
        results = body.get("results", [])
        for res in results:
            err = res.get("error")
            if err and not str(err).startswith("database not found"):
                raise SourceError(f"InfluxQL error: {err} (query: {q[:200]})")
        return results

    async def write(self, lines: list[str], *, db: str, rp: str = "", api: str = "v1", org: str = "") -> None:
        headers, params = self._auth()
        body = ("\n".join(lines) + "\n").encode()
        if api == "v2":
            url = f"{self.url}/api/v2/write"
            params = {"bucket": db, "org": org, "precision": "ns"}
        else:
            url = f"{self.url}/write"
            params.update({"db": db, "precision": "ns"})
            if rp:
                params["rp"] = rp
        try:
            async with self.session.post(url, params=params, data=body, headers=headers,
                                         timeout=self.timeout) as r:
                if r.status >= 500:
                    raise SourceUnavailable(f"{url}: HTTP {r.status}: {(await r.text())[:200]}")
                if r.status >= 300:
                    raise SourceError(f"{url}: HTTP {r.status}: {(await r.text())[:200]}")
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            raise SourceUnavailable(f"{url}: {type(e).__name__}: {e}") from None


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


# =========================================================================== Flux (2.x)


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


# =========================================================================== the source


class InfluxDBSource:
    """Follows one InfluxDB database (see the module docstring for the modes and the cursor)."""

    def __init__(self, cfg: InfluxDBSourceConfig, *, metrics: Metrics, clock: Callable[[], float] = time.time,
                 resume: dict | None = None, rng: random.Random | None = None, streams: StreamsConfig | None = None):
        self.cfg = cfg
        self.name = cfg.name
        self.metrics = metrics
        self.clock = clock
        self._rng = rng or random.Random()
        self.selector = StreamSelector(selection_from(cfg, streams), on_refused=lambda _k: metrics.streams_refused.inc())
        self._exclude = own_writeback_measurement(cfg)
        t = (resume or {}).get("t")
        self._t: int | None = int(t) if t is not None else None
        self._stop = asyncio.Event()
        self._done: asyncio.Event | None = None
        self._connected = cfg.mode == "receiver"
        self._session: aiohttp.ClientSession | None = None
        self._flux: FluxClient | None = None
        self._queue: asyncio.Queue[Pushed] = asyncio.Queue(maxsize=cfg.receiver.max_pending_batches)
        self.stats = {"deduplicated": 0, "push_buffer_dropped": 0, "backfill_rounds": 0, "pages": 0,
                      "unavailable": 0}
        self._buffer: list[Pushed] = []
        self._held = 0
        self._emitted: dict[StreamKey, float] = {}
        self.receiver: LineProtocolReceiver | None = None
        if cfg.mode in ("subscription", "receiver") and cfg.receiver.enabled:
            dbs = [cfg.database] if cfg.mode == "subscription" else list(cfg.receiver.databases)
            self.receiver = LineProtocolReceiver(cfg.receiver, self.selector, self._deliver, databases=dbs,
                                                 clock=clock, name=cfg.name)

    # ------------------------------------------------------------------ protocol
    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def cursor(self) -> dict | None:
        return None if self._t is None else {"t": self._t}

    def http_routes(self) -> list[web.RouteDef]:
        """``POST /write`` and ``/api/v2/write`` for the subscription and receiver modes."""
        return self.receiver.routes() if self.receiver is not None else []

    async def run(self, emit: Emit) -> None:
        self._done = asyncio.Event()
        try:
            if self.cfg.mode in ("poll_influxql", "poll_flux"):
                await self._run_poll(emit)
            elif self.cfg.mode == "subscription":
                await self._run_subscription(emit)
            else:
                await self._run_receiver(emit)
        finally:
            if self._stop.is_set() and self.cfg.mode == "subscription" and self.cfg.remove_subscription_on_shutdown:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.drop_subscription(), 5.0)
            self._set_connected(False)
            await self._close()
            self._done.set()

    async def stop(self) -> None:
        self._stop.set()
        if self._done is not None:
            await self._done.wait()
        else:
            await self._close()

    async def history(self, keys: list[StreamKey] | None, since: float, until: float) -> list[Sample]:
        """Samples in ``[since, until)`` read from the database (paged); [] in receiver mode or if disabled."""
        if not self.cfg.history or self.cfg.mode == "receiver" or until <= since:
            return []
        want = set(keys) if keys is not None else None
        meas = sorted({k.measurement for k in keys}) if keys is not None else None
        if meas is not None and self.cfg.measurements:
            meas = [m for m in meas if m in self.cfg.measurements]
        if meas == []:
            return []
        t, upper = int(since * _NS) - 1, int(until * _NS) - 1
        out: list[Sample] = []
        for _ in range(1_000_000):
            samples, _rej, end, _cut, _newest = await self._page(t, upper, meas)
            out.extend(s for s in samples if want is None or s.key in want)
            if end >= upper or end <= t:
                break
            t = end
        out.sort(key=lambda s: s.ts)
        return out

    # ------------------------------------------------------------------ plumbing
    def _set_connected(self, up: bool) -> None:
        self._connected = up or self.cfg.mode == "receiver"
        self.metrics.source_up.labels(self.name).set(1 if self._connected else 0)

    def _http(self) -> InfluxQLClient:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return InfluxQLClient(self.cfg, self._session)

    async def _close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._flux is not None:
            await self._flux.close()
            self._flux = None

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=max(0.0, seconds))

    def _delays(self):
        return backoff_delays(self.cfg.backoff_initial, self.cfg.backoff_max, rng=self._rng)

    def _now_ns(self) -> int:
        return int(self.clock() * _NS)

    def _start_t(self) -> int:
        if self._t is None:
            self._t = self._now_ns() - int((self.cfg.lateness + self.cfg.start_from) * _NS)
        return self._t

    def _batch(self, samples: list[Sample], rejected: dict[str, int] | None = None) -> SourceBatch:
        return SourceBatch(self.name, samples, self.cursor, self.clock(), dict(rejected or {}))

    async def _page(self, after: int, upto: int, measurements: list[str] | None = None
                    ) -> tuple[list[Sample], dict[str, int], int, bool, int]:
        """One page of ``(after, upto]``: (samples, rejected, page end, page was cut, newest point's ns)."""
        n = self.cfg.page_size
        if self.cfg.mode == "poll_flux":
            if self._flux is None:
                self._flux = FluxClient(self.cfg)
            series = await self._flux.query(flux_window(self.cfg, after, upto, n, measurements))
        else:
            q = influxql_window(self.cfg, after, upto, n, measurements)
            series = series_from_influxql(await self._http().query(q, self.cfg.database))
        end = page_end(series, n, upto)
        samples: list[Sample] = []
        rejected: dict[str, int] = {}
        newest = after
        for ts, m, tags, fv in merge_points(series, end):
            if m != self._exclude:
                self.selector.add_point(m, tags, fv, ts, samples, rejected)
            newest = ts
        self.stats["pages"] += 1
        return samples, rejected, end, end < upto, newest

    # ------------------------------------------------------------------ polling
    async def _run_poll(self, emit: Emit) -> None:
        delays = None
        while not self._stop.is_set():
            try:
                more = await self.poll_once(emit)
                self._set_connected(True)
                delays = None
                if not more:
                    await self._sleep(self.cfg.poll_interval)
            except SourceUnavailable as e:
                self.stats["unavailable"] += 1
                self._set_connected(False)
                delays = delays or self._delays()
                d = next(delays)
                log.warning("%s: %s; retrying in %.1fs", self.name, e, d)
                await self._sleep(d)
            except Exception as e:  # SourceError, or a bug: never kill the daemon, retry slowly
                delays = delays or self._delays()
                d = max(next(delays), self.cfg.poll_interval)
                log.error("%s: %s; retrying in %.1fs", self.name, e, d, exc_info=not isinstance(e, SourceError))
                await self._sleep(d)

    async def poll_once(self, emit: Emit) -> bool:
        """Read one page after the cursor; emit it; return True when more pages are waiting."""
        t = self._start_t()
        upper = self._now_ns() - int(self.cfg.lateness * _NS)
        if upper <= t:
            return False
        samples, rejected, end, cut, _newest = await self._page(t, upper)
        self._t = end
        if samples or rejected:
            await emit(self._batch(samples, rejected))
        return cut

    # ------------------------------------------------------------------ push: receiver
    async def _deliver(self, p: Pushed) -> bool:
        if self.cfg.mode == "subscription" and p.retention_policy not in ("", self.cfg.retention_policy):
            return True  # another retention policy of the same database: not ours
        if self._exclude is not None and any(s.key.measurement == self._exclude for s in p.outcome.samples):
            p.outcome.samples = [s for s in p.outcome.samples if s.key.measurement != self._exclude]
            if not p.outcome.samples and not p.outcome.rejected:
                return True  # only our own write-back: nothing to score
        try:
            await asyncio.wait_for(self._queue.put(p), timeout=10.0)
        except TimeoutError:
            return False
        return True

    async def _next_push(self, timeout: float) -> Pushed | None:
        if not self._queue.empty():
            return self._queue.get_nowait()
        stop = asyncio.ensure_future(self._stop.wait())
        get = asyncio.ensure_future(self._queue.get())
        try:
            done, _ = await asyncio.wait({stop, get}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not get.done():
                get.cancel()
        if get in done and not get.cancelled():
            return get.result()
        return None

    async def _emit_push(self, p: Pushed, emit: Emit) -> None:
        o = p.outcome
        if o.max_ts_ns > (self._t or -1):
            self._t = o.max_ts_ns
        if self.cfg.mode != "subscription":  # no catch-up, no overlap: the engine counts late points
            if o.samples or o.rejected:
                await emit(SourceBatch(self.name, o.samples, self.cursor, p.received_at, dict(o.rejected),
                                       wal_position=p.wal_position))
            return
        fresh = []
        for smp in o.samples:  # drop what a catch-up already handed over
            lt = self._emitted.get(smp.key)
            if lt is not None and smp.ts <= lt:
                self.stats["deduplicated"] += 1
                continue
            self._emitted[smp.key] = smp.ts
            fresh.append(smp)
        if fresh or o.rejected:
            await emit(SourceBatch(self.name, fresh, self.cursor, p.received_at, dict(o.rejected),
                                   wal_position=p.wal_position))

    async def _run_receiver(self, emit: Emit) -> None:
        self._set_connected(True)
        while not self._stop.is_set():
            p = await self._next_push(1.0)
            if p is not None:
                await self._emit_push(p, emit)

    # ------------------------------------------------------------------ push: subscription
    def _destination(self) -> str:
        dest = self.cfg.subscription_destination
        if not dest:
            raise SourceError(f"{self.name}: subscription_destination is not set (the runtime sets it from "
                              "server.listen)")
        return dest.rstrip("/")

    async def ensure_subscription(self) -> None:
        """Create the subscription if missing (or pointing elsewhere); idempotent."""
        http = self._http()
        cfg = self.cfg
        dest = self._destination()
        res = await http.query("SHOW SUBSCRIPTIONS")
        existing: list[str] | None = None
        for r in res:
            for s in r.get("series", []) or []:
                if s.get("name") != cfg.database:
                    continue
                cols = s.get("columns", [])
                for row in s.get("values", []) or []:
                    rec = dict(zip(cols, row, strict=False))
                    if rec.get("retention_policy") == cfg.retention_policy and rec.get("name") == cfg.subscription_name:
                        existing = list(rec.get("destinations") or [])
        on = f"{quote_ident(cfg.database)}.{quote_ident(cfg.retention_policy)}"
        if existing is not None:
            if [d.rstrip("/") for d in existing] == [dest]:
                return
            await http.query(f"DROP SUBSCRIPTION {quote_ident(cfg.subscription_name)} ON {on}")
        await http.query(f"CREATE DATABASE {quote_ident(cfg.database)}")
        await http.query(f"CREATE SUBSCRIPTION {quote_ident(cfg.subscription_name)} ON {on} "
                         f"DESTINATIONS ALL {quote_str(dest)}")
        log.info("%s: created subscription %s on %s -> %s", self.name, cfg.subscription_name, on, dest)

    async def drop_subscription(self) -> None:
        cfg = self.cfg
        on = f"{quote_ident(cfg.database)}.{quote_ident(cfg.retention_policy)}"
        with contextlib.suppress(SourceError):
            await self._http().query(f"DROP SUBSCRIPTION {quote_ident(cfg.subscription_name)} ON {on}")

    async def _run_subscription(self, emit: Emit) -> None:
        need_backfill, live, delays = True, False, None
        while not self._stop.is_set():
            try:
                if need_backfill:
                    await self.ensure_subscription()
                    live = await self._backfill(emit)
                    need_backfill, delays = False, None
                    self._set_connected(True)
                p = await self._next_push(self.cfg.poll_interval)
                if p is None:
                    if not await self._http().ping():
                        raise SourceUnavailable(f"{self.cfg.url}: ping failed")
                    # No push yet since the last catch-up: keep catching up by polling, so data
                    # flows even if pushes never arrive (a subscription InfluxDB cannot deliver).
                    need_backfill = not live
                elif live:
                    await self._emit_push(p, emit)
                else:
                    # First push after a backfill: writes that predate the subscription taking
                    # effect are now surely in the database. Read them, then go live.
                    self._hold(p)
                    need_backfill = True
            except SourceUnavailable as e:
                self.stats["unavailable"] += 1
                self._set_connected(False)
                need_backfill, live = True, False
                delays = delays or self._delays()
                d = next(delays)
                log.warning("%s: %s; retrying in %.1fs", self.name, e, d)
                await self._sleep(d)
            except Exception as e:  # SourceError, or a bug: never kill the daemon, retry slowly
                need_backfill, live = True, False
                delays = delays or self._delays()
                d = max(next(delays), self.cfg.poll_interval)
                log.error("%s: %s; retrying in %.1fs", self.name, e, d, exc_info=not isinstance(e, SourceError))
                await self._sleep(d)

    def _hold(self, p: Pushed) -> None:
        n = len(p.outcome.samples)
        if self._held + n > self.cfg.receiver.push_buffer:
            self.stats["push_buffer_dropped"] += n
            return
        self._held += n
        self._buffer.append(p)

    async def _backfill(self, emit: Emit) -> bool:
        """Catch up ``time > t`` from the database while holding pushes; release them minus the overlap.

        Returns True when a push had arrived before the catch-up began (then every write
        before it is covered and the source can go live).
        """

        def drain_nowait() -> None:
            while not self._queue.empty():
                self._hold(self._queue.get_nowait())

        async def drainer() -> None:
            while True:
                self._hold(await self._queue.get())

        drain_nowait()
        saw_push = bool(self._buffer)
        self.stats["backfill_rounds"] += 1
        task = asyncio.create_task(drainer())
        # Per-stream newest timestamp handed over, kept across rounds: a push held after one round
        # may carry points an earlier round already read from the database.
        last = self._emitted
        try:
            t = self._start_t()
            while True:
                samples, rejected, end, cut, newest = await self._page(t, _FAR_FUTURE_NS)
                for s in samples:
                    last[s.key] = s.ts
                self._t = end if cut else max(t, newest)
                if samples or rejected:
                    await emit(self._batch(samples, rejected))
                if not cut:
                    break
                t = end
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        drain_nowait()
        # Release the held pushes, minus what the catch-up already handed over.
        merged: list[Sample] = []
        rejected_total: dict[str, int] = {}
        max_ns = self._t if self._t is not None else -1
        for p in self._buffer:
            for k, v in p.outcome.rejected.items():
                rejected_total[k] = rejected_total.get(k, 0) + v
            max_ns = max(max_ns, p.outcome.max_ts_ns)
            merged.extend(p.outcome.samples)
        self._buffer = []
        self._held = 0
        merged.sort(key=lambda s: s.ts)
        fresh = []
        for s in merged:
            lt = last.get(s.key)
            if lt is not None and s.ts <= lt:
                self.stats["deduplicated"] += 1
                continue
            last[s.key] = s.ts
            fresh.append(s)
        self._t = max_ns
        if fresh or rejected_total:
            await emit(self._batch(fresh, rejected_total))
        return saw_push


# =========================================================================== simulate


def samples_to_lines(samples: Iterable[Sample], field_label: str | None = None) -> list[str]:
    """Samples as line protocol (ns timestamps); NaN values are left out, all-NaN samples skipped.

    ``field_label``: a univariate per-field key's label naming the field, dropped from the tags.
    """
    lines = []
    for s in samples:
        fv: dict[str, FieldValue] = {f: float(v) for f, v in zip(s.fields, s.values, strict=False) if v == v}
        if not fv:
            continue
        tags = [(k, v) for k, v in s.key.labels if k != field_label]
        lines.append(format_line(s.key.measurement, tags, fv, round(s.ts * _NS)))
    return lines


async def write_samples(cfg: InfluxDBSourceConfig, samples: list[Sample], *, batch: int = 5000) -> None:
    """Write samples into the configured InfluxDB (``sentinel simulate``).

    1.x modes create the database if needed and write to ``/write``; ``poll_flux`` writes
    to ``/api/v2/write`` (bucket, org, token).
    """
    async with aiohttp.ClientSession() as session:
        http = InfluxQLClient(cfg, session)
        api = "v2" if cfg.mode == "poll_flux" else "v1"
        if api == "v1":
            await http.query(f"CREATE DATABASE {quote_ident(cfg.database)}")
        lines = samples_to_lines(samples)
        db = cfg.effective_bucket if api == "v2" else cfg.database
        for i in range(0, len(lines), batch):
            await http.write(lines[i:i + batch], db=db, rp=cfg.retention_policy if api == "v1" else "",
                             api=api, org=cfg.org)
