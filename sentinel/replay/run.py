"""A fleet of series through ONE :class:`~sentinel.runtime.engine.Engine`, batched.

Each series is a stream of the engine. History (``--history`` and the first
``--train-rows`` rows) goes in through :meth:`Engine.load_history`, as the daemon's
history query does, and every stream that got some trains in one batched job before
scoring starts. Then the series are fed in lock step: call ``r`` of
:meth:`Engine.process` carries row ``r`` of every series, and after it
:meth:`Engine.due_training` is asked about the streams that just took a sample, each at
its own time: every file keeps its own clock (files recorded on different days still
batch), and a stream sees exactly the sequence of samples, training points and clock it
would see replayed alone. Streams due in the same call train together in one job.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..config import SentinelConfig
from ..errors import InputError
from ..model.train import TrainJob, train
from ..runtime.engine import Engine, stream_seed
from ..types import Sample, StreamKey
from .reader import Series


@dataclass
class StreamResult:
    """One series' verdicts, row by row (rows not scored: score 0, is_anomaly 0, error/threshold NaN)."""

    series: Series
    score: np.ndarray
    is_anomaly: np.ndarray
    error: np.ndarray
    threshold: np.ndarray
    ts: np.ndarray          # epoch seconds of rows the engine took (NaN for bad rows)
    values: np.ndarray      # [N, F] of those rows (NaN for bad rows)
    history_rows: int = 0   # leading rows used as history (--train-rows), never scored
    history_samples: int = 0  # samples the stream warmed up on before scoring (--history + --train-rows)
    bad: dict[str, int] = field(default_factory=dict)
    trainings: int = 0
    first_train: dict | None = None  # {"row", "ts", "samples", "seconds", "accepted"}
    seconds: float = 0.0
    # the expected value and band per row and field, in the series' units ([N, F], NaN: not scored)
    expected: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    lower: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    upper: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))

    @property
    def timestamps(self) -> list[str]:
        return self.series.stamps

    @classmethod
    def empty(cls, s: Series) -> StreamResult:
        n = len(s)
        F = len(s.fields)
        return cls(s, np.zeros(n), np.zeros(n, dtype=np.int8), np.full(n, np.nan), np.full(n, np.nan),
                   np.full(n, np.nan), np.full((n, F), np.nan),
                   expected=np.full((n, F), np.nan), lower=np.full((n, F), np.nan), upper=np.full((n, F), np.nan))

    def count(self, reason: str) -> None:
        self.bad[reason] = self.bad.get(reason, 0) + 1


@dataclass
class FleetResult:
    streams: list[StreamResult]
    seconds: float = 0.0
    jobs: int = 0            # batched trainings (one job trains many streams)
    train_seconds: float = 0.0
    rows: int = 0

    @property
    def trainings(self) -> int:
        return sum(s.trainings for s in self.streams)


class Progress:
    """``replay: rows/total (pct) rows/s, training ...`` on stderr: redrawn on a terminal, every 5 s elsewhere."""

    def __init__(self, total: int, enabled: bool, stream=sys.stderr):
        self.total, self.enabled, self.stream = total, enabled, stream
        self.interactive = enabled and stream.isatty()
        self.last = 0.0
        self.t0 = time.monotonic()
        self.done = 0
        self.shown = -1

    def __call__(self, done: int | None = None, note: str = "", force: bool = False) -> None:
        if done is not None:
            self.done = done
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self.last < (0.2 if self.interactive else 5.0) and self.done < self.total:
            return
        if self.done == self.shown and not note:
            return
        self.last, self.shown = now, self.done
        pct = 100.0 * self.done / max(self.total, 1)
        rate = self.done / max(now - self.t0, 1e-9)
        msg = f"replay: {self.done}/{self.total} rows ({pct:5.1f}%) {rate:,.0f} rows/s {note}".rstrip()
        if self.interactive:
            self.stream.write("\r" + msg.ljust(100))
            if self.done >= self.total and not note:
                self.stream.write("\n")
        else:
            self.stream.write(msg + "\n")
        self.stream.flush()


def _history_samples(s: Series, rows: range) -> list[Sample]:
    vals = s.values.tolist()
    return [Sample(s.key, float(s.ts[i]), s.fields, tuple(vals[i])) for i in rows if s.bad[i] is None]


class _Run:
    def __init__(self, cfg: SentinelConfig, series: Sequence[Series], prog: Progress):
        self.cfg, self.prog = cfg, prog
        self.engine = Engine(cfg, device="cpu")
        self.res = [StreamResult.empty(s) for s in series]
        self.by_key = {s.key: r for s, r in zip(series, self.res, strict=True)}
        self.fleet = FleetResult(self.res)
        # Initial weights from the train seed alone, not from the stream's name: a file gives the
        # same result alone or in a fleet, under any name (the one-file key of earlier versions).
        self.seed = stream_seed(StreamKey("replay"), cfg.train.seed)

    def train(self, jobs: list[TrainJob], clocks: dict[StreamKey, float], row: int | None) -> None:
        e = self.engine
        for job in jobs:
            tag = job.tag
            assert isinstance(tag, dict)
            keys = [StreamKey.parse(k) for k in tag["keys"]]
            label = f"training {len(keys)} stream{'s' if len(keys) > 1 else ''}"

            def cb(epoch: int, epochs: int, val: float, label: str = label) -> None:
                self.prog(note=f"{label}, epoch {epoch}/{epochs}")

            self.prog(note=label, force=True)
            job.seeds = [self.seed] * len(job.seeds)
            torch.set_num_threads(max(1, self.cfg.train.threads))  # as the daemon's trainer
            try:
                r = train(job, e.settings, device="cpu", progress=cb)
            finally:
                torch.set_num_threads(max(1, self.cfg.model.score_threads))
            now = max(clocks[k] for k in keys)
            e.apply_training(job, r, now, clocks)  # each stream's own clock, not the batch's latest
            g = e.groups[tag["F"]]
            for k, n, ok in zip(keys, tag["hist_n"], r.accepted, strict=True):
                sr = self.by_key[k]
                sr.trainings += 1
                if sr.first_train is None:
                    sr.first_train = {"row": row, "ts": clocks[k], "samples": int(min(n, g.cap)),
                                      "seconds": r.seconds, "streams": len(keys), "accepted": bool(ok)}
            self.fleet.jobs += 1
            self.fleet.train_seconds += r.seconds

    def history(self, history: dict[StreamKey, Series], train_rows: int) -> None:
        samples: list[Sample] = []
        clocks: dict[StreamKey, float] = {}
        for sr in self.res:
            s = sr.series
            n0 = len(samples)
            h = history.get(s.key)
            if h is not None:
                samples += [Sample(s.key, smp.ts, s.fields, smp.values) for smp in _history_samples(h, range(len(h)))]
            k = min(train_rows, len(s))
            sr.history_rows = k
            for i in range(k):
                if s.bad[i] is not None:
                    sr.count(s.bad[i])  # type: ignore[arg-type]
            samples += _history_samples(s, range(k))
            if len(samples) > n0:
                last = max(smp.ts for smp in samples[n0:])
                first_input = next((float(s.ts[i]) for i in range(k, len(s)) if s.bad[i] is None), math.inf)
                if h is not None and last >= first_input and k == 0:
                    raise InputError(f"{h.path}: history ends at {last:.0f}, not before the input {s.path} "
                                     f"starts ({first_input:.0f})")
                clocks[s.key] = last
            sr.history_samples = len(samples) - n0
        if not samples:
            return
        self.engine.load_history(samples)
        self.train(self.engine.due_training(max(clocks.values()), clocks=clocks, force=list(clocks)), clocks, None)

    def score(self, train_rows: int) -> None:
        e, res = self.engine, self.res
        vals = [sr.series.values.tolist() for sr in res]
        done = sum(sr.history_rows for sr in res)
        R = max((len(sr.series) - sr.history_rows for sr in res), default=0)
        for r in range(R):
            batch: list[Sample] = []
            who: list[tuple[StreamResult, int]] = []
            for sr, v in zip(res, vals, strict=True):
                s, i = sr.series, sr.history_rows + r
                if i >= len(s):
                    continue
                done += 1
                if s.bad[i] is not None:
                    sr.count(s.bad[i])  # type: ignore[arg-type]
                    continue
                batch.append(Sample(s.key, float(s.ts[i]), s.fields, tuple(v[i])))
                who.append((sr, i))
            if not batch:
                continue
            out = e.process(batch)
            bands = out.band_of()
            clocks: dict[StreamKey, float] = {}
            for j, (sr, i) in enumerate(who):
                reason = out.rejected[j]
                if reason is not None:
                    sr.count(reason)
                    continue
                t = batch[j].ts
                sr.ts[i], sr.values[i] = t, sr.series.values[i]
                sr.score[i], sr.is_anomaly[i] = out.score[j], int(out.firing[j])
                sr.error[i], sr.threshold[i] = out.error[j], out.threshold[j]
                if j in bands:
                    sr.expected[i], sr.lower[i], sr.upper[i] = bands[j]
                clocks[batch[j].key] = t
            if clocks:
                jobs = e.due_training(max(clocks.values()), clocks=clocks)
                if jobs:
                    self.train(jobs, clocks, r)
            self.prog(done)


def replay_fleet(cfg: SentinelConfig, series: Sequence[Series], *, history: dict[StreamKey, Series] | None = None,
                 train_rows: int = 0, progress: bool = True) -> FleetResult:
    """Replay ``series`` as streams of one engine; ``history`` per stream key, ``train_rows`` leading rows each."""
    t0 = time.perf_counter()
    keys = [s.key for s in series]
    dup = {str(k) for k in keys if keys.count(k) > 1}
    if dup:
        raise InputError(f"two inputs map to the same stream {sorted(dup)}: give the files different names")
    # Replay's tensors are small: extra threads only spin (and crawl on a busy machine).
    torch.set_num_threads(max(1, cfg.model.score_threads))
    total = sum(len(s) for s in series)
    prog = Progress(total, progress)
    run = _Run(cfg, series, prog)
    run.history(history or {}, train_rows)
    run.score(train_rows)
    prog(total, force=True)
    run.fleet.rows = total
    run.fleet.seconds = time.perf_counter() - t0
    for sr in run.res:
        sr.seconds = run.fleet.seconds
    return run.fleet
