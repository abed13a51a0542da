"""Checkpoints: everything an engine needs to resume, as plain data and tensors, and back.

:func:`snapshot` is taken in one go (the caller clones what it keeps); :mod:`.fuzzy` takes the same
snapshot in slot chunks between rounds, plus each slot's fence. :func:`restore` reads both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from ...types import StreamKey

if TYPE_CHECKING:
    from ...config import SentinelConfig
    from .core import Engine


def threshold_meta(cfg: SentinelConfig) -> dict:
    """The threshold settings the fitted state has the shape and meaning of (recorded in every checkpoint).

    >>> from sentinel.config import load_config_text
    >>> threshold_meta(load_config_text("detect: {threshold: {method: spot}}"))
    {'method': 'spot', 'depth': 0, 'max_peaks': 256}
    """
    th = cfg.detect.threshold
    spot = th.method in ("spot", "dspot")
    return {"method": th.method, "depth": th.depth if th.method == "dspot" else 0,
            "max_peaks": th.max_peaks if spot else 0}


def check_thresholds(meta: dict, cfg: SentinelConfig) -> None:
    """Raise ValueError naming the keys when a checkpoint's thresholds were fitted under other settings.

    Loading them anyway was silent (SPOT state read as DSPOT: a tail fitted on raw errors used on
    drift-removed ones) or a bare KeyError; a reload refuses the same change. Checkpoints written
    before this was recorded are not checked.
    """
    got, want = meta.get("threshold"), threshold_meta(cfg)
    if not isinstance(got, dict):
        return
    diff = [f"detect.threshold.{k} {got.get(k)!r} (the config has {v!r})" for k, v in want.items() if got.get(k) != v]
    if diff:
        raise ValueError("its thresholds were fitted with " + ", ".join(diff) + ": keep the checkpoint's "
                         "settings, or start without its state to change them")


def snapshot(engine: Engine) -> tuple[dict, dict[str, torch.Tensor]]:
    """Everything needed to resume: ``(meta as plain data, tensors)``."""
    meta: dict = {"model_version": engine.model_version, "rejected": dict(engine.rejected), "groups": {},
                  "dims": {}, "feedback": list(engine.feedback), "threshold": threshold_meta(engine.cfg)}
    tensors: dict[str, torch.Tensor] = {}
    for F, g in engine.groups.items():
        C = g.bank.capacity
        g._ensure(C)
        meta["groups"][str(F)] = {
            "capacity": C, "free": g.bank.free_slots(),
            "keys": [str(k) if k is not None else None for k in g.keys[:C]],
            "fields": [list(f) for f in g.fields[:C]],
        }
        meta["dims"][str(F)] = [g.bank.dims.fields, g.bank.dims.hidden, g.bank.dims.window, g.bank.dims.cell]
        for k, t in g.bank.t.items():
            tensors[f"g{F}.bank.{k}"] = t[:C]
        parts = [("a", g.a), ("thr", g.thr.snapshot()), ("alert", g.alerts.snapshot())]
        if g.lthr is not None:
            parts.append(("lthr", g.lthr.snapshot()))
        for prefix, arrays in parts:
            for k, arr in arrays.items():
                tensors[f"g{F}.{prefix}.{k}"] = torch.from_numpy(np.ascontiguousarray(arr[:C]))
    return meta, tensors


def restore(engine: Engine, meta: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Load a snapshot into this (fresh) engine. Raises ValueError when it does not fit the config."""
    check_thresholds(meta, engine.cfg)
    engine.model_version = int(meta.get("model_version", 0))
    engine.feedback = [dict(d) for d in meta.get("feedback", []) if isinstance(d, dict)]  # absent before issue 14
    for r, v in meta.get("rejected", {}).items():
        if r in engine.rejected:
            engine.rejected[r] = int(v)
    m = engine.cfg.model
    for Fs, gm in meta["groups"].items():
        F = int(Fs)
        dims = meta["dims"][Fs]
        want = [F, m.hidden, m.window, m.cell]
        if list(dims) != want:
            raise ValueError(f"checkpoint model dims (fields, hidden, window, cell) {dims} differ from the config's {want}")
        g = engine._group(F)
        C = int(gm["capacity"])
        g.bank.restore_slots(C, gm["free"])
        g._ensure(C)
        for k in g.bank.t:
            if k == "cond" and f"g{F}.bank.{k}" not in tensors:
                continue  # written before the multivariate level term: the identity (fields alone)
            g.bank.t[k][:C] = tensors[f"g{F}.bank.{k}"].to(g.bank.device)
        p = f"g{F}.a."  # the group converts an older history ring's layout (Group.restore_arrays)
        g.restore_arrays(C, {k[len(p):]: v.numpy() for k, v in tensors.items() if k.startswith(p)})
        g.thr.restore({k[len(f"g{F}.thr."):]: v.numpy() for k, v in tensors.items() if k.startswith(f"g{F}.thr.")})
        g.alerts.restore({k[len(f"g{F}.alert."):]: v.numpy() for k, v in tensors.items()
                          if k.startswith(f"g{F}.alert.")})
        if g.lthr is not None:  # absent before the level tail: not ready (the error's tail alone) until retrained
            g.lthr.restore({k[len(f"g{F}.lthr."):]: v.numpy() for k, v in tensors.items()
                            if k.startswith(f"g{F}.lthr.")})
        g.a["training"][:C] = False  # jobs in flight at the checkpoint are simply re-issued
        fence = tensors.get(f"g{F}.fence.last_ts")  # a fuzzy checkpoint's (.fuzzy); absent in a classic one
        if fence is not None:
            if fence.shape != (C,):
                raise ValueError(f"checkpoint fence of group {F} has shape {tuple(fence.shape)}, not ({C},)")
            engine.fences[F] = fence.numpy().astype(np.float64, copy=True)
        names: dict[tuple[str, ...], tuple[str, ...]] = {}  # one tuple per distinct field list, not one per stream
        for slot, (ks, fs) in enumerate(zip(gm["keys"], gm["fields"], strict=True)):
            if ks is None:
                continue
            key = StreamKey.parse(ks)
            g.keys[slot] = key
            f = tuple(fs)
            g.fields[slot] = names.setdefault(f, f)
            engine.index[key] = (F, slot)
