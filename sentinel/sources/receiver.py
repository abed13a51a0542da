"""HTTP line-protocol receiver: ``POST /write`` (InfluxDB v1) and ``POST /api/v2/write`` (v2).

Any agent that writes to InfluxDB (Telegraf, an InfluxDB 1.x subscription, client
libraries) can point at Sentinel instead. Behaviour follows InfluxDB's:

* v1 query parameters ``db`` (required), ``rp``, ``precision`` (n/ns/u/µ/us/ms/s/m/h),
  ``u``/``p`` credentials; v2 parameters ``bucket`` (required), ``org``, ``precision``
  (ns/us/ms/s).
* ``Content-Encoding: gzip`` bodies; the size limit applies to the decompressed body (413).
* Auth (when configured): ``Authorization: Token <t>`` / ``Bearer <t>``, basic auth, or
  ``u``/``p`` parameters; failure is 401. Under the web config's basic auth, either the web
  users' or this receiver's credentials pass (:mod:`sentinel.server.auth`).
* Success is 204. Malformed lines are rejected and counted per reason while the good
  lines of the same body are kept; the answer is then 400 with an InfluxDB-style
  ``{"error": "partial write: unable to parse '<line>': <reason> ..."}`` body.
* When the runtime cannot take more data in time the answer is 503 with
  ``Retry-After`` (Telegraf retries; nothing was scored. With a write-ahead log the body
  is already logged: a restart before a checkpoint covers it scores it then, and the
  retried copy is rejected by its streams as a duplicate: at least once, never lost).
* With a write-ahead log (``log``), a body with samples is appended to it before it is
  handed on, and the answer waits until the record is durable: a 2xx means it survives
  a ``kill -9``. Records are written and handed on in one order (a lock), so the log's
  order is the scoring order. A full log answers 503 with ``Retry-After``.
  :meth:`LineProtocolReceiver.replay` feeds logged records back through the same parse
  path on start.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from ..config.source_influxdb import InfluxDBReceiverConfig
from ..lineprotocol import PRECISION_NS
from ..server.auth import AUTHENTICATED
from ..state.ingestlog import IngestLog, IngestRecord
from ..state.wal import WalError, WalFull, WalPosition
from .parsepool import Parsed, ParsePool, Turns
from .selector import _NO_HI, ParseOutcome, Selection, StreamSelector

V2_PRECISIONS = frozenset({"ns", "us", "ms", "s"})


@dataclass(frozen=True, slots=True)
class Pushed:
    """One accepted body: where it was written to and what it held."""

    database: str
    retention_policy: str
    outcome: ParseOutcome
    received_at: float
    wal_position: WalPosition | None = None  # the record's end position in the write-ahead log


Deliver = Callable[[Pushed], Awaitable[bool]]
"""Hands a parsed body to the source; returns False when it could not be taken in time (-> 503)."""


def _eq(a: str, b: str) -> bool:
    """Constant-time comparison that takes any text (``hmac.compare_digest`` refuses non-ASCII str)."""
    return hmac.compare_digest(a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass"))


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    safe = "".join(c if " " <= c < "\x7f" else "?" for c in message[:500])
    h = {"X-Influxdb-Error": safe, "X-Influxdb-Version": "sentinel"}
    if headers:
        h.update(headers)
    return web.Response(status=status, text=json.dumps({"error": message}), content_type="application/json",
                        headers=h)


def time_bounds(sel: Selection, now_ns: int) -> tuple[int, int]:
    """``(lo, hi)`` ns of the ``max_age``/``max_future`` bounds, as :meth:`StreamSelector.parse_body` sets them."""
    hi = now_ns + sel.max_future_ns if now_ns > 0 and sel.max_future_ns > 0 else _NO_HI
    lo = now_ns - sel.max_age_ns if now_ns > 0 and sel.max_age_ns > 0 else -1
    return lo, hi


def pooled_outcome(selector: StreamSelector, parsed: Parsed) -> ParseOutcome | None:
    """A worker's columns as the selector's columnar path would have returned them; None: parse in-process."""
    bulk = selector._bulk
    if parsed.generation != bulk.generation:  # the table was replaced since: its series ids mean nothing
        return None
    cols = parsed.columns(bulk)
    return ParseOutcome(cols if cols is not None else [], dict(parsed.rejected), [], parsed.lines,
                        parsed.max_ts_ns if cols is not None else -1)


def gunzip(raw: bytes, limit: int) -> bytes | web.Response:
    """Inflate a gzip body (every member) to at most ``limit`` bytes, or the 400/413 answer.

    >>> import gzip
    >>> gunzip(gzip.compress(b"m v=1\\n") + gzip.compress(b"m v=2\\n"), 100)
    b'm v=1\\nm v=2\\n'
    >>> [gunzip(b, 100).status for b in (gzip.compress(b"m v=1\\n")[:-12], b"m v=1", gzip.compress(b"x" * 200))]
    [400, 400, 413]
    """
    out: list[bytes] = []
    total, rest = 0, raw
    while rest:
        if rest[:2] != b"\x1f\x8b":
            return _error(400, "invalid gzip body: not gzip" if not out else "invalid gzip body: data after its end")
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            data = d.decompress(rest, limit + 1 - total)  # >= 1: 0 would mean no limit
        except zlib.error as e:
            return _error(400, f"invalid gzip body: {e}")
        total += len(data)
        if total > limit or d.unconsumed_tail:
            return _error(413, "http: request body too large")
        if not d.eof:
            return _error(400, "invalid gzip body: truncated")
        out.append(data)
        rest = d.unused_data
    return b"".join(out)


class LineProtocolReceiver:
    """aiohttp handlers for the two write endpoints of one source.

    ``selector`` turns bodies into samples (shared with the source so streams and the
    ``max_streams`` bound are common to push and backfill); ``deliver`` gets every body
    that had at least one line (good or bad). ``databases``: accepted db/bucket names
    (empty = any).
    """

    def __init__(self, cfg: InfluxDBReceiverConfig, selector: StreamSelector, deliver: Deliver, *,
                 databases: list[str] | None = None, clock: Callable[[], float] = time.time,
                 log: IngestLog | None = None, name: str = "influxdb", retry_after: float = 5.0):
        self.cfg = cfg
        self.selector = selector
        self.deliver = deliver
        self.clock = clock
        self.log = log  # the write-ahead log (None: a write is acknowledged once handed on)
        self.name = name  # the source's name, stored with each logged record
        self.retry_after = retry_after
        self._order = asyncio.Lock()
        self._turns = Turns()  # with ingest workers: the order bodies were read in
        self.pool: ParsePool | None = None
        self._channel = 0
        self.databases = frozenset(databases if databases is not None else cfg.databases)

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/write", self.handle_v1), web.post("/api/v2/write", self.handle_v2)]

    # ---------------------------------------------------------------- auth
    @property
    def has_credentials(self) -> bool:
        """A ``token`` or ``username`` is configured (an empty ``${VAR:-}`` token means none)."""
        return bool(self.cfg.token) or self.cfg.username is not None

    def _authorized(self, request: web.Request) -> bool:
        if request.get(AUTHENTICATED):  # the server's middleware let it through on a credential (D11)
            return True
        return not self.has_credentials or self.credential_ok(request)

    def credential_ok(self, request: web.Request) -> bool:
        """The request carries this receiver's token or user/password (False when none is configured).

        The server also accepts this beside its web users (``route_auth``), so with both set
        a write passes with either credential.
        """
        cfg = self.cfg
        token = cfg.token or None
        if token is None and cfg.username is None:
            return False
        user = pw = tok = None
        auth = request.headers.get("Authorization", "")
        scheme, _, cred = auth.partition(" ")
        scheme = scheme.lower()
        if scheme in ("token", "bearer"):
            tok = cred.strip()
        elif scheme == "basic":
            try:
                user, _, pw = base64.b64decode(cred.strip()).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                return False
        else:
            user, pw = request.query.get("u"), request.query.get("p")
        if token is not None and (
            (tok is not None and _eq(tok, token))
            or (pw is not None and cfg.username is None and _eq(pw, token))
        ):
            return True
        return bool(
            cfg.username is not None and user is not None and pw is not None
            and _eq(user, cfg.username) and _eq(pw, cfg.password or "")
        )

    def route_auth(self) -> dict[str, Callable[[web.Request], bool]]:
        """Path -> :meth:`credential_ok` for the server's auth middleware (empty without credentials)."""
        return {r.path: self.credential_ok for r in self.routes()} if self.has_credentials else {}

    # ---------------------------------------------------------------- body
    async def _read_body(self, request: web.Request) -> bytes | web.Response:
        """The body, decompressed, at most ``max_body_bytes`` (413 beyond, 400 for bad gzip).

        The server is built with ``auto_decompress=False`` (:func:`sentinel.server.serve`): aiohttp's
        own inflater does not check that a gzip stream ended, so a truncated body read as the lines
        before the cut, and the rest was lost behind a 204 (D12). Here the gzip stream is inflated with
        the same limit; a body that is not gzip, is cut short or has bytes after its last member is 400;
        concatenated members are read whole; another ``Content-Encoding`` is 415 (InfluxDB's answer).
        """
        limit = self.cfg.max_body_bytes
        enc = request.headers.get("Content-Encoding", "").strip().lower()
        if enc not in ("", "identity", "gzip"):
            return _error(415, f"unsupported Content-Encoding {enc!r}: send gzip or none")
        gz = enc == "gzip"
        if request.content_length is not None and request.content_length > limit:
            return _error(413, "http: request body too large")
        chunks, size = [], 0
        try:
            while True:
                chunk = await request.content.read(1 << 16)
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    return _error(413, "http: request body too large")
                chunks.append(chunk)
        except (RequestPayloadError, aiohttp.ClientPayloadError, HttpProcessingError, zlib.error, ValueError) as e:
            return _error(400, f"invalid request body: {e}")
        raw = b"".join(chunks)
        return gunzip(raw, limit) if gz and raw else raw

    # ---------------------------------------------------------------- handlers
    async def handle_v1(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return _error(401, "authorization failed", {"WWW-Authenticate": 'Basic realm="InfluxDB"'})
        db = request.query.get("db", "")
        if not db:
            return _error(400, "database is required")
        precision = request.query.get("precision", "ns") or "ns"
        if precision not in PRECISION_NS:
            return _error(400, f"invalid precision {precision!r}")
        return await self._write(request, db, request.query.get("rp", ""), precision)

    async def handle_v2(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return _error(401, "unauthorized access")
        bucket = request.query.get("bucket", "")
        if not bucket:
            return _error(400, "bucket is required")
        precision = request.query.get("precision", "ns") or "ns"
        if precision not in V2_PRECISIONS:
            return _error(400, f"invalid precision {precision!r}")
        db, _, rp = bucket.partition("/")
        return await self._write(request, db, rp, precision)

    async def _write(self, request: web.Request, db: str, rp: str, precision: str) -> web.StreamResponse:
        if self.databases and db not in self.databases:
            return _error(404, f'database not found: "{db}"')
        body = await self._read_body(request)
        if isinstance(body, web.Response):
            return body
        now = self.clock()
        now_ns = int(now * 1e9)
        if self.pool is not None:
            return await self._write_pooled(body, db, rp, precision, now, now_ns)
        outcome = self.selector.parse_bytes(body, precision, now_ns=now_ns)  # invalid UTF-8: rejected
        pos = None
        if outcome.lines:
            async with self._order:  # the log's order is the order bodies are handed on (and scored)
                got = await self._hand_on(Pushed(db, rp, outcome, now), precision, now_ns, body)
            if isinstance(got, web.Response):
                return got
            pos = got
        return await self._answer(outcome, pos)

    async def _write_pooled(self, body: bytes, db: str, rp: str, precision: str, now: float, now_ns: int
                            ) -> web.StreamResponse:
        """:meth:`_write` with the parse in an ingest worker; bodies are handed on in the order they were read."""
        assert self.pool is not None
        sel = self.selector
        t = self._turns.take()
        pos = None
        try:
            parsed = None
            if sel.sel.stream_per == "tagset":
                lo, hi = time_bounds(sel.sel, now_ns)
                parsed = await self.pool.submit(self._channel, body, PRECISION_NS[precision], now_ns, lo, hi,
                                                sel.sel.max_fields)
            await self._turns.wait(t)
            outcome = pooled_outcome(sel, parsed) if parsed is not None else None
            if outcome is None:  # what a worker does not take is parsed here, at its turn
                outcome = sel.parse_bytes(body, precision, now_ns=now_ns)
            if outcome.lines:
                async with self._order:
                    got = await self._hand_on(Pushed(db, rp, outcome, now), precision, now_ns, body)
                if isinstance(got, web.Response):
                    return got
                pos = got
        finally:
            self._turns.done(t)
        return await self._answer(outcome, pos)

    async def _hand_on(self, p: Pushed, precision: str, now_ns: int, body: bytes) -> WalPosition | web.Response | None:
        """Under ``_order``: log the body (when it has samples) and hand it on; its log position, or an error."""
        pos = None
        if self.log is not None and p.outcome.samples:
            try:
                pos = self.log.write(IngestRecord(self.name, precision, now_ns, body))
            except WalFull as e:
                return _error(503, f"sentinel's write-ahead log is full, retry later ({e})",
                              {"Retry-After": str(max(1, round(self.retry_after)))})
            except WalError as e:
                return _error(500, f"sentinel cannot log this write: {e}")
        if not await self.deliver(Pushed(p.database, p.retention_policy, p.outcome, p.received_at, pos)):
            return _error(503, "sentinel is busy, retry later", {"Retry-After": "1"})
        return pos

    async def _answer(self, outcome: ParseOutcome, pos: WalPosition | None) -> web.StreamResponse:
        """Once the record is durable: 204, or 400 naming the first rejected line."""
        if pos is not None and self.log is not None:
            try:
                await asyncio.wrap_future(self.log.durable(pos))
            except WalError as e:
                return _error(500, f"sentinel cannot log this write: {e}")
        if outcome.errors:
            bad = sum(v for k, v in outcome.rejected.items() if k.startswith("lp_"))
            first = outcome.errors[0]
            prefix = "partial write: " if bad < outcome.lines else ""
            return _error(400, f"{prefix}{first.influx_text()} (line {first.lineno}; "
                               f"{bad} of {outcome.lines} lines rejected)")
        return web.Response(status=204, headers={"X-Influxdb-Version": "sentinel"})

    def use_pool(self, pool: ParsePool | None) -> None:
        """Parse bodies in ``pool``'s ingest workers (None: in-process, the default)."""
        self.pool = pool
        self._channel = pool.channel(self.selector._bulk) if pool is not None else 0

    async def replay(self, records: Iterable[tuple[WalPosition, IngestRecord]]) -> int:
        """Hand this source's logged records on again (on start, before ready); returns how many.

        Parsed as when they arrived (their precision and receipt time); database checks were
        done then. A record that is not handed on in time raises TimeoutError (start fails).
        """
        n = 0
        for pos, rec in records:
            if rec.source != self.name:
                continue
            outcome = self.selector.parse_bytes(rec.body, rec.precision, now_ns=rec.now_ns)
            if outcome.lines and not await self.deliver(Pushed("", "", outcome, rec.now_ns / 1e9, pos)):
                raise TimeoutError("the runtime did not take a replayed write-ahead log record")
            n += 1
        return n
