"""The durable, bounded, per-sink outbox of alert notifications (DESIGN §8).

One SQLite database (stdlib ``sqlite3``, WAL journal, ``synchronous=FULL``) in
the outbox directory holds two tables:

- ``entries``: ``(id, sink, created, payload)``; ``id`` grows monotonically, so
  a sink's entries are delivered oldest first. An entry leaves only when its sink
  acknowledged it (:meth:`Outbox.ack`) or when the sink's bound ``max_entries`` is
  exceeded (the oldest go first, counted in ``sentinel_outbox_dropped_total``).
- ``firing``: ``(sink, fingerprint, payload)``, the set of alerts currently firing
  per re-sending sink (Alertmanager), so re-sends survive a restart.

Guarantees: :meth:`put` returns only after its transaction is committed and
fsynced, entries and firing-set changes of one call commit together, and a crash
at any point (SIGKILL, power loss) leaves the database at the last committed
transaction. So an entry acknowledged by ``put`` is delivered after a restart
(at-least-once; a crash between a delivery and its ``ack`` re-sends it).

Thread safety: every method may be called from any thread; one lock serialises
them. No method does network I/O, and each holds the lock for one short
transaction only.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..metrics import Metrics

log = logging.getLogger(__name__)

DB_NAME = "outbox.sqlite3"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sink TEXT NOT NULL,
    created REAL NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_sink ON entries (sink, id);
CREATE TABLE IF NOT EXISTS firing (
    sink TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (sink, fingerprint)
);
"""


@dataclass(frozen=True, slots=True)
class Entry:
    """One queued notification; ``payload`` is the sink-independent JSON of an alert event."""

    id: int
    sink: str
    created: float
    payload: str


class Outbox:
    """See the module doc. ``path`` is a directory (created if missing).

    ``max_entries`` bounds each sink's queue; ``metrics`` (optional) receives
    ``outbox_pending{sink}`` and ``outbox_dropped{sink}``.
    """

    def __init__(self, path: str | os.PathLike[str], max_entries: int = 100_000, metrics: Metrics | None = None):
        self.dir = Path(path)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.file = self.dir / DB_NAME
        self.max_entries = max_entries
        self.metrics = metrics
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._pending: dict[str, int] = {}
        with self._lock:
            db = self._conn()
            for sink, n in db.execute("SELECT sink, COUNT(*) FROM entries GROUP BY sink"):
                self._pending[sink] = n
        for sink in self._pending:
            self._publish(sink)

    # -- connection ---------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        """The open connection (reopened after :meth:`close`); call with the lock held."""
        if self._db is None:
            db = sqlite3.connect(self.file, isolation_level=None, check_same_thread=False, timeout=30)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                db.close()
                raise RuntimeError(f"{self.file}: outbox schema version {version}, expected {SCHEMA_VERSION}")
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self._db = db
        return self._db

    def close(self) -> None:
        """Close the database; a later call reopens it. Safe to call twice."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # -- writes -------------------------------------------------------------------------------

    def put(self, rows: Iterable[tuple[str, str]], firing: Iterable[tuple[str, str, str | None]] = (),
            now: float = 0.0) -> dict[str, int]:
        """Append ``(sink, payload)`` rows and apply firing-set changes ``(sink, fingerprint, payload|None)``
        (None removes) in one durable transaction. Returns the entries dropped per sink by the bound.
        """
        rows = list(rows)
        firing = list(firing)
        if not rows and not firing:
            return {}
        dropped: dict[str, int] = {}
        with self._lock:
            db = self._conn()
            counts = dict(self._pending)
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany("INSERT INTO entries (sink, created, payload) VALUES (?, ?, ?)",
                               [(s, now, p) for s, p in rows])
                for s, _ in rows:
                    counts[s] = counts.get(s, 0) + 1
                for s, n in counts.items():
                    excess = n - self.max_entries
                    if excess > 0:
                        db.execute("DELETE FROM entries WHERE id IN "
                                   "(SELECT id FROM entries WHERE sink = ? ORDER BY id LIMIT ?)", (s, excess))
                        dropped[s] = excess
                        counts[s] = self.max_entries
                for s, fp, p in firing:
                    if p is None:
                        db.execute("DELETE FROM firing WHERE sink = ? AND fingerprint = ?", (s, fp))
                    else:
                        db.execute("INSERT OR REPLACE INTO firing (sink, fingerprint, payload) VALUES (?, ?, ?)",
                                   (s, fp, p))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self._pending = counts
        for s in {s for s, _ in rows}:
            self._publish(s)
        if self.metrics is not None:
            for s, n in dropped.items():
                self.metrics.outbox_dropped.labels(sink=s).inc(n)
        for s, n in dropped.items():
            log.warning("outbox of sink %s is full (%d): dropped the %d oldest notifications",
                        s, self.max_entries, n)
        return dropped

    def ack(self, sink: str, ids: Sequence[int]) -> int:
        """Remove delivered (or given-up) entries of ``sink``; returns how many were still there."""
        if not ids:
            return 0
        with self._lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                n = 0
                for i in range(0, len(ids), 500):
                    chunk = list(ids[i:i + 500])
                    marks = ",".join("?" * len(chunk))
                    n += db.execute(f"DELETE FROM entries WHERE sink = ? AND id IN ({marks})",
                                    [sink, *chunk]).rowcount
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self._pending[sink] = max(0, self._pending.get(sink, 0) - n)
        self._publish(sink)
        return n

    # -- reads --------------------------------------------------------------------------------

    def peek(self, sink: str, limit: int = 500) -> list[Entry]:
        """The ``limit`` oldest entries of ``sink``, oldest first (they stay until acked)."""
        with self._lock:
            cur = self._conn().execute(
                "SELECT id, sink, created, payload FROM entries WHERE sink = ? ORDER BY id LIMIT ?", (sink, limit))
            return [Entry(*row) for row in cur.fetchall()]

    def firing(self, sink: str) -> list[str]:
        """Payloads of the alerts currently firing for ``sink`` (order unspecified)."""
        with self._lock:
            cur = self._conn().execute("SELECT payload FROM firing WHERE sink = ? ORDER BY fingerprint", (sink,))
            return [row[0] for row in cur.fetchall()]

    def pending(self, sink: str) -> int:
        """Entries of ``sink`` waiting for delivery."""
        with self._lock:
            return self._pending.get(sink, 0)

    def sinks(self) -> list[str]:
        """Sinks with entries waiting (including ones no longer configured)."""
        with self._lock:
            return sorted(s for s, n in self._pending.items() if n > 0)

    def _publish(self, sink: str) -> None:
        if self.metrics is not None:
            self.metrics.outbox_pending.labels(sink=sink).set(self.pending(sink))
