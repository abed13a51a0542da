"""The daemon's use of the write-ahead log: pushed writes in, replay after a checkpoint, truncation.

One record per accepted write request: the source's name, the request's precision,
the receipt time (lines without a timestamp get it, so a replay gives them the
same one) and the body as received (decompressed). Replaying a record through the
source's normal parse path reproduces the samples the live write produced.

Ordering contract: the receiver writes a record and enqueues its samples in one
step, without an ``await`` between (so the engine sees records in log order), and
answers 2xx once :meth:`IngestLog.durable` resolves. The engine thread reports the
end position of each record it has scored, per source (:meth:`scored`); a checkpoint
stores :attr:`covered`, the end of the longest prefix of the log that is all scored (with
two push sources, one may be scored ahead of the other), and on start :meth:`replay`
yields what came after.

Truncation keeps what the oldest *kept* checkpoint still needs
(:meth:`checkpointed`), so falling back to an older checkpoint after the newest
is refused still finds every record it lacks.
"""

from __future__ import annotations

import struct
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from .wal import START, FsyncPolicy, WalPosition, WriteAheadLog

_VERSION = 1
_HEAD = struct.Struct("<BqHB")  # version, receipt time ns, len(source), len(precision)


@dataclass(frozen=True, slots=True)
class IngestRecord:
    source: str
    precision: str
    now_ns: int
    body: bytes

    def encode(self) -> bytes:
        s, p = self.source.encode(), self.precision.encode()
        return _HEAD.pack(_VERSION, self.now_ns, len(s), len(p)) + s + p + self.body

    @classmethod
    def decode(cls, data: bytes) -> IngestRecord:
        """Raise ValueError for a record this version cannot read."""
        if len(data) < _HEAD.size:
            raise ValueError("write-ahead log record too short")
        version, now_ns, ls, lp = _HEAD.unpack_from(data)
        if version != _VERSION:
            raise ValueError(f"write-ahead log record version {version}, this Sentinel reads {_VERSION}")
        i = _HEAD.size
        if i + ls + lp > len(data):
            raise ValueError("write-ahead log record header runs past its end")
        source = data[i:i + ls].decode()
        precision = data[i + ls:i + ls + lp].decode()
        return cls(source, precision, now_ns, data[i + ls + lp:])


class IngestLog:
    """A :class:`WriteAheadLog` of :class:`IngestRecord`, with the scored/checkpointed positions."""

    def __init__(self, directory: str | Path, *, fsync: FsyncPolicy = "always", fsync_delay: float = 0.005,
                 segment_bytes: int = 16 * 1024 * 1024, max_bytes: int = 512 * 1024 * 1024, keep: int = 3,
                 restored: WalPosition | None = None):
        """``restored``: the position of the checkpoint the daemon resumed from (None: fresh start)."""
        self.wal = WriteAheadLog(directory, fsync=fsync, fsync_delay=fsync_delay, segment_bytes=segment_bytes,
                                 max_bytes=max_bytes, min_segment=(restored.segment + 1) if restored else 1)
        self.restored = restored or START
        self._lock = threading.Lock()
        self._covered = self.restored
        self._written: dict[str, WalPosition] = {}  # per source: end of its newest record handed on
        self._scored: dict[str | None, WalPosition] = {}  # per source: end of its newest record scored
        self._kept: deque[WalPosition] = deque([self.restored], maxlen=max(1, keep))
        self.replayed = 0
        self.undecodable = 0

    # -- live -----------------------------------------------------------------------------------
    def write(self, rec: IngestRecord) -> WalPosition:
        """Append (not yet durable); raises :class:`~sentinel.state.wal.WalFull` / WalError."""
        pos = self.wal.write(rec.encode())
        self.handed_on(rec.source, pos)
        return pos

    def handed_on(self, source: str, pos: WalPosition) -> None:
        """``source`` has a record ending at ``pos`` on its way to the engine (written, or replayed at start)."""
        with self._lock:
            if pos > self._written.get(source, START):
                self._written[source] = pos

    def durable(self, pos: WalPosition) -> Future[WalPosition]:
        return self.wal.durable(pos)

    def scored(self, pos: WalPosition, source: str | None = None) -> None:
        """The engine thread has scored ``source``'s records up to ``pos`` (None: every record up to ``pos``)."""
        with self._lock:
            if pos > self._scored.get(source, START):
                self._scored[source] = pos

    @property
    def covered(self) -> WalPosition:
        """What a checkpoint taken now on the engine thread covers: no record at or before it is unscored.

        Each source hands its records on in log order, but sources are scored in any order
        between them: while a source has a record handed on and not scored, the position
        stops at that source's last scored one (never moving back).
        """
        with self._lock:
            every = self._scored.get(None, START)  # scored(pos) without a source: all records up to pos
            done = {s: max(self._scored.get(s, START), every) for s in self._written}
            waiting = [done[s] for s, w in self._written.items() if w > done[s]]
            newest = max(self._scored.values(), default=START)
            pos = min(waiting) if waiting else newest
            if pos > self._covered:
                self._covered = pos
            return self._covered

    def checkpointed(self, pos: WalPosition) -> int:
        """A checkpoint covering ``pos`` was written; drop segments no kept checkpoint needs. Bytes freed."""
        with self._lock:
            self._kept.append(pos)
            oldest = self._kept[0]
        return self.wal.truncate(oldest)

    # -- start -------------------------------------------------------------------------------------
    def replay(self) -> Iterator[tuple[WalPosition, IngestRecord]]:
        """Records after the restored checkpoint's position, oldest first (undecodable ones are counted)."""
        for pos, payload in self.wal.replay(self.restored):
            try:
                rec = IngestRecord.decode(payload)
            except (ValueError, UnicodeDecodeError):
                self.undecodable += 1
                continue
            self.replayed += 1
            yield pos, rec

    @property
    def size_bytes(self) -> int:
        return self.wal.size_bytes

    def close(self) -> None:
        self.wal.close()
