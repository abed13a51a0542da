"""The MQTT source: subscribe with a persistent session, decode payloads, hand batches to the runtime.

``run`` opens a :class:`~.client.Connection` (CONNACK and SUBACK awaited), then
loops: wait for a message (at most a second, so a stop is seen), take what else is
waiting (up to ``batch_max``), decode it (:class:`~.payload.PayloadDecoder`), append
the messages to the daemon's write-ahead log, emit one :class:`~sentinel.types.SourceBatch`,
and only once the log record is durable acknowledge its messages (:mod:`.durable`): a
``kill -9`` loses no acknowledged message. What was received but not logged when the
connection drops or Sentinel stops is not acknowledged, so the broker redelivers it to
the next session (QoS >= 1). Without a log (``server.wal.enabled: false``) a batch is
acknowledged once emitted, and a ``kill -9`` loses what was emitted but not checkpointed.

There is no cursor (the broker's session is the position) and no history: a fresh
stream warms up on live data. A lost connection ends ``run`` with
:class:`~sentinel.errors.SourceUnavailable`;
:class:`~sentinel.sources.running.RunningSource` reconnects with backoff and jitter.

Files: ``client.py`` (paho, the network thread), ``payload.py`` (line protocol and
JSON), ``topics.py`` (topic segments -> labels), ``durable.py`` (log before acknowledging).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable

from ...config.schema import StreamsConfig
from ...config.source_mqtt import MQTTSourceConfig
from ...errors import SourceUnavailable
from ...lineprotocol import REASONS as LP_REASONS
from ...state.wal import WalError
from ...types import Sample, SourceBatch, StreamKey
from ..base import Emit, Plugin
from ..selector import Selection, StreamSelector
from .client import Connection, Lost, Message
from .durable import MQTTLog, decode_batch
from .payload import REASONS, PayloadDecoder

log = logging.getLogger("sentinel.sources.mqtt")


def selection_from(cfg: MQTTSourceConfig, streams: StreamsConfig | None = None) -> Selection:
    """The stream selection, with the input bounds of ``streams.*`` (defaults when None); JSON
    field paths name a stream's fields when ``fields`` is empty."""
    fields = cfg.fields or (sorted(cfg.json_payload.fields) if cfg.format == "json" else [])
    return Selection.of(cfg, streams, fields)


class MQTTSource(Plugin):
    """Follows topics on one MQTT broker (see the module docstring)."""

    def __init__(self, cfg: MQTTSourceConfig, *, metrics, clock: Callable[[], float] = time.time,
                 resume: dict | None = None, streams: StreamsConfig | None = None):
        super().__init__(cfg, metrics=metrics, clock=clock)
        on_refused = (lambda _k: metrics.streams_refused.inc()) if metrics is not None else None
        if metrics is not None:  # every reason this source can count is exported as 0 from the start
            metrics.add_reasons(REASONS, LP_REASONS)
        self.selector = StreamSelector(selection_from(cfg, streams), on_refused=on_refused)
        self.decoder = PayloadDecoder(cfg, self.selector)
        self.receiver = MQTTLog(self.name, self.decoder)  # the write-ahead log (the daemon sets .log)
        self._pending: collections.deque[Message] = collections.deque()
        self._wake = asyncio.Event()
        self._lost: Lost | None = None
        self._overflow = 0
        self._stop = asyncio.Event()
        self._done: asyncio.Event | None = None
        self._conn: Connection | None = None
        self.stats = {"messages": 0, "batches": 0, "connects": 0, "sessions_resumed": 0}

    # -- protocol --------------------------------------------------------------------------
    @property
    def cursor(self) -> dict | None:
        return None  # the broker's persistent session is the position

    async def history(self, keys: list[StreamKey] | None, since: float, until: float) -> list[Sample]:
        return []

    # -- the network thread's deliveries (on the event loop) ------------------------------------
    def _deliver(self, item: Message | Lost) -> None:
        if isinstance(item, Lost):
            self._lost = item
        elif len(self._pending) >= self.cfg.max_pending:
            self._overflow += 1
            if self._conn is not None:
                self._conn.ack([item])  # dropped and counted: never redelivered, never stalls the window
        else:
            self._pending.append(item)
        self._wake.set()

    async def _wait(self, timeout: float) -> None:
        if self._pending or self._lost is not None or self._stop.is_set():
            return
        self._wake.clear()
        stop = asyncio.ensure_future(self._stop.wait())
        wake = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({stop, wake}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            wake.cancel()

    # -- run -------------------------------------------------------------------------------
    async def run(self, emit: Emit) -> None:
        self._done = asyncio.Event()
        self._pending.clear()  # unacknowledged: the broker redelivers them to this session
        self._lost = None
        try:
            if self._stop.is_set():
                return
            await self._emit_replayed(emit)
            self._conn = conn = Connection(self.cfg, self._deliver, clock=self.clock)
            await conn.open()
            self.stats["connects"] += 1
            self.stats["sessions_resumed"] += int(conn.session_present)
            self.connected = True
            while not self._stop.is_set():
                await self._wait(1.0)
                if self._stop.is_set():
                    break
                await self._emit_replayed(emit)
                if self._pending or self._overflow:
                    await self._emit_pending(emit, conn)
                elif self._lost is not None:
                    raise SourceUnavailable(f"mqtt {self.cfg.host}:{self.cfg.port}: {self._lost.reason}")
        finally:
            if self._conn is not None:
                await self._conn.close()
                self._conn = None
            self._done.set()

    async def _emit_replayed(self, emit: Emit) -> None:
        """Batches logged before a restart (see :meth:`MQTTLog.replay`): emitted before anything new."""
        if self.receiver.replayed:
            async with self.receiver._order:
                while self.receiver.replayed:
                    await emit(self.receiver.replayed.pop(0))

    async def _emit_pending(self, emit: Emit, conn: Connection) -> None:
        """Decode, log (when the daemon has a write-ahead log), emit, wait until durable, then PUBACK."""
        n = min(len(self._pending), self.cfg.batch_max)
        msgs = [self._pending.popleft() for _ in range(n)]
        rejected: dict[str, int] = {}
        if self._overflow:
            rejected["mqtt_overflow"], self._overflow = self._overflow, 0
        batch = decode_batch(self.name, self.decoder, msgs, rejected)
        if not msgs:
            batch = SourceBatch(self.name, [], None, self.clock(), rejected)
        wal = self.receiver
        async with wal._order:  # the log's order is the order batches are emitted (and scored)
            while wal.replayed:
                await emit(wal.replayed.pop(0))
            try:
                pos = wal.write(msgs) if batch.samples else None
            except WalError as e:  # full (or failing): nothing acknowledged, the broker keeps the messages
                self._pending.extendleft(reversed(msgs))
                self._overflow += rejected.get("mqtt_overflow", 0)
                log.warning("%s: write-ahead log: %s; retrying in %.1fs", self.name, e, wal.retry_after)
                await asyncio.sleep(wal.retry_after)
                return
            if batch.samples or batch.rejected:
                if pos is not None:
                    batch = SourceBatch(batch.source, batch.samples, None, batch.received_at, batch.rejected, pos)
                await emit(batch)
        try:
            await wal.durable(pos)
        except WalError as e:  # not durable: never acknowledged; the next session gets them again
            raise SourceUnavailable(f"mqtt: write-ahead log: {e}") from e
        conn.ack(msgs)
        self.stats["messages"] += n
        self.stats["batches"] += 1

    async def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._done is not None and self._conn is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._done.wait(), 15.0)
        if self._conn is not None:
            await self._conn.close()
        self.connected = False
