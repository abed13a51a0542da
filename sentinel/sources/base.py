"""The source contract.

A source follows one database (or file, or simulation) and hands the runtime
:class:`~sentinel.types.SourceBatch` objects through ``emit``. It never blocks
the runtime: ``emit`` is awaited, and the runtime's bounded ingest queue applies
its overflow policy. Each batch carries the cursor *after* its samples; the
runtime checkpoints the cursor of the last batch it scored and passes it back as
``resume`` on restart, so a source rebuilt from ``resume`` alone neither skips
nor repeats a sample.

Lifecycle: ``await run(emit)`` until ``stop()`` is called (idempotent); ``run``
raises when it cannot go on (the runtime's
:class:`~sentinel.sources.running.RunningSource` runs it again after a backoff) and
sets ``connected`` once its server answers.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
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
