"""The Notifier: the one object the runtime hands alert events to (DESIGN §8).

::

    scoring thread ──submit(events)──▶ Outbox (SQLite, fsync) ──▶ one delivery task per sink
                     (durable, no network)                          │ build requests (sink, pure)
                                                                    │ send (Transport seam)
                                                                    └ ack on 2xx / back off on failure

Guarantees:

- :meth:`Notifier.submit` is thread-safe and never touches the network: it writes
  the events to every interested sink's outbox queue in one fsynced transaction
  and wakes the delivery tasks. Once it returns, the events survive a crash.
- Delivery is at-least-once and in order per sink. A failed request (connection
  error, timeout, 5xx, 408, 429) leaves its entries queued and the sink backs off
  with exponential delays and full jitter (``retry_initial`` .. ``retry_max``);
  other sinks are unaffected. A 4xx that retrying cannot fix drops the request's
  entries (logged, counted ``result="dropped"``).
- Each sink's queue is bounded by ``outbox.max_entries``; the oldest are dropped.
- Re-sending sinks (Alertmanager) get the persisted firing set re-sent every
  ``resend_interval``, and once at start, since Alertmanager may have expired them
  while Sentinel was down.
- :meth:`Notifier.stop` is idempotent: it gives pending entries ``flush_timeout``
  seconds, then leaves the rest on disk for the next start.

Metrics: ``sentinel_notifications_total{sink,result}`` counts requests
(``success``/``failure``) and entries given up (``dropped``: queue overflow or a
permanent rejection); ``sentinel_outbox_pending{sink}`` is the queue length.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence

from ..config.sinks import SinksConfig
from ..errors import ConfigError, SinkError
from ..metrics import Metrics
from ..retry import Backoff
from ..types import AlertEvent
from .outbox import Outbox
from .sinks import AiohttpTransport, Request, Sink, Transport, event_from_json, event_to_json
from .sinks.alertmanager import AlertmanagerSink
from .sinks.webhook import WebhookSink

log = logging.getLogger(__name__)

__all__ = ["Notifier"]

_RETRYABLE_4XX = frozenset({408, 425, 429})


class Notifier:
    """Durable alert delivery to the configured webhooks and Alertmanagers.

    ``external_url``: Sentinel's own URL, for ``externalURL`` and ``generatorURL``.
    ``clock``: epoch seconds, used for timestamps written into payloads.
    ``transport``: the HTTP seam (default: one aiohttp session, closed by :meth:`stop`).
    ``rng``: jitter source (seed it in tests).
    On construction the outbox is opened and whatever it holds is queued again.
    """

    def __init__(self, cfg: SinksConfig, metrics: Metrics, external_url: str,
                 clock: Callable[[], float] = time.time, transport: Transport | None = None,
                 rng: random.Random | None = None):
        self.cfg = cfg
        self.metrics = metrics
        self.external_url = external_url
        self.clock = clock
        self._own_transport = transport is None
        self._transport: Transport = transport if transport is not None else AiohttpTransport()
        self._rng = rng or random.Random()
        self.sinks: dict[str, Sink] = build_sinks(cfg, external_url)
        self.outbox = Outbox(cfg.outbox.path, cfg.outbox.max_entries, metrics)
        for name in self.sinks:
            metrics.add_sink(name, self.outbox.pending(name))
        orphans = [s for s in self.outbox.sinks() if s not in self.sinks]
        if orphans:
            log.warning("outbox holds notifications for sinks no longer configured, kept on disk: %s", orphans)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: dict[str, asyncio.Event] = {}
        self._stop_event: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._stopped = False
        self._deadline = 0.0

    # -- the runtime's side -------------------------------------------------------------------

    def submit(self, events: Sequence[AlertEvent]) -> None:
        """Queue ``events`` durably for every sink that accepts them; thread-safe, no network I/O."""
        if not events:
            return
        rows: list[tuple[str, str]] = []
        firing: list[tuple[str, str, str | None]] = []
        for ev in events:
            if self.cfg.log_alerts:
                log.info("alert %s %s score=%.4f threshold=%.4f error=%.4g", ev.status, ev.key, ev.score,
                         ev.threshold, ev.error)
            text = event_to_json(ev)
            for name, sink in self.sinks.items():
                if sink.accepts(ev):
                    rows.append((name, text))
                if sink.resend_interval is not None:
                    firing.append((name, ev.fingerprint, text if ev.status == "firing" else None))
        dropped = self.outbox.put(rows, firing, now=self.clock())
        for name, n in dropped.items():
            if name in self.sinks:
                self.metrics.notifications.labels(sink=name, result="dropped").inc(n)
        for name in {r[0] for r in rows}:
            self._wake_sink(name)

    def apply_config(self, cfg: SinksConfig) -> list[str]:
        """Reload: swap in the new settings of the sinks that stay (URL, headers, timeouts, grouping).

        Returns the sinks added or removed (``sinks.webhooks[name]``): they need a restart, and
        the running set stays as it is; ``sinks.outbox`` is the reloader's to name. The delivery tasks pick the new sink up at their
        next request.
        """
        new = build_sinks(cfg, self.external_url)
        kinds = {**{w.name: "webhooks" for w in (*self.cfg.webhooks, *cfg.webhooks)},
                 **{a.name: "alertmanagers" for a in (*self.cfg.alertmanagers, *cfg.alertmanagers)}}
        restart = [f"sinks.{kinds[n]}[{n}]" for n in sorted(set(new) ^ set(self.sinks))]
        for name, sink in new.items():
            if name in self.sinks:
                self.sinks[name] = sink
        self.cfg = self.cfg.model_copy(update={"webhooks": cfg.webhooks, "alertmanagers": cfg.alertmanagers,
                                               "log_alerts": cfg.log_alerts})
        return restart

    def pending(self, sink: str) -> int:
        """Entries of ``sink`` waiting in the outbox."""
        return self.outbox.pending(sink)

    async def run(self) -> None:
        """Deliver until :meth:`stop`; one task per sink. Returns once every delivery task ended."""
        if self._stopping:
            return
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        self._wake = {name: asyncio.Event() for name in self.sinks}
        self._tasks = [asyncio.create_task(self._sink_loop(s), name=f"sink-{s.name}") for s in self.sinks.values()]
        try:
            await asyncio.gather(*self._tasks)
        finally:
            for t in self._tasks:
                t.cancel()

    async def stop(self) -> None:
        """Stop delivering: pending entries get ``outbox.flush_timeout`` s, the rest stays on disk.

        Safe to call twice; returns once the delivery tasks ended and the outbox is closed.
        """
        if self._stopped:
            return
        loop = asyncio.get_running_loop()
        if not self._stopping:
            self._stopping = True
            self._deadline = loop.time() + self.cfg.outbox.flush_timeout
            if self._stop_event is not None:
                self._stop_event.set()
            for ev in self._wake.values():
                ev.set()
        tasks = [t for t in self._tasks if not t.done()]
        if tasks:
            grace = self.cfg.outbox.flush_timeout + 1.0
            _, late = await asyncio.wait(tasks, timeout=grace)
            for t in late:
                t.cancel()
            if late:
                await asyncio.wait(late, timeout=5.0)
        if self._stopped:
            return
        self._stopped = True
        if self._own_transport and isinstance(self._transport, AiohttpTransport):
            await self._transport.close()
        self.outbox.close()

    # -- delivery -----------------------------------------------------------------------------

    def _wake_sink(self, name: str) -> None:
        ev, loop = self._wake.get(name), self._loop
        if ev is None or loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # loop closing: the entry stays on disk
            loop.call_soon_threadsafe(ev.set)

    async def _sink_loop(self, first: Sink) -> None:
        loop = asyncio.get_running_loop()
        name = first.name
        wake = self._wake[name]
        backoff = Backoff(self.cfg.outbox.retry_initial, self.cfg.outbox.retry_max, self._rng)
        next_resend = loop.time()  # re-send the persisted firing set once at start
        while True:
            if self._stopping and loop.time() >= self._deadline:
                return
            wake.clear()
            sink = self.sinks[name]  # a reload may have swapped in new settings
            entries = await asyncio.to_thread(self.outbox.peek, name, self.cfg.outbox.batch)
            pending = await self._decode(name, entries)
            resend_due = sink.resend_interval is not None and loop.time() >= next_resend and not self._stopping
            firing: list[AlertEvent] = []
            if resend_due:
                for text in await asyncio.to_thread(self.outbox.firing, name):
                    with contextlib.suppress(Exception):
                        firing.append(event_from_json(text))
            requests = sink.requests(pending, firing, self.clock())
            if not requests:
                if resend_due and sink.resend_interval is not None:
                    next_resend = loop.time() + sink.resend_interval
                if self._stopping:
                    return
                timeout = None if sink.resend_interval is None else max(0.0, next_resend - loop.time())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout)
                continue
            if await self._send_all(name, requests):
                if backoff.failures:
                    log.info("sink %s: delivering again after %d failed attempts", name, backoff.failures)
                backoff.reset()
                if resend_due and sink.resend_interval is not None:
                    next_resend = loop.time() + sink.resend_interval
                continue
            delay = backoff.next()
            if self._stopping:
                await asyncio.sleep(min(delay, max(0.0, self._deadline - loop.time())))
            else:
                assert self._stop_event is not None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop_event.wait(), delay)

    async def _decode(self, name: str, entries: list) -> list[tuple[int, AlertEvent]]:
        out, bad = [], []
        for e in entries:
            try:
                out.append((e.id, event_from_json(e.payload)))
            except Exception:
                bad.append(e.id)
        if bad:
            log.error("sink %s: dropping %d unreadable outbox entries", name, len(bad))
            await asyncio.to_thread(self.outbox.ack, name, bad)
            self.metrics.notifications.labels(sink=name, result="dropped").inc(len(bad))
        return out

    async def _send_all(self, name: str, requests: list[Request]) -> bool:
        """Send in order; stop at the first retryable failure (False). Acks what was delivered."""
        for req in requests:
            status: int | None = None
            try:
                status = await self._transport(req.method, req.url, req.headers, req.body, req.timeout)
            except asyncio.CancelledError:
                raise
            except SinkError as e:
                reason = str(e)
            except Exception as e:  # a transport bug must not kill the delivery task
                reason = f"{type(e).__name__}: {e}"
            else:
                reason = f"HTTP {status}"
            if status is not None and 200 <= status < 300:
                # counted before the ack: whoever sees the outbox drained sees the delivery counted
                self.metrics.notifications.labels(sink=name, result="success").inc()
                await asyncio.to_thread(self.outbox.ack, name, req.entry_ids)
                continue
            self.metrics.notifications.labels(sink=name, result="failure").inc()
            if status is not None and 400 <= status < 500 and status not in _RETRYABLE_4XX:
                log.error("sink %s: %s rejected %d alerts (%s); not retrying", name, req.url, req.alerts, reason)
                n = await asyncio.to_thread(self.outbox.ack, name, req.entry_ids)
                self.metrics.notifications.labels(sink=name, result="dropped").inc(n)
                continue
            log.warning("sink %s: delivery to %s failed (%s); will retry", name, req.url, reason)
            return False
        return True


def build_sinks(cfg: SinksConfig, external_url: str) -> dict[str, Sink]:
    """The configured sinks by name (webhooks, then Alertmanagers)."""
    sinks: list[Sink] = [WebhookSink(w, external_url) for w in cfg.webhooks]
    sinks += [AlertmanagerSink(a, external_url) for a in cfg.alertmanagers]
    out: dict[str, Sink] = {}
    for s in sinks:
        if s.name in out:
            raise ConfigError(f"sinks: sink name {s.name!r} is used twice")
        out[s.name] = s
    return out
