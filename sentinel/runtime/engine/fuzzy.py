"""A fuzzy checkpoint: the engine's state copied in slot chunks between rounds, so scoring never waits long.

The classic :func:`.snapshot.snapshot` stops the engine thread while every array of every group is
cloned (seconds at 100k streams). A :class:`FuzzySnapshot` does it in steps, each one call on the
engine thread, with rounds scored in between:

* :meth:`FuzzySnapshot.__init__` (the *start*, small): the engine-wide data (model version, rejection
  counts, feedback), each group's capacity, free slots, keys and fields, and each slot's ``last_ts``
  (the *fence*) as of now; the caller records the write-ahead log position and source cursors of the
  same moment. The weights (``W, b, D, d, mean, std, cond``) are not copied: only a training result
  writes them, and the engine refuses one while a snapshot is *pinned* (:attr:`Engine.pinned
  <sentinel.runtime.engine.core.Engine.pinned>`; the daemon holds results back until the file is
  written), so the file is written from the live tensors.
* :meth:`FuzzySnapshot.allocate` (off the engine thread): the copies' buffers, their pages touched.
* :meth:`FuzzySnapshot.step`: the per-tick state (recurrent state, history, thresholds, alert state,
  every per-slot array) of at most :attr:`FuzzySnapshot.slots_per_chunk` slots of one group.
* :meth:`FuzzySnapshot.result`: meta and tensors (off the engine thread), then :meth:`release`.

Each chunk holds its streams as of its own copy, later than the start. Recovery restores it and
replays the log from the start's position: a stream's replayed samples that its chunk already
reflects have ``ts`` at or below the restored ``last_ts``, and above the fence; the engine skips them
without counting (:data:`~sentinel.runtime.engine.core.SKIPPED`), so they neither learn nor alert twice,
and the samples that came after the copy are scored as they were live. Streams created after the
start are not in the snapshot (their samples are in the log after its position), nor are groups
created after it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .snapshot import threshold_meta

if TYPE_CHECKING:
    from .core import Engine
    from .group import Group

#: bank tensors written only by a training result (:meth:`Bank.load <sentinel.model.bank.Bank.load>`)
WEIGHTS = ("W", "b", "D", "d", "mean", "std", "cond")
CHUNK_BYTES = 8 << 20  # per-tick state copied per engine-thread step (state.checkpoint_chunk_bytes' default)
FENCE = "fence.last_ts"  # tensor name (after ``g{F}.``): each slot's last_ts at the start


def _arrays(g: Group) -> dict[str, Any]:
    """Every per-slot store of ``g`` a round may write, by checkpoint name (slot = first dimension): the
    names :func:`.snapshot.snapshot` gives them, less the weights (a test holds the two to the same names)."""
    out: dict[str, Any] = {f"bank.{k}": t for k, t in g.bank.t.items() if k not in WEIGHTS}
    stores = [("a", g.a), ("thr", g.thr.a), ("alert", g.alerts.a)]
    if g.lthr is not None:  # the level statistic's own tail (sentinel.detect.level)
        stores.append(("lthr", g.lthr.a))
    for prefix, arrays in stores:
        out.update({f"{prefix}.{k}": arr for k, arr in arrays.items()})
    return out


def _spec(x: Any) -> tuple[tuple[int, ...], torch.dtype]:
    """A copy's trailing shape and dtype for the live array ``x`` (a numpy array's as the torch dtype)."""
    dtype = x.dtype if isinstance(x, torch.Tensor) else torch.from_numpy(np.empty(0, x.dtype)).dtype
    return tuple(x.shape[1:]), dtype


def _buffer(spec: tuple[tuple[int, ...], torch.dtype], C: int) -> torch.Tensor:
    return torch.empty((C, *spec[0]), dtype=spec[1])  # uninitialised, CPU


def _row_bytes(x: Any) -> int:
    if isinstance(x, torch.Tensor):
        return int(x[0].numel() * x.element_size()) if x.shape[0] else 0
    return int(x[0].nbytes) if len(x) else 0


def slot_bytes(engine: Engine) -> int:
    """Bytes of per-tick state one slot holds, in the engine's widest group (what a chunk copies per slot)."""
    return max((sum(_row_bytes(x) for x in _arrays(g).values()) for g in engine.groups.values()), default=0)


class FuzzySnapshot:
    """Construct on the engine thread (the start); :meth:`step` there until it returns True."""

    def __init__(self, engine: Engine, chunk_bytes: int = CHUNK_BYTES):
        self.engine = engine
        self.meta: dict = {"model_version": engine.model_version, "rejected": dict(engine.rejected),
                           "feedback": [dict(d) for d in engine.feedback], "groups": {}, "dims": {},
                           "threshold": threshold_meta(engine.cfg)}
        self.tensors: dict[str, torch.Tensor] = {}
        self._keys: dict[int, tuple[list, list]] = {}
        self._plan: list[tuple[int, int, int]] = []  # (F, lo, hi) per step, in order
        self._dst: dict[int, dict[str, torch.Tensor]] = {}
        self._spec: dict[int, dict[str, tuple]] = {}  # per group, each copy's trailing shape and dtype
        self.copied: list[tuple[int, int, int]] = []  # (F, lo, hi) of each step done (tests, stats)
        for F, g in engine.groups.items():
            C = g.bank.capacity
            g._ensure(C)
            d = g.bank.dims
            self.meta["groups"][str(F)] = {"capacity": C, "free": g.bank.free_slots()}
            self.meta["dims"][str(F)] = [d.fields, d.hidden, d.window, d.cell]
            self._keys[F] = (list(g.keys[:C]), list(g.fields[:C]))  # immutable items: str() later, off-thread
            for k in WEIGHTS:
                self.tensors[f"g{F}.bank.{k}"] = g.bank.t[k][:C]  # shared: pinned until written
            self.tensors[f"g{F}.{FENCE}"] = torch.from_numpy(g.a["last_ts"][:C].copy())
            self._spec[F] = {k: _spec(x) for k, x in _arrays(g).items()}
        self.slots_per_chunk = max(1, int(chunk_bytes // max(1, slot_bytes(engine))))
        for Fs, gm in self.meta["groups"].items():
            C = gm["capacity"]
            self._plan += [(int(Fs), lo, min(C, lo + self.slots_per_chunk)) for lo in range(0, C, self.slots_per_chunk)]
        self.meta["fuzzy"] = {"chunks": len(self._plan), "slots_per_chunk": self.slots_per_chunk}
        engine.pinned += 1
        self._pinned = True

    def allocate(self) -> None:
        """Allocate the copies' buffers and touch their pages: off the engine thread, before the first
        :meth:`step` (else each step faults its chunk's pages in: 5-10x slower on a VM). Torch ops, so
        the GIL is released while the pages are touched."""
        for F, spec in self._spec.items():
            if F not in self._dst:
                C = self.meta["groups"][str(F)]["capacity"]
                self._dst[F] = {k: _buffer(sp, C).zero_() for k, sp in spec.items()}

    @property
    def done(self) -> bool:
        return len(self.copied) == len(self._plan)

    def step(self) -> bool:
        """Copy the next chunk (on the engine thread, between rounds); True once every chunk is copied."""
        if self.done:
            return True
        F, lo, hi = self._plan[len(self.copied)]
        g = self.engine.groups[F]
        C = self.meta["groups"][str(F)]["capacity"]
        dst = self._dst.get(F)
        live = _arrays(g)  # looked up each step: a group that grew has new arrays (the old rows in them)
        if dst is None:  # not allocated beforehand: here, its pages touched as the chunks land
            dst = self._dst[F] = {k: _buffer(sp, C) for k, sp in self._spec[F].items()}
        for k, x in live.items():
            out = dst[k]
            if isinstance(x, torch.Tensor):
                out[lo:hi].copy_(x[lo:hi])
            else:
                out.numpy()[lo:hi] = x[lo:hi]
        self.copied.append((F, lo, hi))
        return self.done

    def result(self) -> tuple[dict, dict[str, torch.Tensor]]:
        """Once :meth:`step` returned True: ``(meta, tensors)`` as :func:`.snapshot.snapshot` gives (plus the
        fences). Off the engine thread is fine: it reads only what the snapshot holds."""
        assert self.done, "FuzzySnapshot.result before every chunk was copied"
        for F, (keys, fields) in self._keys.items():
            gm = self.meta["groups"][str(F)]
            gm["keys"] = [str(k) if k is not None else None for k in keys]
            gm["fields"] = fields  # tuples (already there): JSON writes them as lists, and no new objects
            for k, x in self._dst[F].items():
                self.tensors[f"g{F}.{k}"] = x
        return self.meta, self.tensors

    def free(self) -> Iterator[None]:
        """Drop the copies one buffer at a time (yields between): freeing hundreds of MB at once holds the
        GIL long enough to stall the engine thread."""
        for F in list(self._dst):
            dst = self._dst.pop(F)
            while dst:
                k, _ = dst.popitem()
                self.tensors.pop(f"g{F}.{k}", None)
                del _
                yield

    def release(self) -> None:
        """The file is written (or given up): the engine may take training results again."""
        if self._pinned:
            self._pinned = False
            self.engine.pinned -= 1
