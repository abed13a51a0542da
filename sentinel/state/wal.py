"""A segmented write-ahead log: what Sentinel acknowledges is on disk first.

Modelled on Prometheus' TSDB WAL (``tsdb/wlog``): numbered segment files in one
directory, records appended to the newest, a new segment on open and when one is
full, old segments deleted once a checkpoint covers them.

Records are length-prefixed and CRC-checked (:mod:`sentinel.state.walformat`).
A **position** ``(segment, offset)`` names the byte after a record; :meth:`WriteAheadLog.write`
returns the end position of the record it wrote, :meth:`~WriteAheadLog.replay` yields
``(end position, payload)`` for every record after a given position. A checkpoint stores
the end position of the last record it covers; on start, replay from it.

Durability policies (``fsync``):

``always``
    every acknowledged record is fsynced (``fdatasync``) before :meth:`append` returns.
    Concurrent writers share one fsync (group commit): while one fsync runs, the next
    group gathers.
``batch``
    like ``always``, but the sync thread waits up to ``fsync_delay`` after the first
    unsynced record before it syncs, so more writers share one fsync. An acknowledgement
    waits at most ``fsync_delay`` plus one fsync.
``off``
    records are handed to the kernel (``os.write``, no user-space buffer) and never
    fsynced by Sentinel. They survive a ``kill -9`` of the process, not a power loss or
    a kernel crash. Segments are not fsynced on close either.

Cost, measured with ``benchmarks/bench_wal.py`` (see benchmarks/README.md for the
figures on the machine that ran it): ``off`` is a ``writev`` per record; ``always``
and ``batch`` add one ``fdatasync`` per group, whose cost is the device's flush
latency, so their throughput depends on how many writers share a group.

On open, the newest segment is scanned and a torn or corrupt tail (a crash mid-write)
is cut off at the last good record; earlier segments were synced before the next was
started. A corrupt record found during replay ends that segment's replay (counted in
``corrupt_records``); replay continues with the next segment.

The log is bounded: a write that would take it past ``max_bytes`` raises
:class:`WalFull` (the receiver answers 503 with ``Retry-After``) instead of dropping data.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Literal

from .. import failpoints
from .walformat import (
    HEADER_BYTES,
    MAX_RECORD_BYTES,
    START,
    WalError,
    WalFull,
    WalPosition,
    fsync_dir,
    good_prefix,
    header,
    list_segments,
    scan,
    seg_name,
)

__all__ = ["START", "FsyncPolicy", "WalError", "WalFull", "WalPosition", "WriteAheadLog", "list_segments"]

log = logging.getLogger("sentinel.wal")

FsyncPolicy = Literal["always", "batch", "off"]
_sync = getattr(os, "fdatasync", os.fsync)


class WriteAheadLog:
    """A segmented, CRC-checked, bounded append-only log with group commit.

    Thread-safe: any thread may :meth:`write`/:meth:`append`; one background thread
    fsyncs (policies ``always`` and ``batch``). A new segment is started on open, numbered
    after the last one on disk and at least ``min_segment`` (pass one past the restored
    checkpoint's segment, so a deleted log never reuses numbers a checkpoint names).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     wal = WriteAheadLog(d, fsync="off")
    ...     p1 = wal.append(b"a"); p2 = wal.append(b"bc")
    ...     wal.close()
    ...     wal = WriteAheadLog(d, fsync="off")
    ...     [x for _, x in wal.replay(p1)], p1 < p2
    ...     wal.close()
    ([b'bc'], True)
    """

    def __init__(self, directory: str | Path, *, fsync: FsyncPolicy = "batch", fsync_delay: float = 0.005,
                 segment_bytes: int = 16 * 1024 * 1024, max_bytes: int = 512 * 1024 * 1024,
                 min_segment: int = 1):
        if fsync not in ("always", "batch", "off"):
            raise ValueError(f"fsync must be always, batch or off, got {fsync!r}")
        if not (fsync_delay >= 0 and segment_bytes > HEADER_BYTES and max_bytes > HEADER_BYTES):
            raise ValueError("fsync_delay must be >= 0, segment_bytes and max_bytes > 8")
        self.dir = Path(directory)
        self.policy: FsyncPolicy = fsync
        self.fsync_delay = float(fsync_delay)
        self.segment_bytes, self.max_bytes = int(segment_bytes), int(max_bytes)
        self.corrupt_records = 0  # records found bad during replay (torn tails repaired on open are not counted)
        self.repaired_bytes = 0  # bytes cut off the newest segment on open
        self.fsyncs = 0
        self.fsync_seconds = 0.0
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._waiters: deque[tuple[WalPosition, Future[WalPosition]]] = deque()
        self._failed: BaseException | None = None
        self._closed = False
        self._retired: list[int] = []  # fds of finished segments the sync thread still has to sync and close
        self._dir_dirty = False

        self.dir.mkdir(parents=True, exist_ok=True)
        segs = list_segments(self.dir)
        self._sizes: dict[int, int] = {n: (self.dir / seg_name(n)).stat().st_size for n in segs}
        if segs:
            self._repair(segs[-1])
        # Never reuse a segment number a checkpoint may name (``min_segment``: one past the checkpoint's).
        self._seg = max((segs[-1] + 1) if segs else 1, min_segment)
        self._fd = self._create(self._seg)
        self._off = 0
        self._durable = WalPosition(self._seg, 0)
        self._thread: threading.Thread | None = None
        if self.policy != "off":
            self._thread = threading.Thread(target=self._sync_loop, name="wal-sync", daemon=True)
            self._thread.start()

    # -- opening ----------------------------------------------------------------------------
    def _repair(self, n: int) -> None:
        path = self.dir / seg_name(n)
        data = path.read_bytes()
        good = good_prefix(data)
        if good < len(data):
            with open(path, "r+b") as f:
                f.truncate(good)
                f.flush()
                os.fsync(f.fileno())
            self.repaired_bytes = len(data) - good
            self._sizes[n] = good
            log.warning("write-ahead log: torn or corrupt tail cut off (a crash mid-write)",
                        extra={"segment": str(path), "kept_bytes": good, "cut_bytes": len(data) - good})

    def _create(self, n: int) -> int:
        fd = os.open(self.dir / seg_name(n), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._sizes[n] = 0
        if self.policy == "off":
            return fd
        self._dir_dirty = True
        return fd

    # -- writing ----------------------------------------------------------------------------
    @property
    def size_bytes(self) -> int:
        """Bytes on disk in all segments."""
        with self._lock:
            return sum(self._sizes.values())

    @property
    def position(self) -> WalPosition:
        """The end of the last record written (not necessarily synced)."""
        with self._lock:
            return WalPosition(self._seg, self._off)

    def write(self, payload: bytes) -> WalPosition:
        """Hand one record to the kernel and return its end position; not yet durable under always/batch.

        Raises :class:`WalFull` when it would exceed ``max_bytes``, :class:`WalError` after a failed fsync
        or once closed, ValueError for an empty or oversized record.
        """
        if not payload:
            raise ValueError("empty write-ahead log record")
        if len(payload) >= MAX_RECORD_BYTES:
            raise ValueError("write-ahead log record too large")
        head = header(payload)
        size = HEADER_BYTES + len(payload)
        with self._lock:
            if self._failed is not None:
                raise WalError(f"write-ahead log failed earlier: {self._failed}")
            if self._closed:
                raise WalError("write-ahead log is closed")
            used = sum(self._sizes.values())
            if used + size > self.max_bytes:
                raise WalFull(size, used, self.max_bytes)
            if self._off > 0 and self._off + size > self.segment_bytes:
                self._roll()
            try:
                self._write_all([head, payload], size)
            except OSError as e:
                self._fail(e)
                raise WalError(f"write-ahead log write failed: {e}") from None
            self._off += size
            self._sizes[self._seg] = self._off
            pos = WalPosition(self._seg, self._off)
            if failpoints.ARMED:
                failpoints.hit("wal.append")
            if self.policy != "off":
                self._wake.notify_all()
            return pos

    def _write_all(self, parts: list[bytes], size: int) -> None:
        if failpoints.ARMED:
            self._failpoint(parts)
        done = os.writev(self._fd, parts)
        if done == size:
            return
        rest = b"".join(parts)[done:]  # a short write: finish it byte-exact
        while rest:
            k = os.write(self._fd, rest)
            rest = rest[k:]

    def _failpoint(self, parts: list[bytes]) -> None:
        if failpoints.ARMED.get("wal.torn", 0) == 1:  # the record's first half, then die
            data = b"".join(parts)
            os.write(self._fd, data[: max(1, len(data) // 2)])
        failpoints.hit("wal.torn")

    def _roll(self) -> None:
        """Start the next segment (lock held). The old one is synced by the sync thread (or closed now)."""
        if self.policy == "off":
            os.close(self._fd)
        else:
            self._retired.append(self._fd)
            self._wake.notify_all()
        self._seg += 1
        self._fd = self._create(self._seg)
        self._off = 0

    def durable(self, pos: WalPosition) -> Future[WalPosition]:
        """A future that resolves (with ``pos``) once every record up to ``pos`` is durable per the policy."""
        f: Future[WalPosition] = Future()
        with self._lock:
            if self._failed is not None:
                f.set_exception(WalError(f"write-ahead log failed: {self._failed}"))
            elif self.policy == "off" or pos <= self._durable:
                f.set_result(pos)
            else:
                self._waiters.append((pos, f))
                self._wake.notify_all()
        return f

    def append(self, payload: bytes, timeout: float | None = None) -> WalPosition:
        """Write one record and wait until it is durable per the policy; returns its end position."""
        return self.durable(self.write(payload)).result(timeout)

    # -- the sync thread ----------------------------------------------------------------------
    def _pending(self) -> bool:
        return bool(self._retired) or WalPosition(self._seg, self._off) > self._durable or self._dir_dirty

    def _sync_loop(self) -> None:
        while True:
            with self._lock:
                while not self._pending() and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return  # close() does the last sync itself
            if self.policy == "batch" and self.fsync_delay > 0:
                time.sleep(self.fsync_delay)  # let more writers join this group
            try:
                self._sync_once()
            except OSError:
                return  # _sync_once recorded the failure and failed the waiters

    def _sync_once(self) -> None:
        with self._lock:
            target = WalPosition(self._seg, self._off)
            fd, retired, self._retired = self._fd, self._retired, []
            dir_dirty, self._dir_dirty = self._dir_dirty, False
        t0 = time.perf_counter()
        try:
            for r in retired:
                _sync(r)
                os.close(r)
            _sync(fd)
            if dir_dirty:
                fsync_dir(self.dir)
        except OSError as e:  # never retry an fsync (its error is reported once): fail the log
            with self._lock:
                self._fail(e)
            raise
        dt = time.perf_counter() - t0
        with self._lock:
            self.fsyncs += 1
            self.fsync_seconds += dt
            if target > self._durable:
                self._durable = target
            while self._waiters and self._waiters[0][0] <= self._durable:
                p, f = self._waiters.popleft()
                f.set_result(p)

    def _fail(self, e: BaseException) -> None:
        """Lock held: the log refuses writes from now on; waiters get the error."""
        if self._failed is None:
            self._failed = e
            log.error("write-ahead log failed; writes are refused until restart", extra={"error": str(e)})
        while self._waiters:
            _, f = self._waiters.popleft()
            f.set_exception(WalError(f"write-ahead log failed: {e}"))

    def sync(self) -> WalPosition:
        """Make everything written so far durable now (any policy); returns the position synced."""
        if self.policy == "off":
            with self._lock:
                target = WalPosition(self._seg, self._off)
                fd = self._fd
            _sync(fd)
            return target
        with self._lock:
            target = WalPosition(self._seg, self._off)
        return self.durable(target).result()

    # -- reading ---------------------------------------------------------------------------
    def replay(self, after: WalPosition = START) -> Iterator[tuple[WalPosition, bytes]]:
        """``(end position, payload)`` of every record after ``after``, oldest first.

        Reads what was written when it is called (segments are read whole, one at a time).
        A position older than the oldest segment starts at the oldest; a gap is logged.
        """
        with self._lock:
            segs = sorted(n for n in self._sizes if n >= after.segment)
            sizes = dict(self._sizes)
        if segs and segs[0] > after.segment and after != START and segs[0] != after.segment + 1:
            log.warning("write-ahead log: segments after the checkpoint's position were already truncated",
                        extra={"position": list(after), "oldest_segment": segs[0]})
        for n in segs:
            start = after.offset if n == after.segment else 0
            size = sizes[n]
            if start >= size:
                continue
            with open(self.dir / seg_name(n), "rb") as f:
                data = f.read(size)
            end = start
            for end, payload in scan(data, start):
                yield WalPosition(n, end), payload
            if end < len(data):
                with self._lock:
                    self.corrupt_records += 1
                log.error("write-ahead log: corrupt record, rest of the segment skipped",
                          extra={"segment": str(self.dir / seg_name(n)), "offset": end, "size": len(data)})

    # -- truncation ------------------------------------------------------------------------
    def truncate(self, covered: WalPosition) -> int:
        """Delete segments whose records all lie at or before ``covered``; returns bytes freed.

        When ``covered`` is the end of everything written, the current segment is finished
        first (a segment cut, as Prometheus does on head truncation), so it can go too.
        """
        with self._lock:
            if self._closed:
                return 0
            if (self._off > 0 and covered >= WalPosition(self._seg, self._off)):
                self._roll()
            doomed = [n for n in self._sizes if n != self._seg and
                      (n < covered.segment or (n == covered.segment and covered.offset >= self._sizes[n]))]
            freed = 0
            for n in doomed:
                freed += self._sizes.pop(n)
        for n in doomed:
            with contextlib.suppress(FileNotFoundError):
                (self.dir / seg_name(n)).unlink()
        return freed

    # -- closing ---------------------------------------------------------------------------
    def close(self) -> None:
        """Sync (unless ``off``) and close; safe to call twice. Pending waiters are resolved."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join()
        if self.policy != "off" and self._failed is None:
            with contextlib.suppress(OSError):
                self._sync_once()
        with self._lock:
            for r in self._retired:
                os.close(r)
            self._retired = []
            os.close(self._fd)
            while self._waiters:
                _, f = self._waiters.popleft()
                f.set_exception(WalError("write-ahead log closed before this record was synced"))

    def __enter__(self) -> WriteAheadLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
