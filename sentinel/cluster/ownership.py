"""Who is a scorer, how many there are, and who owns which partition (all in the cluster KV).

* ``member.<i>`` = ``{"t": time}``: scorer ``i``'s heartbeat, renewed every ``lease_ttl/3``.
  N is ``cluster.scorers`` when set, else 1 + the highest index registered (a StatefulSet
  scaled from 2 to 3 starts ``scorer-2``, which registers, and every scorer sees N = 3).
  Scaling down: delete the member keys of the removed ordinals (``sentinel`` does not guess).
* ``owner.<p>`` = ``{"scorer": i | null, "covered": seq}``: the scorer that may consume
  partition ``p``. A claim is a compare-and-set on the key's revision. A scorer claims a
  partition only when the key is missing, released (``scorer: null``), already its own (a
  restart of the same ordinal), or held by a scorer whose heartbeat stopped ``lease_ttl`` ago;
  otherwise it waits (bounded by ``handover_timeout``) for the holder to release it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from nats.js.errors import KeyWrongLastSequenceError, NoKeysError

from .js import kv_get

log = logging.getLogger("sentinel")


class Membership:
    def __init__(self, kv: Any, index: int, *, ttl: float, fixed_n: int | None = None,
                 clock: Callable[[], float] = time.time):
        self.kv = kv
        self.index = index
        self.ttl = ttl
        self.fixed_n = fixed_n
        self.clock = clock

    async def heartbeat(self) -> None:
        await self.kv.put(f"member.{self.index}", json.dumps({"t": self.clock()}).encode())

    async def members(self) -> dict[int, float]:
        """Registered scorer index -> its last heartbeat time.

        Only an empty bucket reads as no members. Any other failure (a timeout under load)
        raises: read as ``{}``, it made N look like ``1 + own index``, and the scorer handed
        over or "gained" partitions that nothing had moved.
        """
        out: dict[int, float] = {}
        try:
            keys = await self.kv.keys()
        except NoKeysError:
            return out
        for k in keys:
            if k.startswith("member."):
                e = await kv_get(self.kv, k)
                if e is not None:
                    out[int(k.split(".", 1)[1])] = float(json.loads(e.value).get("t", 0.0))
        return out

    async def n(self) -> int:
        if self.fixed_n is not None:
            return self.fixed_n
        m = await self.members()
        return 1 + max([self.index, *m])

    async def alive(self, index: int) -> bool:
        e = await kv_get(self.kv, f"member.{index}")
        return e is not None and self.clock() - float(json.loads(e.value).get("t", 0.0)) <= self.ttl


class Owners:
    def __init__(self, kv: Any, membership: Membership):
        self.kv = kv
        self.m = membership

    async def claim(self, p: int, timeout: float, poll: float = 0.2) -> None:
        """Become ``p``'s owner: at once if free, else when its holder releases it or dies (bounded)."""
        me = self.m.index
        deadline = time.monotonic() + timeout
        while True:
            e = await kv_get(self.kv, f"owner.{p}")
            value = json.dumps({"scorer": me}).encode()
            try:
                if e is None:
                    await self.kv.create(f"owner.{p}", value)
                    return
                holder = json.loads(e.value).get("scorer")
                late = time.monotonic() > deadline
                if holder is None or holder == me or late or not await self.m.alive(int(holder)):
                    if late and holder not in (None, me):
                        log.warning("partition %d: scorer %s did not release it in %.0fs; taking it over",
                                    p, holder, timeout)
                    await self.kv.update(f"owner.{p}", value, last=e.revision)
                    return
            except KeyWrongLastSequenceError:
                continue  # someone else wrote in between: look again
            await asyncio.sleep(poll)

    async def release(self, p: int, covered: int) -> bool:
        """Mark ``p`` free, if this scorer still holds it (a compare-and-set, like :meth:`claim`).

        A scorer that already took ``p`` over (this one's heartbeat looked stale to it) keeps it:
        writing ``scorer: null`` over its claim would let a third scorer claim ``p`` beside it.
        Returns whether the key was released.
        """
        value = json.dumps({"scorer": None, "covered": covered, "released_by": self.m.index}).encode()
        e = await kv_get(self.kv, f"owner.{p}")
        holder = None if e is None else json.loads(e.value).get("scorer")
        if holder not in (None, self.m.index):
            log.warning("partition %d: scorer %s took it over before this scorer released it", p, holder)
            return False
        try:
            if e is None:
                await self.kv.create(f"owner.{p}", value)
            else:
                await self.kv.update(f"owner.{p}", value, last=e.revision)
        except KeyWrongLastSequenceError:
            log.warning("partition %d: claimed by another scorer while this one released it", p)
            return False
        return True

    async def holder(self, p: int) -> int | None:
        e = await kv_get(self.kv, f"owner.{p}")
        return None if e is None else json.loads(e.value).get("scorer")
