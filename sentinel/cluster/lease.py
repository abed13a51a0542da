"""A lease in the cluster KV: exactly one holder at a time (the router that runs the pollers).

The key holds ``{"holder": id, "t": time}``; the holder renews it every ``ttl/3`` with a
compare-and-set on the revision it last wrote. Another candidate takes it over only when
the key is missing or not renewed for ``ttl`` (its holder is gone), again by compare-and-set,
so two candidates never both win. A holder whose renewal fails has lost it and stops at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from nats.js.errors import KeyWrongLastSequenceError

from .js import kv_get

log = logging.getLogger("sentinel")


class Lease:
    def __init__(self, kv: Any, key: str, holder: str, ttl: float, clock: Callable[[], float] = time.time):
        self.kv = kv
        self.key = key
        self.holder = holder
        self.ttl = ttl
        self.clock = clock
        self.revision: int | None = None

    def _value(self) -> bytes:
        return json.dumps({"holder": self.holder, "t": self.clock()}).encode()

    async def try_acquire(self) -> bool:
        """One attempt: True if this candidate holds the lease now."""
        e = await kv_get(self.kv, self.key)
        try:
            if e is None:
                self.revision = await self.kv.create(self.key, self._value())  # also over a delete marker
                return True
            v = json.loads(e.value)
            if v.get("holder") == self.holder or self.clock() - float(v.get("t", 0)) > self.ttl:
                self.revision = await self.kv.update(self.key, self._value(), last=e.revision)
                return True
        except KeyWrongLastSequenceError:
            pass
        self.revision = None
        return False

    async def renew(self) -> bool:
        if self.revision is None:
            return False
        try:
            self.revision = await self.kv.update(self.key, self._value(), last=self.revision)
            return True
        except KeyWrongLastSequenceError:
            self.revision = None
            return False

    async def release(self) -> None:
        if self.revision is not None:
            try:
                await self.kv.delete(self.key, last=self.revision)
            except Exception as e:
                log.debug("lease release: %s", e)
            self.revision = None

    async def hold(self, run: Callable[[], Coroutine[Any, Any, None]], stop: asyncio.Event) -> None:
        """Until ``stop``: acquire, run ``run()`` while held (cancelled when lost), retry."""
        while not stop.is_set():
            try:
                got = await self.try_acquire()
            except Exception as e:
                log.warning("lease %s: %s", self.key, e)
                got = False
            if not got:
                await _wait(stop, self.ttl / 3)
                continue
            log.info("lease acquired", extra={"lease": self.key, "holder": self.holder})
            task: asyncio.Task[None] = asyncio.create_task(run(), name=f"lease-{self.key}")
            try:
                while not stop.is_set() and not task.done():
                    await _wait(stop, self.ttl / 3)
                    try:
                        if not await self.renew():
                            log.warning("lease lost", extra={"lease": self.key, "holder": self.holder})
                            break
                    except Exception as e:  # NATS unreachable: the lease may lapse; keep trying until ttl
                        log.warning("lease %s renew: %s", self.key, e)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self.release()


async def _wait(ev: asyncio.Event, t: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(ev.wait(), t)
