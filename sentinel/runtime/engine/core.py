"""The :class:`Engine`: streams, the round of named steps, history from a source, the read API.

Training (:mod:`.training`) and checkpoints (:mod:`.snapshot`) are functions over the engine;
the engine's methods of those names call them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ...alerts.state import FIRING, PENDING, AlertRules
from ...columns import Columns
from ...config import SentinelConfig
from ...detect.band import Band
from ...metrics import StreamColumns
from ...model.train import TrainJob, TrainResult
from ...types import AlertEvent, Sample, StreamKey
from ..views import ChartSeries, StreamView
from . import backfill, columnar, export, steps, training
from . import snapshot as _snapshot
from .group import Group
from .training import alert_levels, train_settings

REJECT_REASONS = ("out_of_order", "duplicate", "non_finite", "no_values", "max_streams", "bad_fields",
                  "max_fields")
SKIPPED = "replayed"  # not a rejection: a sample the restored fuzzy checkpoint holds (.fuzzy), seen again
_INF = float("inf")


@dataclass
class TickOutput:
    """Per input sample (same order): verdicts; plus the alert events of this call."""

    score: np.ndarray
    error: np.ndarray
    threshold: np.ndarray
    firing: np.ndarray
    ready: np.ndarray
    rejected: list[str | None]
    state: np.ndarray  # AlertState after the sample (0 ok, 1 pending, 2 firing, 3 resolved)
    events: list[AlertEvent] = field(default_factory=list)
    # the expected bands of the scored samples, per round: (sample indices, their Band in the
    # stream's field order); :meth:`band_of` reads one sample's
    bands: list[tuple[np.ndarray, Band]] = field(default_factory=list)

    def band_of(self) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Sample index -> (expected, lower, upper) ``[F]`` of every scored sample."""
        out: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for idx, b in self.bands:
            for j, i in enumerate(idx.tolist()):
                out[i] = (b.expected[j], b.lower[j], b.upper[j])
        return out

    def accepted(self) -> np.ndarray:
        """Which samples were scored (not rejected), as a bool array."""
        rej = self.rejected
        ok = np.ones(len(rej), bool)
        if rej.count(None) != len(rej):
            ok[[i for i, r in enumerate(rej) if r is not None]] = False
        return ok


class Engine:
    """Samples in, scores and alert transitions out. See :mod:`sentinel.runtime.engine`."""

    def __init__(self, cfg: SentinelConfig, device: str = "cpu"):
        self.cfg = cfg
        self.device = device
        self.groups: dict[int, Group] = {}
        self.index: dict[StreamKey, tuple[int, int]] = {}
        self.rejected: dict[str, int] = dict.fromkeys(REJECT_REASONS, 0)
        self.model_version = 0
        self.settings = train_settings(cfg)
        self.created: list[StreamKey] = []  # streams added since the caller last emptied this list
        self.feedback: list[dict] = []  # operator feedback, as plain data (sentinel.feedback), checkpointed
        # the columnar intake's series id -> slot caches, per series table (see .columnar)
        self._loc_caches: dict[int, columnar.LocCache] = {}
        self._loc_epoch = self._loc_epoch_seen = 0  # bumped when a stream is removed (slots are reused)
        self.pinned = 0  # fuzzy snapshots (.fuzzy) sharing the weights, not yet written: no training result
        self.fences: dict[int, np.ndarray] = {}  # per group: the restored fuzzy checkpoint's fences (.fuzzy)

    # -- streams ---------------------------------------------------------------
    def _group(self, F: int) -> Group:
        g = self.groups.get(F)
        if g is None:
            g = Group(F, self.cfg, self.device)
            # copy-on-write (D2): HTTP threads iterating the old dict never see it change size
            self.groups = {**self.groups, F: g}
        return g

    def _resolve(self, s: Sample) -> tuple[int, int] | None:
        loc = self.index.get(s.key)
        if loc is not None:
            return loc
        if len(self.index) >= self.cfg.streams.max_streams:
            return None
        F = len(s.fields)
        slot = self._group(F).add(s.key, s.fields)
        if F in self.fences and slot < len(self.fences[F]):  # a freed slot's new stream: not in the checkpoint
            self.fences[F][slot] = _INF
        self.index[s.key] = (F, slot)
        self.created.append(s.key)
        return F, slot

    def remove_stream(self, key: StreamKey) -> bool:
        loc = self.index.pop(key, None)
        if loc is None:
            return False
        self._loc_epoch += 1
        self.groups[loc[0]].remove(loc[1])
        return True

    def stream_fields(self, key: StreamKey) -> tuple[str, ...]:
        """The stream's field names, in the order of its model (and of its expected band)."""
        loc = self.index.get(key)
        return () if loc is None else self.groups[loc[0]].fields[loc[1]]

    @property
    def n_streams(self) -> int:
        return len(self.index)

    # -- scoring ---------------------------------------------------------------
    def process(self, samples: Sequence[Sample]) -> TickOutput:
        """Score ``samples`` in arrival order (a stream's samples in one call are applied in turn).

        ``samples``: a list of :class:`~sentinel.types.Sample`, or :class:`~sentinel.columns.Columns`
        (scored from the arrays; the same verdicts, rejections and events as the list of the same samples).
        """
        n = len(samples)
        out = TickOutput(np.zeros(n), np.full(n, np.nan), np.full(n, np.nan), np.zeros(n, bool),
                         np.zeros(n, bool), [None] * n, np.zeros(n, np.int8))
        if isinstance(samples, Columns):
            rounds = columnar.rounds(self, samples, out.rejected)
            if rounds is not None:
                for rF, ridx, rslots, rts, rv in rounds:
                    self._round(self.groups[rF], ridx, rslots, rts, rv, out)
                self._count_rejected(out)
                return out
            samples = list(samples)  # a stream to create: the object path, in arrival order
        # bucket by (group, round): round r holds each stream's r-th sample of this call
        buckets: dict[tuple[int, int], list[int]] = {}
        seen: dict[tuple[int, int], int] = {}
        locs: list[tuple[int, int] | None] = [None] * n
        vals: list[tuple[float, ...] | None] = [None] * n
        index = self.index
        max_fields = self.cfg.streams.max_fields
        for i, s in enumerate(samples):
            v = s.values  # plain-Python checks: far cheaper per sample than numpy calls
            if not v or all(x != x for x in v):
                out.rejected[i] = "no_values"  # checked before the key: a rejected sample creates no stream
                continue
            if any(x == _INF or x == -_INF for x in v):
                out.rejected[i] = "non_finite"
                continue
            if len(v) > max_fields:  # D4: a group per field count, each slot [history, F]: bound F
                out.rejected[i] = "max_fields"
                continue
            loc = index.get(s.key) or self._resolve(s)
            if loc is None:
                out.rejected[i] = "max_streams"
                continue
            want = self.groups[loc[0]].fields[loc[1]]
            if s.fields != want:
                if len(s.fields) != len(want) or set(s.fields) != set(want):
                    out.rejected[i] = "bad_fields"
                    continue
                pos = {f: j for j, f in enumerate(s.fields)}
                v = tuple(v[pos[f]] for f in want)
            r = seen.get(loc, 0)
            seen[loc] = r + 1
            buckets.setdefault((loc[0], r), []).append(i)
            locs[i], vals[i] = loc, v
        for (F, _r), idx in sorted(buckets.items(), key=lambda kv: kv[0][1]):
            self._round(self.groups[F], np.array(idx), np.array([locs[i][1] for i in idx]),  # type: ignore[index]
                        np.array([samples[i].ts for i in idx], dtype=np.float64),
                        np.array([vals[i] for i in idx], dtype=np.float64).reshape(len(idx), F), out)
        self._count_rejected(out)
        return out

    def _count_rejected(self, out: TickOutput) -> None:
        if out.rejected.count(None) != len(out.rejected):
            for reason in out.rejected:
                if reason is not None and reason != SKIPPED:
                    self.rejected[reason] += 1

    def _round(self, g: Group, idx: np.ndarray, slots: np.ndarray, ts: np.ndarray, v: np.ndarray,
               out: TickOutput) -> None:
        """One sample each of some streams of ``g``, through the steps of :mod:`.steps` in turn."""
        cfg = self.cfg
        idx, slots, ts, v = steps.validate(g, idx, slots, ts, v, out.rejected, self.fences.get(g.F))
        if len(slots) == 0:
            return
        ix = steps.span(slots, is_sorted=True)  # validate left the slots sorted
        ready = steps.gaps(g, slots, ts, cfg.streams.max_gap_intervals, cfg.streams.rewarm_samples, ix)
        pos = steps.append_history(g, slots, ts, v, ix)
        n = len(slots)
        r = np.flatnonzero(ready)
        every = len(r) == n  # every stream ready (the usual tick): its rows as they are, no gathers
        score = np.zeros(n)
        err = np.full(n, np.nan)
        thr = np.full(n, np.nan)
        bnd = None
        if len(r):
            rs, vr, rix = (slots, v, ix) if every else (slots[r], v[r], None)
            pre = steps.expect(g, rs)
            e, fe, alerting = steps.model(g, rs, vr)
            lv = steps.level(g, rs, vr, pre, alerting, rix)
            sc, th = steps.score(g, rs, e, fe, alerting, cfg.detect.score_decades, lv, rix)
            if every:
                score, thr, err = sc, np.asarray(th, np.float64), e
            else:
                score[r], thr[r], err[r] = sc, th, e
            bnd = steps.band(g, pre, vr, fe, thr if every else thr[r])
            out.bands.append((idx if every else idx[r], bnd))
        steps.stuck(g, slots, v, r, score, ix)
        transitions, st = steps.alert(g, slots, ts, pos, score, cfg.alerts.relearn_after)
        cpos = steps.chart_pos(g, ix)
        steps.record(g, slots, score, err, thr, st, ix, cpos)
        steps.record_band(g, slots, r, bnd, ix, cpos)
        oix = steps.span(idx)  # the batch's rows, as a slice when the round holds all of them in order
        out.score[oix], out.error[oix], out.threshold[oix] = score, err, thr
        out.firing[oix] = st == FIRING
        out.state[oix] = st
        out.ready[oix] = ready
        if transitions:
            for tr in transitions:
                j = int(np.searchsorted(slots, tr.slot))  # validate left the slots sorted
                out.events.append(steps.event(g, tr, score[j], err[j], thr[j], cfg.alerts.enter, cfg.alerts.severity))

    # -- history from a source -------------------------------------------------
    def load_history(self, samples: Iterable[Sample], create: bool = True) -> int:
        """Merge a source's historical samples into warming streams' buffers, without scoring them.

        Warm-up from a source's history query: at a fresh start for every stream (``create``
        adds the streams it has not seen), and for a stream first seen live, whose history up
        to its first live sample goes in front of what it holds — either way it trains at once
        instead of waiting for ``min_history`` live samples. Per stream, timestamps it already
        holds are skipped and the newest ``history_size`` samples are kept, in time order.
        Streams that are ready or training are left alone. Returns the samples taken.
        """
        return backfill.load_history(self, samples, create)

    # -- training (see .training) -------------------------------------------------
    def due_training(self, now: float, *, clocks: Mapping[StreamKey, float] | None = None,
                     force: Collection[StreamKey] = ()) -> list[TrainJob]:
        """Jobs for streams due a first training or a retrain: :func:`.training.due_training`."""
        return training.due_training(self, now, clocks=clocks, force=force)

    def apply_training(self, job: TrainJob, res: TrainResult, now: float,
                       clocks: Mapping[StreamKey, float] | None = None) -> dict[str, int]:
        """Swap in accepted weights and recalibrate: :func:`.training.apply_training`. Returns counts.
        ``clocks``: each stream's own time of training (a fleet replay), instead of ``now``.
        Refused (RuntimeError) while a fuzzy checkpoint shares the weights (:attr:`pinned`)."""
        if self.pinned:
            raise RuntimeError("a training result while a checkpoint shares the weights: apply it after the write")
        return training.apply_training(self, job, res, now, clocks)

    # -- views: the engine's read API (nobody outside the engine touches Group.a) -----------
    def iter_streams(self) -> Iterator[tuple[Group, int, StreamKey]]:
        for g in self.groups.values():
            for slot in np.flatnonzero(g.a["alive"][: g.capacity]):
                key = g.keys[slot]
                if key is not None:
                    yield g, int(slot), key

    def _view(self, g: Group, slot: int, key: StreamKey) -> StreamView:
        a, al = g.a, g.alerts.a
        return StreamView(key, g.fields[slot], bool(a["ready"][slot]), int(al["state"][slot]),
                          float(a["score"][slot]), float(a["error"][slot]), float(a["threshold"][slot]),
                          int(a["version"][slot]), float(a["last_ts"][slot]), int(al["fired"][slot]),
                          tuple(a["exp"][slot].tolist()), tuple(a["lo"][slot].tolist()), tuple(a["hi"][slot].tolist()))

    def stream_views(self) -> Iterator[StreamView]:
        """Every stream as of its last sample."""
        for g, slot, key in self.iter_streams():
            yield self._view(g, slot, key)

    def stream_columns(self, mode: str = "all") -> list[StreamColumns]:
        """The exported per-stream numbers as arrays, one chunk per group (``mode``: all | non_ok | none):
        :func:`.export.stream_columns`."""
        return export.stream_columns(self, mode)

    def stream_view(self, key: StreamKey) -> StreamView | None:
        loc = self.index.get(key)
        return None if loc is None else self._view(self.groups[loc[0]], loc[1], key)

    def chart_series(self, key: StreamKey) -> ChartSeries | None:
        """The stream's last ``Group.chart`` points: values from its history, verdicts from the chart rings."""
        loc = self.index.get(key)
        if loc is None:
            return None
        g, slot = self.groups[loc[0]], loc[1]
        total = int(g.a["hist_n"][slot])
        n = min(total, g.chart)
        ts, v, _fl = g.history(np.array([slot]), last=n)
        cp = (total - n + np.arange(n)) % g.chart
        exp = g.a["ch_exp"][slot, cp]  # the band's bounds are kept as float16 offsets from it
        return ChartSeries(g.fields[slot], ts[0].tolist(), v[0].tolist(), g.a["ch_score"][slot, cp].tolist(),
                           g.a["ch_thr"][slot, cp].tolist(), g.a["ch_err"][slot, cp].tolist(),
                           g.a["ch_state"][slot, cp].tolist(), exp.tolist(),
                           (exp - g.a["ch_lo"][slot, cp]).tolist(), (exp + g.a["ch_hi"][slot, cp]).tolist())

    def state_counts(self) -> dict[str, int]:
        """Streams per state. Safe from another thread (the gauge loop): a group growing meanwhile replaces
        its arrays one by one, so each is read once and all are cut to the shortest (the slots they share)."""
        counts = {"warming": 0, "ready": 0, "ok": 0, "pending": 0, "firing": 0}
        for g in self.groups.values():
            alive, ready, st = g.a["alive"], g.a["ready"], g.alerts.a["state"]
            C = min(len(alive), len(ready), len(st))
            alive, st = alive[:C], st[:C]
            ready = ready[:C] & alive
            counts["warming"] += int((alive & ~ready).sum())
            counts["ready"] += int(ready.sum())
            counts["pending"] += int((ready & (st == PENDING)).sum())
            counts["firing"] += int((ready & (st == FIRING)).sum())
        counts["ok"] = counts["ready"] - counts["pending"] - counts["firing"]
        return counts

    def take_created(self) -> list[StreamKey]:
        """The streams added since the last call (live samples or history), oldest first."""
        out, self.created = self.created, []
        return out

    def set_trained_at(self, t: float) -> None:
        """Mark every stream as trained at ``t`` (``-inf``: every ready stream is due a retrain now)."""
        for g in self.groups.values():
            g.a["trained_at"][:] = t

    def release_job(self, job: TrainJob) -> None:
        """A job that will not come back (its training failed): its streams may be scheduled again."""
        tag = job.tag
        assert isinstance(tag, dict)
        self.groups[tag["F"]].a["training"][np.asarray(tag["slots"], dtype=np.int64)] = False

    def reconfigure(self, cfg: SentinelConfig) -> None:
        """Apply a reloaded config's live sections: train settings, alert rules, threshold risk.

        The caller (:mod:`sentinel.runtime.reload`) decides which sections may change live and
        passes a config whose other sections are the running ones.
        """
        self.cfg = cfg
        self.settings = train_settings(cfg)
        rules = AlertRules.from_config(cfg.alerts)
        for g in self.groups.values():
            g.alerts.rules = rules
            g.thr.risk = cfg.detect.threshold.risk
            if g.lthr is not None:
                g.lthr.risk = cfg.detect.threshold.risk
            ready = np.flatnonzero(g.a["alive"][: g.capacity] & g.a["ready"][: g.capacity])
            if cfg.alerts.false_alerts_per_day is None:  # back to the rules' own levels
                g.alerts.set_levels(ready, np.full(len(ready), np.nan))
            else:  # per-stream levels follow the new budget and enter level
                alert_levels(cfg, g, ready)

    # -- checkpoints (see .snapshot) ----------------------------------------------
    def snapshot(self) -> tuple[dict, dict[str, torch.Tensor]]:
        """Everything needed to resume: ``(meta as plain data, tensors)``."""
        return _snapshot.snapshot(self)

    def restore(self, meta: dict, tensors: dict[str, torch.Tensor]) -> None:
        """Load a snapshot into this (fresh) engine. Raises ValueError when it does not fit the config."""
        _snapshot.restore(self, meta, tensors)
