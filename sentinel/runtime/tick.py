"""The tick: one scoring step on the engine thread, and the fan-out of what it produced.

::

    batches (from the ingest queue)
      -> shard filter -> Engine.process (scores, alert transitions)
      -> metrics (ingested, rejected by reason, lag, batch seconds, transitions)
      -> notifier.submit(events)      (durable outbox; no network)
      -> write-back submit(records)   (bounded buffers; no network)
      -> cursors (what a restart resumes from) and the streams first seen (their history is fetched)

It runs only on :class:`~sentinel.runtime.engine_thread.EngineThread`; it never waits on a sink.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .. import failpoints
from ..columns import join, newest_ts
from ..metrics import Metrics
from ..types import AlertEvent, Sample, ScoreRecord, SourceBatch, StreamKey
from .engine import SKIPPED, Engine
from .shard import Shard

log = logging.getLogger("sentinel")


class Submit(Protocol):
    def submit(self, items: Sequence[Any]) -> None: ...


@dataclass
class TickResult:
    events: list[AlertEvent] = field(default_factory=list)
    # per source, the streams this tick created, with their first timestamp
    new_streams: list[tuple[str, dict[StreamKey, float]]] = field(default_factory=list)


class Tick:
    """``tick(batches)`` scores ``batches`` and hands the output on. See the module docstring."""

    def __init__(self, engine: Engine, metrics: Metrics, *, shard: Shard, notifier: Submit | None,
                 writebacks: Sequence[Submit] = (), clock: Callable[[], float] = time.time,
                 cursors: dict[str, dict | None] | None = None, durable: Any = None):
        self.engine = engine
        self.metrics = metrics
        self.shard = shard
        self.notifier = notifier
        self.writebacks = list(writebacks)
        self.clock = clock
        self.cursors: dict[str, dict | None] = dict(cursors or {})
        self.durable = durable  # Durability: told which write-ahead log records are scored

    def __call__(self, batches: list[SourceBatch]) -> TickResult:
        t0 = time.perf_counter()
        m = self.metrics
        parts: list[Sequence[Sample]] = []
        spans: list[tuple[str, int, int]] = []  # (source, first, end) of each batch's samples
        n = 0
        for b in batches:
            ss = b.samples if self.shard.shard is None else self.shard.keep(b.samples)
            spans.append((b.source, n, n + len(ss)))
            parts.append(ss)
            n += len(ss)
            for reason, cnt in (b.rejected or {}).items():
                m.samples_rejected.labels(reason).inc(cnt)
        samples = join(parts)  # columns when every batch is columns of one series table
        out = self.engine.process(samples) if samples else None
        if failpoints.ARMED:
            failpoints.hit("engine.tick")
        if self.durable is not None:
            self.durable.scored(batches)
        now = self.clock()
        for b in batches:  # the cursor of the last scored batch is what a restart resumes from
            if b.cursor is not None:
                self.cursors[b.source] = b.cursor
        res = TickResult()
        if out is None:
            return res
        res.new_streams = self._new_streams(samples, spans)
        rej: dict[str, int] = {}
        if out.rejected.count(None) != len(out.rejected):
            for r in out.rejected:
                if r is not None and r != SKIPPED:  # already in the checkpoint: not a rejection
                    rej[r] = rej.get(r, 0) + 1
        for r, c in rej.items():
            m.samples_rejected.labels(r).inc(c)
        ok = out.accepted()
        for src, a, e in spans:  # ingested = accepted for scoring; rejects are counted by reason above
            m.samples_ingested.labels(src).inc(int(ok[a:e].sum()))
        newest = newest_ts(samples, now)
        for b in batches:
            m.ingest_lag_seconds.labels(b.source).set(max(0.0, now - newest))
        m.score_batch_seconds.observe(time.perf_counter() - t0)
        if out.events:
            assert self.notifier is not None
            self.notifier.submit(out.events)
            for ev in out.events:
                m.alert_transitions.labels(ev.status).inc()
        if self.writebacks:
            bands = out.band_of()
            recs = [ScoreRecord(s.key, s.ts, s.values, float(out.score[i]), float(out.error[i]),
                                float(out.threshold[i]), int(out.state[i]), bool(out.ready[i]),
                                *self._band(s.key, bands.get(i)))
                    for i, s in enumerate(samples) if out.rejected[i] is None]
            for wb in self.writebacks:
                wb.submit(recs)
        res.events = out.events
        return res

    def _band(self, key: StreamKey, b: tuple | None) -> tuple[tuple, ...]:
        """``(band_fields, expected, lower, upper)`` of a write-back record (empty when not scored)."""
        if b is None:
            return ((), (), (), ())
        return (self.engine.stream_fields(key), *(tuple(x.tolist()) for x in b))

    def _new_streams(self, samples: Sequence[Sample], spans: list[tuple[str, int, int]]
                     ) -> list[tuple[str, dict[StreamKey, float]]]:
        created = self.engine.take_created()
        if not created:
            return []
        new = set(created)
        out = []
        for src_name, a, e in spans:
            firsts: dict[StreamKey, float] = {}
            for smp in samples[a:e]:
                if smp.key in new and smp.key not in firsts:
                    firsts[smp.key] = smp.ts
            if firsts:
                out.append((src_name, firsts))
        return out


def log_event(ev: AlertEvent) -> None:
    """One JSON log line per alert transition."""
    top = ",".join(f"{f}={s:.2f}" for f, s in ev.top_fields[:3])
    log.warning(f"alert {ev.status}: {ev.key}", extra={
        "alert": ev.status, "stream": str(ev.key), "score": round(ev.score, 4),
        "threshold": round(ev.threshold, 4) if math.isfinite(ev.threshold) else None,
        "error": round(ev.error, 4), "severity": ev.severity, "top_fields": top,
        "starts_at": ev.starts_at})


async def run_ticks(queue: Any, tick: Tick, call: Callable[..., Any],
                    on_new_streams: Callable[[str, dict[StreamKey, float]], None]) -> None:
    """Forever: take what the ingest queue holds, tick it on the engine thread, log and hand on."""
    while True:
        batches = await queue.take()
        try:
            res = await call(tick, batches)
        except Exception:
            log.exception("scoring failed; batch skipped")
            res = TickResult()
        finally:
            queue.done(batches)
        for ev in res.events:
            log_event(ev)
        for name, firsts in res.new_streams:
            on_new_streams(name, firsts)
