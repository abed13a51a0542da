"""Ingest workers (``server.ingest_workers``): parse line-protocol bodies in child processes.

The daemon's event loop and its scoring thread share one interpreter lock; a body parsed on
the loop holds it for milliseconds while the scoring thread waits. With ``N > 0`` workers
(:mod:`.parseworker`, ``python -m sentinel.sources.parseworker`` on pipes), a receiver sends
each body to a worker and gets the columns back, so parse and score run on two cores.

What stays the same as parsing in-process (``ingest_workers: 0``):

* **The result.** A worker runs only the columnar path (:mod:`.bulk`) on a replica of the
  selector's table, kept in step by the table's event log (:attr:`Bulk.log
  <sentinel.sources.bulk.Bulk.log>`) sent with each job. Whatever that path does not take
  (a new head, quotes, a bad line, invalid UTF-8) comes back ``None`` and is parsed
  in-process, at the body's turn, so the selector's state changes in the order bodies arrived.
  A result made from a table that was replaced meanwhile (another generation) is dropped
  and the body parsed in-process too.
* **The order.** The receiver hands bodies on in the order they were read
  (:class:`Turns`), whatever order the workers answer in.
* **Durability.** The body stays in the receiver until it is handed on; a worker that dies
  (EOF on its stdout) or does not answer within ``job_timeout`` (killed) makes every body it
  held be parsed in-process, and is started again (logged, counted in
  ``sentinel_task_restarts_total{task="ingest-worker"}``). Nothing is acknowledged before
  it is logged and handed on, exactly as without workers.
* **Shutdown.** :meth:`ParsePool.close` closes the workers' stdin (they exit on EOF), waits,
  and kills what is left; a worker whose daemon died sees EOF too.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import pickle
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..columns import Columns
from .bulk import Bulk
from .parseworker import frame

log = logging.getLogger("sentinel.ingest")
_LEN = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class Parsed:
    """A worker's columns for one body, of the table generation ``generation``."""

    generation: int
    sid: np.ndarray | None
    ts: np.ndarray | None
    values: np.ndarray | None
    rejected: dict[str, int]
    lines: int
    max_ts_ns: int

    def columns(self, bulk: Bulk) -> Columns | None:
        """The columns over ``bulk``'s table; None when none were kept (or the table was replaced)."""
        if self.sid is None or self.generation != bulk.generation:
            return None
        assert self.ts is not None and self.values is not None
        return Columns(bulk.table, self.sid, self.ts, self.values)


@dataclass(eq=False)
class _Worker:
    proc: asyncio.subprocess.Process
    jobs: dict[int, asyncio.Future[Parsed | None]] = field(default_factory=dict)
    synced: dict[int, tuple[int, int]] = field(default_factory=dict)  # channel -> (generation, events sent)
    ready: bool = False
    reader: asyncio.Task | None = None


class ParsePool:
    """``n`` ingest workers. :meth:`submit` never raises: a body no worker can take resolves to None."""

    def __init__(self, n: int, *, on_restart: Callable[[], None] | None = None, job_timeout: float = 30.0,
                 python: str = sys.executable, env: dict[str, str] | None = None):
        self.n = n
        self.on_restart = on_restart
        self.job_timeout = job_timeout
        self.python = python
        self.env = env
        self.workers: list[_Worker] = []
        self.restarts = 0
        self.fallbacks = 0  # bodies a worker did not answer (died, timed out, not ready yet)
        self._ids = itertools.count(1)
        self._closing = False
        self._spawning: set[asyncio.Task] = set()
        self._channels: dict[int, Bulk] = {}

    # -- lifecycle -------------------------------------------------------------------
    async def start(self, wait: float = 30.0) -> None:
        """Start the workers and wait (at most ``wait`` s) until each said it is ready."""
        await asyncio.gather(*(self._spawn() for _ in range(self.n)))
        deadline = asyncio.get_running_loop().time() + wait
        while self.workers and not all(w.ready for w in self.workers) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)

    async def _spawn(self, delay: float = 0.0) -> None:
        if delay:
            await asyncio.sleep(delay)
        if self._closing:
            return
        try:
            proc = await asyncio.create_subprocess_exec(
                self.python, "-m", "sentinel.sources.parseworker", stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, env=self.env)
        except OSError:
            log.exception("cannot start an ingest worker; bodies are parsed in-process")
            return
        w = _Worker(proc)
        self.workers.append(w)
        w.reader = asyncio.create_task(self._read(w), name="ingest-worker-reader")

    @property
    def pids(self) -> list[int]:
        return [w.proc.pid for w in self.workers]

    async def close(self, timeout: float = 5.0) -> None:
        """Stop every worker (EOF on stdin, then kill after ``timeout``); bodies in flight resolve to None."""
        self._closing = True
        for t in list(self._spawning):
            t.cancel()
        workers, self.workers = self.workers, []
        for w in workers:
            if w.proc.stdin is not None:
                w.proc.stdin.close()
        for w in workers:
            try:
                await asyncio.wait_for(w.proc.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.kill()
                await w.proc.wait()
            if w.reader is not None:
                w.reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await w.reader
            self._fail(w)

    # -- jobs --------------------------------------------------------------------------
    def channel(self, bulk: Bulk) -> int:
        """An id for ``bulk`` (one receiver's columnar path) in the jobs' frames."""
        ch = len(self._channels) + 1
        self._channels[ch] = bulk
        return ch

    def submit(self, ch: int, body: bytes, mult: int, now_ns: int, lo: int, hi: int, max_fields: int
               ) -> asyncio.Future[Parsed | None]:
        """Send ``body`` to the least busy ready worker; the future gives its columns, or None (parse in-process)."""
        fut: asyncio.Future[Parsed | None] = asyncio.get_running_loop().create_future()
        live = [w for w in self.workers if w.ready and w.proc.returncode is None]
        if not live or self._closing:
            self.fallbacks += 1
            fut.set_result(None)
            return fut
        w = min(live, key=lambda x: len(x.jobs))
        bulk = self._channels[ch]
        gen, sent = w.synced.get(ch, (-1, 0))
        reset = gen != bulk.generation
        events = bulk.log[0 if reset else sent:]
        w.synced[ch] = (bulk.generation, len(bulk.log))
        job_id = next(self._ids)
        try:
            assert w.proc.stdin is not None
            w.proc.stdin.write(frame((job_id, ch, bulk.generation, reset, events, body, mult, now_ns, lo, hi,
                                      max_fields)))
        except (OSError, RuntimeError):  # its pipe is gone: the reader will see the EOF
            self.fallbacks += 1
            w.synced.pop(ch, None)
            fut.set_result(None)
            return fut
        w.jobs[job_id] = fut
        timer = asyncio.get_running_loop().call_later(self.job_timeout, self._overdue, w, job_id)
        fut.add_done_callback(lambda _f: timer.cancel())
        return fut

    def _overdue(self, w: _Worker, job_id: int) -> None:
        if job_id in w.jobs and w.proc.returncode is None:
            log.warning("ingest worker did not answer in time; killing it", extra={"pid": w.proc.pid,
                                                                                 "seconds": self.job_timeout})
            with contextlib.suppress(ProcessLookupError):
                w.proc.kill()

    async def _read(self, w: _Worker) -> None:
        out = w.proc.stdout
        assert out is not None
        try:
            while True:
                (n,) = _LEN.unpack(await out.readexactly(4))
                job_id, gen, res = pickle.loads(await out.readexactly(n))
                if res == "ready":
                    w.ready = True
                    continue
                fut = w.jobs.pop(job_id, None)
                if fut is None or fut.done():
                    continue
                fut.set_result(None if res is None else Parsed(gen, *res))
        except (asyncio.IncompleteReadError, ConnectionError, pickle.UnpicklingError, ValueError, TypeError):
            pass
        finally:
            self._lost(w)

    def _fail(self, w: _Worker) -> None:
        jobs, w.jobs = w.jobs, {}
        for fut in jobs.values():
            if not fut.done():
                self.fallbacks += 1
                fut.set_result(None)

    def _lost(self, w: _Worker) -> None:
        """``w``'s stdout ended: its bodies go in-process; a new worker replaces it (unless closing)."""
        self._fail(w)
        if self._closing or w not in self.workers:
            return
        self.workers.remove(w)
        if w.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                w.proc.kill()
        self.restarts += 1
        log.warning("ingest worker died; its bodies are parsed in-process and a new one is started",
                    extra={"pid": w.proc.pid, "returncode": w.proc.returncode, "restarts": self.restarts})
        if self.on_restart is not None:
            self.on_restart()
        t = asyncio.get_running_loop().create_task(self._spawn(delay=min(30.0, 0.05 * 2 ** min(self.restarts, 10))))
        self._spawning.add(t)
        t.add_done_callback(self._spawning.discard)


class Turns:
    """Hands out tickets in arrival order and lets their holders through one at a time, in that order.

    ``take()`` when a body is read; ``await wait(t)`` before handing it on; ``done(t)`` after
    (also when giving up, so a ticket never blocks the ones behind it).
    """

    def __init__(self) -> None:
        self._next = 0
        self._serving = 0
        self._done: set[int] = set()
        self._changed = asyncio.Event()

    def take(self) -> int:
        t = self._next
        self._next += 1
        return t

    async def wait(self, t: int) -> None:
        while self._serving != t:
            self._changed.clear()
            await self._changed.wait()

    def done(self, t: int) -> None:
        self._done.add(t)
        while self._serving in self._done:
            self._done.discard(self._serving)
            self._serving += 1
        self._changed.set()


async def start_pool(n: int, plugins: list, on_restart: Callable[[], None] | None = None) -> ParsePool | None:
    """``n`` workers for the push receivers among ``plugins`` (None when ``n`` is 0 or none pushes)."""
    receivers = [r for r in (getattr(p, "receiver", None) for p in plugins) if r is not None and hasattr(r, "use_pool")]
    if n <= 0 or not receivers:
        return None
    pool = ParsePool(n, on_restart=on_restart)
    await pool.start(wait=0.0)  # no wait: until a worker says it is ready, bodies are parsed in-process
    for r in receivers:
        r.use_pool(pool)
    return pool
