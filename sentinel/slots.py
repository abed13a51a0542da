"""Per-slot arrays: the storage behind every vectorised per-stream component.

A stream occupies the same slot index in the model bank, its thresholds, its alert
state and its history; each of those keeps its numbers in numpy arrays indexed by
slot. :class:`SlotArrays` is that storage once: arrays declared by name with a
trailing shape, dtype and fill value, grown together (:func:`grown`), reset per
slot, and copied out and back for checkpoints.
"""

from __future__ import annotations

import numpy as np

Spec = dict[str, tuple[tuple[int, ...], type, float]]
"""name -> (trailing shape, dtype, fill value of a fresh or reset slot)"""


SMALL = 4096  # capacities below this double; above, they grow by a quarter


def grown(capacity: int, need: int, limit: int | None = None) -> int:
    """The capacity to grow ``capacity`` to so that it holds ``need`` slots: doubling while small, then
    by a quarter (doubling left 131,072 slots resident for 100k streams, 1.31x; a quarter at most
    1.25x, and a growth's old and new copies side by side 2.25x instead of 3x), never past ``limit``
    (``streams.max_streams``) unless ``need`` is."""
    new = max(need, capacity * 2 if capacity < SMALL else capacity + capacity // 4)
    return new if limit is None else max(need, min(new, limit))


class SlotArrays:
    """``a[name]`` is an array of shape ``[capacity, *trailing]`` for every name in ``spec``."""

    limit: int | None = None  # the most slots growth makes room for (see grown)

    def __init__(self, spec: Spec, capacity: int = 64):
        self.spec = spec
        self.capacity = 0
        self.a: dict[str, np.ndarray] = {}
        self.ensure(capacity)

    def ensure(self, capacity: int) -> None:
        """Make room for ``capacity`` slots (growing as :func:`grown` says); existing values are kept."""
        if capacity <= self.capacity:
            return
        new = grown(self.capacity, capacity, self.limit)
        for name, (shape, dtype, fill) in self.spec.items():
            arr: np.ndarray = np.full((new, *shape), fill, dtype=dtype)
            if self.capacity:
                arr[: self.capacity] = self.a[name]
            self.a[name] = arr
        self.capacity = new

    def reset(self, slots: np.ndarray) -> None:
        """Give ``slots`` their fill values, as if new."""
        for name, (_shape, _dtype, fill) in self.spec.items():
            self.a[name][slots] = fill

    def snapshot(self) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in self.a.items()}

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        """Load ``arrays`` (as from :meth:`snapshot`, possibly of a smaller capacity) into the first slots."""
        if arrays:
            self.ensure(len(next(iter(arrays.values()))))
        for k, v in arrays.items():
            self.a[k][: len(v)] = v
