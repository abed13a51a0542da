"""Partition ownership in the cluster KV, against a real nats-server.

* ``release`` is a compare-and-set: a scorer whose partition another scorer already took over
  (its heartbeat looked stale) must not write ``scorer: null`` over the new owner's claim.
* ``Membership.members`` reads an empty bucket as no members, but a failed read raises: read as
  ``{}``, N became ``1 + own index`` and a scorer handed partitions over that nothing had moved.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from sentinel.cluster.ownership import Membership, Owners
from tests.servers.nats import nats_server

pytestmark = [pytest.mark.nats, pytest.mark.timeout(60)]


async def _bucket(url: str):
    import nats

    nc = await nats.connect(url)
    kv = await nc.jetstream().create_key_value(bucket="own")
    return nc, kv


def test_release_leaves_a_takeover_alone_and_frees_its_own_claim() -> None:
    async def go() -> tuple[object, object, bool, bool]:
        with nats_server() as n:
            nc, kv = await _bucket(n.url)
            try:
                clock = [100.0]
                m0 = Membership(kv, 0, ttl=3.0, clock=lambda: clock[0])
                m1 = Membership(kv, 1, ttl=3.0, clock=lambda: clock[0])
                o0, o1 = Owners(kv, m0), Owners(kv, m1)
                await m0.heartbeat()
                await o0.claim(5, timeout=5)
                clock[0] += 10.0  # scorer 0's heartbeat is now stale
                await m1.heartbeat()
                await o1.claim(5, timeout=5)  # taken over
                kept = await o0.release(5, covered=42)  # the late release of the old owner
                after_late = await o1.holder(5)
                freed = await o1.release(5, covered=43)
                e = await kv.get("owner.5")
                return after_late, json.loads(e.value), kept, freed
            finally:
                await nc.close()

    after_late, final, kept, freed = asyncio.run(go())
    assert (kept, after_late) == (False, 1)
    assert freed is True
    assert final == {"scorer": None, "covered": 43, "released_by": 1}


def test_members_reads_an_empty_bucket_as_none_and_raises_on_a_failed_read() -> None:
    class Failing:
        async def keys(self) -> list[str]:
            raise TimeoutError("kv keys timed out")

    async def go() -> tuple[dict[int, float], int, dict[int, float]]:
        with nats_server() as n:
            nc, kv = await _bucket(n.url)
            try:
                m2 = Membership(kv, 2, ttl=3.0, clock=lambda: 7.0)
                empty = await m2.members()
                await m2.heartbeat()
                await Membership(kv, 0, ttl=3.0, clock=lambda: 5.0).heartbeat()
                return empty, await m2.n(), await m2.members()
            finally:
                await nc.close()

    empty, n, members = asyncio.run(go())
    assert empty == {}
    assert n == 3
    assert members == {0: 5.0, 2: 7.0}
    with pytest.raises(TimeoutError):
        asyncio.run(Membership(Failing(), 1, ttl=3.0).members())
