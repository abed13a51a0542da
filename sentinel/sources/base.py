"""The source contract.

A source follows one database (or file, or simulation) and hands the runtime
:class:`~sentinel.types.SourceBatch` objects through ``emit``. It never blocks
the runtime: ``emit`` is awaited, and the runtime's bounded ingest queue applies
its overflow policy. Each batch carries the cursor *after* its samples; the
runtime checkpoints the cursor of the last batch it scored and passes it back as
``resume`` on restart, so a source rebuilt from ``resume`` alone neither skips
nor repeats a sample.

Lifecycle: ``await run(emit)`` until ``stop()`` is called (idempotent); ``run``
retries connection loss itself with :func:`backoff_delays` and reports health
through ``connected``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Protocol, runtime_checkable

from ..types import Sample, SourceBatch, StreamKey

Emit = Callable[[SourceBatch], Awaitable[None]]


@runtime_checkable
class Source(Protocol):
    name: str

    @property
    def connected(self) -> bool:
        """True while the source can reach its server (drives ``/-/ready``)."""
        ...

    async def run(self, emit: Emit) -> None:
        """Follow new data and ``await emit(batch)`` for each batch until stopped."""
        ...

    async def stop(self) -> None:
        """Stop following; safe to call twice; returns once ``run`` has returned."""
        ...

    async def history(self, keys: list[StreamKey] | None, since: float, until: float) -> list[Sample]:
        """Samples in ``[since, until)`` for warm-up and retraining (``keys=None``: all); [] if unsupported."""
        ...


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


class Plugin:
    """What every source plugin starts with: its config, name, metrics and clock, not yet connected.

    ``connected`` is a plain attribute: the plugin sets it once its server answers;
    :class:`~sentinel.sources.running.RunningSource` clears it when a run fails.
    """

    def __init__(self, cfg: Any, *, metrics: Any, clock: Callable[[], float] = time.time):
        self.cfg = cfg
        self.name: str = cfg.name
        self.metrics = metrics
        self.clock = clock
        self.connected = False
