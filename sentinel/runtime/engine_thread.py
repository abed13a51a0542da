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
    """Calls run one at a time, in the order they were made.

    :meth:`hold` makes :meth:`call` wait (until :meth:`release`) before it hands its function over, so
    that only :meth:`call_now` callers (the tick, and the checkpoint copying the state in chunks
    between ticks: :mod:`.checkpointer`) reach the engine meanwhile. A call handed over before
    :meth:`hold` still runs first.
    """

    def __init__(self) -> None:
        self._pool = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="sentinel-score")
        self._open = asyncio.Event()  # bound to the running loop at its first wait (Python >= 3.10)
        self._open.set()

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the engine thread and await its result (after a :meth:`hold` is released)."""
        while not self._open.is_set():
            await self._open.wait()
        return await self.call_now(fn, *args)

    async def call_now(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the engine thread, held or not."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def shutdown(self) -> None:
        """Wait for the call in progress, then end the thread; safe to call twice."""
        self._pool.shutdown(wait=True)
