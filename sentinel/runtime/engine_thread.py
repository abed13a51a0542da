"""The one thread that owns the engine: every engine call goes through :meth:`EngineThread.call`.

The engine is not thread-safe and does not need to be: the tick, the trainer
scheduler's ``due``/``apply``, the checkpointer's snapshot, history loads and
reloads all run here, one after another, so none of them sees a half-applied
step. The event loop never blocks on the engine.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class EngineThread:
    def __init__(self) -> None:
        self._pool = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="sentinel-score")

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the engine thread and await its result."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def shutdown(self) -> None:
        """Wait for the call in progress, then end the thread; safe to call twice."""
        self._pool.shutdown(wait=True)
