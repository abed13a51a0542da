"""The MQTT source's use of the daemon's write-ahead log: log a batch, then acknowledge it to the broker.

A QoS 1 PUBACK tells the broker it may forget a message, so it is sent only once the
batch's messages are in the write-ahead log and durable (``server.wal.fsync``): a
``kill -9`` at any moment then loses nothing the broker was told was received. What
was received but not yet logged is not acknowledged, and the broker redelivers it to
the next session; a redelivered message that was logged before the kill is rejected
by its stream as a duplicate.

One log record holds one batch's messages as received (topic, payload, receipt time);
on start, :meth:`MQTTLog.replay` decodes the records after the restored checkpoint
through the same decoder, and the source emits them before anything new.

:class:`MQTTLog` is the source's ``receiver`` in the sense of
:class:`~sentinel.runtime.durable.Durability`: it has the ``log``, ``retry_after`` and
``_order`` lock that the daemon sets and takes, and ``replay``.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ...state.ingestlog import IngestLog, IngestRecord
from ...state.wal import WalPosition
from ...types import Sample, SourceBatch
from .client import Message

if TYPE_CHECKING:
    from .payload import PayloadDecoder

PRECISION = "mqtt"
"""The record's precision field marks an MQTT batch (a line-protocol record holds a unit there)."""

_MSG = struct.Struct("<dHI")  # receipt time (unix s), len(topic), len(payload)


def encode_messages(msgs: Iterable[Message]) -> bytes:
    """The body of one log record: every message's receipt time, topic and payload.

    >>> m = Message("a/b", b"m v=1", 7, 1, 12.5)
    >>> [(x.topic, x.payload, x.received_at) for x in decode_messages(encode_messages([m, m]))]
    [('a/b', b'm v=1', 12.5), ('a/b', b'm v=1', 12.5)]
    """
    parts = []
    for m in msgs:
        t = m.topic.encode("utf-8", "surrogateescape")
        parts += [_MSG.pack(m.received_at, len(t), len(m.payload)), t, m.payload]
    return b"".join(parts)


def decode_messages(body: bytes) -> list[Message]:
    """Raise ValueError for a body that is not a sequence of encoded messages."""
    out, i = [], 0
    while i < len(body):
        if i + _MSG.size > len(body):
            raise ValueError("mqtt log record: truncated message header")
        at, lt, lp = _MSG.unpack_from(body, i)
        i += _MSG.size
        if i + lt + lp > len(body):
            raise ValueError("mqtt log record: message runs past the record")
        topic = body[i:i + lt].decode("utf-8", "surrogateescape")
        out.append(Message(topic, body[i + lt:i + lt + lp], 0, 0, at))
        i += lt + lp
    return out


def decode_batch(source: str, decoder: PayloadDecoder, msgs: list[Message],
                 rejected: dict[str, int] | None = None) -> SourceBatch:
    """The batch a list of messages makes (samples in time order), as the live path builds it."""
    samples: list[Sample] = []
    rej = dict(rejected or {})
    for m in msgs:
        decoder.decode(m.topic, m.payload, m.received_at, samples, rej)
    if len(samples) > 1:
        samples.sort(key=lambda s: s.ts)
    return SourceBatch(source, samples, None, msgs[-1].received_at if msgs else 0.0, rej)


class MQTTLog:
    """Logs batches before they are acknowledged; replays them on start (see the module docstring)."""

    def __init__(self, name: str, decoder: PayloadDecoder):
        self.name = name
        self.decoder = decoder
        self.log: IngestLog | None = None  # set by the daemon when server.wal.enabled
        self.retry_after = 5.0  # set by the daemon: server.wal.retry_after, the wait while the log is full
        self._order = asyncio.Lock()  # log order == emit order; the daemon holds it while replaying
        self.replayed: list[SourceBatch] = []  # emitted by the source's run() before anything new

    def write(self, msgs: list[Message]) -> WalPosition | None:
        """Append one batch (None without a log); raises WalFull / WalError like the receiver's log."""
        if self.log is None or not msgs:
            return None
        return self.log.write(IngestRecord(self.name, PRECISION, int(msgs[-1].received_at * 1e9),
                                           encode_messages(msgs)))

    async def durable(self, pos: WalPosition | None) -> None:
        if pos is not None and self.log is not None:
            await asyncio.wrap_future(self.log.durable(pos))

    async def replay(self, records: Iterable[tuple[WalPosition, IngestRecord]]) -> int:
        """Decode this source's logged batches again; :meth:`MQTTSource.run` emits them first."""
        n = 0
        for pos, rec in records:
            if rec.source != self.name or rec.precision != PRECISION:
                continue
            try:
                msgs = decode_messages(rec.body)
            except ValueError:
                continue
            b = decode_batch(self.name, self.decoder, msgs)
            self.replayed.append(SourceBatch(b.source, b.samples, None, b.received_at, b.rejected,
                                             (pos.segment, pos.offset)))
            n += 1
        return n
