"""``sentinel train --publish``: train from history and publish one model version per partition.

Trainer side (:func:`publish`): history from the configured sources' history queries, or, when
they have none (push-only input), from the JetStream stream itself (the last
``streams.history_lookback`` of every partition); every stream with enough history is trained
in one batched run on ``model.device`` (``auto``: CUDA when present); then, per partition, the
trained parameters of its streams go to ``model/<version>/p<p>`` in the object store, and only
then is ``{"version": v}`` announced in the KV key ``model`` (a scorer never sees an announced
version with missing parts).

Scorer side (:func:`apply_published`, on the engine thread): the partition's streams that the
scorer holds take the published weights through the engine's training hand-off (a job for their
slots, a result carrying the published parameters): the hidden state is re-warmed by replaying
the stream's recent history through the new weights and the threshold recalibrated on those
errors, so the swap causes no alert burst. Streams the version does not cover keep their model.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from ..config import SentinelConfig
from ..errors import CheckpointError
from ..model.train import TrainResult
from ..types import Sample
from . import codec
from .js import Nats, connect, kv_get
from .models import KEY, model_object
from .partitions import partition_of

log = logging.getLogger("sentinel")

FORMAT = "sentinel-model"
VERSION = 1
PARAMS = ("W", "b", "D", "d", "mean", "std")


def dumps_model(version: int, partition: int, groups: dict[int, tuple[list[str], dict[str, torch.Tensor]]]) -> bytes:
    meta = {"version": version, "partition": partition, "groups": {str(F): keys for F, (keys, _) in groups.items()}}
    tensors = {f"g{F}.{k}": v.detach().cpu().contiguous() for F, (_, ts) in groups.items() for k, v in ts.items()}
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "version": VERSION, "meta": json.dumps(meta), "tensors": tensors}, buf)
    return buf.getvalue()


def loads_model(data: bytes) -> tuple[dict, dict[str, torch.Tensor]]:
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"published model unreadable ({type(e).__name__})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT or obj.get("version") != VERSION:
        raise CheckpointError("not a Sentinel published model of this format version")
    return json.loads(obj["meta"]), dict(obj["tensors"])


def apply_published(engine: Any, data: bytes, now: float) -> dict[str, int]:
    """On the engine thread: offer this engine's streams of the partition the published weights.

    Returns :meth:`Engine.apply_training`'s counts summed over the groups (``success``: streams
    that took the version; ``rejected``: streams whose champion did better on their history).
    """
    from ..model.train import challenge
    from ..runtime.engine.training import make_job, train_settings

    meta, tensors = loads_model(data)
    counts: dict[str, int] = {"success": 0, "rejected": 0}
    for Fs, keys in meta["groups"].items():
        F = int(Fs)
        g = engine.groups.get(F)
        if g is None:
            continue
        rows, slots = [], []
        for r, ks in enumerate(keys):
            loc = engine.index.get(_key(ks))
            if loc is not None and loc[0] == F and not g.a["training"][loc[1]]:
                rows.append(r)
                slots.append(loc[1])
        if not slots:
            continue
        job = make_job(engine.cfg, F, g, np.asarray(slots, dtype=np.int64))
        idx = torch.tensor(rows, dtype=torch.long)
        # float32 at the read: a model published from a bank of bfloat16 weights has no numpy dtype
        p = {k: tensors[f"g{F}.{k}"].index_select(0, idx).float().numpy() for k in PARAMS}
        weights = {k: p[k] for k in ("W", "b", "D", "d")}
        # Champion/challenger as for a local training: both scored on this scorer's own recent
        # history, and a stream keeps its weights where the published ones do worse.
        val, champion_val = challenge(job, weights, p["mean"], p["std"], train_settings(engine.cfg))
        res = TrainResult(params=weights, mean=p["mean"], std=p["std"], val_loss=val,
                          champion_val_loss=champion_val, epochs=0, seconds=0.0, tag=job.tag,
                          cond=tensors[f"g{F}.cond"].index_select(0, idx).numpy() if f"g{F}.cond" in tensors else None)
        c = engine.apply_training(job, res, now)
        for k in counts:
            counts[k] += int(c.get(k, 0))
    return counts


def _key(ks: str) -> Any:
    from ..types import StreamKey

    return StreamKey.parse(ks)


# -- the trainer ---------------------------------------------------------------------------------
async def stream_history(nats: Nats, since: float, limit_per_partition: int = 2_000_000) -> list[Sample]:
    """Every sample stored in the stream since ``since`` (epoch s), up to the last one at call time."""
    js, cfg = nats.js, nats.cfg
    info = await js.stream_info(cfg.stream)
    last = int(info.state.last_seq or 0)
    if last == 0:
        return []
    from datetime import UTC, datetime

    cc = ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.BY_START_TIME,
                        opt_start_time=datetime.fromtimestamp(max(since, 0.0), UTC),
                        filter_subject=f"{cfg.subject_prefix}.*", inactive_threshold=60.0)
    sub = await js.pull_subscribe("", stream=cfg.stream, config=cc)
    out: list[Sample] = []
    try:
        seq = 0
        while seq < last and len(out) < limit_per_partition * cfg.partitions:
            try:
                msgs = await sub.fetch(1000, timeout=2.0)
            except Exception:
                break  # nothing more within the bound
            for m in msgs:
                seq = m.metadata.sequence.stream
                if seq <= last:
                    out.extend(codec.decode(m.data))
    finally:
        await sub.unsubscribe()
    return out


async def publish(cfg: SentinelConfig, *, clock: Callable[[], float] = time.time,
                  say: Callable[[str], None] = lambda s: None) -> int:
    """Train and publish a model version; returns the version announced."""
    from ..metrics import Metrics
    from ..model.train import resolve_device
    from ..runtime.engine import Engine
    from ..runtime.factory import build_source
    from ..runtime.scheduler import TrainingScheduler

    nats = await connect(cfg.cluster, "sentinel-trainer")
    try:
        now = clock()
        since = now - cfg.streams.history_lookback if cfg.streams.history_lookback > 0 else 0.0
        engine = Engine(cfg, device="cpu")
        n = 0
        for sc in cfg.sources:
            samples = await build_source(sc, cfg, Metrics(), None).history(None, since, now)
            n += engine.load_history(samples)
        if n == 0:
            samples = await stream_history(nats, since)
            n = engine.load_history(sorted(samples, key=lambda s: s.ts))
        device = str(resolve_device(cfg.model.device))
        say(f"train --publish: {n} history samples, {engine.n_streams} streams, device {device}")
        engine.set_trained_at(-math.inf)
        counts = await asyncio.to_thread(TrainingScheduler(engine, device=device, clock=lambda: now).run_once_sync, now)
        say(f"train --publish: {counts}")
        e = await kv_get(nats.kv, KEY)
        version = (int(json.loads(e.value).get("version", 0)) if e is not None else 0) + 1
        P = cfg.cluster.partitions
        parts: dict[int, dict[int, tuple[list[str], dict[str, torch.Tensor]]]] = {}
        for F, g in engine.groups.items():
            slots = [s for s in range(g.capacity) if g.keys[s] is not None and g.a["ready"][s]]
            by: dict[int, list[int]] = {}
            for s in slots:
                by.setdefault(partition_of(str(g.keys[s]), P), []).append(s)
            for p, ss in by.items():
                arr = np.asarray(ss, dtype=np.int64)
                ps = g.bank.params(arr)
                ps["val_loss"] = torch.from_numpy(g.a["calib_err"][arr].astype(np.float64))
                parts.setdefault(p, {})[F] = ([str(g.keys[s]) for s in ss], ps)
        for p in range(P):
            await nats.objects.put(model_object(version, p), dumps_model(version, p, parts.get(p, {})))
        await nats.kv.put(KEY, json.dumps({"version": version, "at": clock(), "partitions": P,
                                           "streams": sum(len(k) for g in parts.values() for k, _ in g.values())
                                           }).encode())
        say(f"train --publish: model version {version} announced ({len(parts)} partitions with streams)")
        return version
    finally:
        await nats.close()
