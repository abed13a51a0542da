"""A partition's checkpoint: the slice of an engine snapshot that holds its streams, and back.

An engine snapshot (:meth:`Engine.snapshot <sentinel.runtime.engine.Engine.snapshot>`) is, per
field-count group, a list of slots and tensors whose first axis is the slot. :func:`split`
cuts it into one snapshot per partition (only live slots, compacted); :func:`merge` joins
any number of them into one that a fresh engine restores. A partition's checkpoint is
serialised like a checkpoint file (``torch.save`` of tensors and JSON text only, loaded with
``weights_only=True``, a format and version checked) plus the JetStream sequence it covers.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from ..errors import CheckpointError

FORMAT = "sentinel-partition"
VERSION = 1

Snap = tuple[dict, dict[str, torch.Tensor]]


@dataclass
class PartitionState:
    partition: int
    covered: int  # the last JetStream stream sequence of this partition scored into the state
    meta: dict
    tensors: dict[str, torch.Tensor]

    @property
    def n_streams(self) -> int:
        return sum(len([k for k in g["keys"] if k is not None]) for g in self.meta["groups"].values())


def _group_tensors(tensors: dict[str, torch.Tensor], F: str) -> dict[str, torch.Tensor]:
    pre = f"g{F}."
    return {k[len(pre):]: v for k, v in tensors.items() if k.startswith(pre)}


def split(snap: Snap, part_of: Callable[[str], int], partitions: Iterable[int]) -> dict[int, Snap]:
    """One snapshot per partition in ``partitions`` (empty ones included), holding only its live streams."""
    meta, tensors = snap
    out: dict[int, Snap] = {}
    for p in partitions:
        out[p] = ({"model_version": meta.get("model_version", 0), "rejected": {}, "groups": {},
                   "dims": dict(meta.get("dims", {}))}, {})
    for F, gm in meta["groups"].items():
        by: dict[int, list[int]] = {}
        for slot, ks in enumerate(gm["keys"]):
            if ks is not None:
                p = part_of(ks)
                if p in out:
                    by.setdefault(p, []).append(slot)
        gt = _group_tensors(tensors, F)
        C = int(gm["capacity"])
        for name, t in gt.items():
            if t.shape[0] != C:
                raise CheckpointError(f"snapshot tensor g{F}.{name} has {t.shape[0]} rows, not one per slot ({C})")
        for p, slots in by.items():
            idx = torch.tensor(slots, dtype=torch.long)
            pm, pt = out[p]
            pm["groups"][F] = {"capacity": len(slots), "free": [], "keys": [gm["keys"][s] for s in slots],
                               "fields": [gm["fields"][s] for s in slots]}
            for name, t in gt.items():
                pt[f"g{F}.{name}"] = t.index_select(0, idx).clone()
    return out


def merge(snaps: Iterable[Snap]) -> Snap:
    """Join partition snapshots (disjoint streams) into one a fresh engine can restore."""
    groups: dict[str, dict] = {}
    parts: dict[str, dict[str, list[torch.Tensor]]] = {}
    dims: dict = {}
    version = 0
    for meta, tensors in snaps:
        version = max(version, int(meta.get("model_version", 0)))
        dims.update(meta.get("dims", {}))
        for F, gm in meta["groups"].items():
            g = groups.setdefault(F, {"capacity": 0, "free": [], "keys": [], "fields": []})
            g["capacity"] += int(gm["capacity"])
            g["keys"].extend(gm["keys"])
            g["fields"].extend(gm["fields"])
            for name, t in _group_tensors(tensors, F).items():
                parts.setdefault(F, {}).setdefault(name, []).append(t)
    out_t = {f"g{F}.{name}": torch.cat(ts, 0) for F, named in parts.items() for name, ts in named.items()}
    return {"model_version": version, "rejected": {}, "groups": groups,
            "dims": {F: d for F, d in dims.items() if F in groups}}, out_t


def dumps(state: PartitionState) -> bytes:
    meta = {"partition": state.partition, "covered": state.covered, "engine": state.meta}
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "version": VERSION, "meta": json.dumps(meta, allow_nan=True),
                "tensors": {k: v.detach().cpu().contiguous() for k, v in state.tensors.items()}}, buf)
    return buf.getvalue()


def loads(data: bytes, what: str = "partition checkpoint") -> PartitionState:
    """Parse :func:`dumps` output safely; raise :class:`CheckpointError` saying what is wrong."""
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{what}: unreadable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                              ) from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{what}: not a Sentinel partition checkpoint")
    if obj.get("version") != VERSION:
        raise CheckpointError(f"{what}: format version {obj.get('version')!r}, this Sentinel reads {VERSION}")
    try:
        meta = json.loads(obj["meta"])
        return PartitionState(int(meta["partition"]), int(meta["covered"]), meta["engine"], dict(obj["tensors"]))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{what}: malformed meta ({e})") from None
