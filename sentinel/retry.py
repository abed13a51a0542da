"""Backoff with full jitter: the one retry policy of sources, sinks and write-backs."""

from __future__ import annotations

import random
from collections.abc import Iterator


def backoff_delays(initial: float = 0.5, maximum: float = 30.0, factor: float = 2.0,
                   rng: random.Random | None = None) -> Iterator[float]:
    """Exponential backoff with full jitter: delay_n is uniform in [0, min(max, initial*factor^n)].

    >>> d = backoff_delays(1, 8, rng=random.Random(0)); [round(next(d), 2) for _ in range(5)]
    [0.84, 1.52, 1.68, 2.07, 4.09]
    """
    r = rng or random.Random()
    cap = initial
    while True:
        yield r.uniform(0, cap)
        cap = min(maximum, cap * factor)


class Backoff:
    """Exponential backoff with full jitter that restarts from ``initial`` after :meth:`reset`.

    >>> b = Backoff(1, 8, random.Random(0)); [round(b.next(), 2) for _ in range(3)]
    [0.84, 1.52, 1.68]
    >>> b.reset(); b.failures, round(b.next(), 2) <= 1
    (0, True)
    """

    def __init__(self, initial: float, maximum: float, rng: random.Random | None = None):
        self.initial, self.maximum = initial, maximum
        self._rng = rng or random.Random()
        self.failures = 0
        self._it: Iterator[float] = backoff_delays(initial, maximum, rng=self._rng)

    def next(self) -> float:
        self.failures += 1
        return next(self._it)

    def reset(self) -> None:
        self.failures = 0
        self._it = backoff_delays(self.initial, self.maximum, rng=self._rng)
