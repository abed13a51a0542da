"""Polling sources run in exactly one router (a JetStream KV lease), and survive its death.

Two routers with the same simulator source: one holds the lease and publishes; ``kill -9`` of
it, and the other takes the lease within the lease's TTL and resumes from the cursor the first
one recorded in the KV. Read back from the stream: per stream, every simulated timestamp from
the first to the last is there (none skipped; a batch published but not yet recorded may repeat).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from sentinel.cluster import codec
from tests.cluster_helpers import Proc
from tests.servers._proc import free_port, wait_until
from tests.servers.nats import nats_server

pytestmark = [pytest.mark.nats, pytest.mark.timeout(120)]

SIM = {"type": "simulator", "name": "sim", "streams": 3, "fields": ["temp"], "interval": "1s", "speed": 10,
       "anomaly_rate": 0, "regime_rate": 0, "history": "0s", "seed": 5}


def router_config(tmp: Path, url: str) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = {"server": {"listen": f"127.0.0.1:{free_port()}"}, "sources": [SIM],
           "cluster": {"servers": [url], "partitions": 4, "lease_ttl": "2s"},
           "logging": {"level": "info", "format": "text"}}
    p = tmp / "router.yaml"
    p.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return p


async def read_stream(url: str) -> dict[str, list[float]]:
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        last = (await js.stream_info("SENTINEL")).state.last_seq
        sub = await js.pull_subscribe("", stream="SENTINEL", config=ConsumerConfig(
            ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL, filter_subject="sentinel.p.*"))
        out: dict[str, list[float]] = {}
        seq = 0
        for _ in range(1000):  # bounded
            if seq >= last:
                break
            for m in await sub.fetch(500, timeout=5):
                seq = m.metadata.sequence.stream
                for s in codec.decode(m.data):
                    out.setdefault(str(s.key), []).append(s.ts)
        return out
    finally:
        await nc.close()


@pytest.fixture
def nats_url() -> Iterator[str]:
    with nats_server() as n:
        yield n.url


def test_one_router_polls_and_another_takes_over_from_its_cursor_when_it_dies(nats_url: str, tmp_path: Path) -> None:
    a = Proc(router_config(tmp_path / "a", nats_url), "router")
    b = Proc(router_config(tmp_path / "b", nats_url), "router")
    try:
        a.wait_ready()
        b.wait_ready()
        wait_until(lambda: a.metric("sentinel_poller_lease_held") + b.metric("sentinel_poller_lease_held") == 1,
                   timeout=20, what="one lease holder")
        holder, other = (a, b) if a.metric("sentinel_poller_lease_held") == 1 else (b, a)
        wait_until(lambda: holder.metric("sentinel_router_published_total") >= 3 * 20, timeout=30,
                   what="the holder publishing")
        assert other.metric("sentinel_router_published_total") == 0  # the database is read once
        holder.kill9()
        wait_until(lambda: other.metric("sentinel_poller_lease_held") == 1, timeout=20, what="the lease taken over")
        wait_until(lambda: other.metric("sentinel_router_published_total") >= 3 * 20, timeout=30,
                   what="the new holder publishing")
    finally:
        for p in (a, b):
            with contextlib.suppress(Exception):
                p.close()
    got = asyncio.run(read_stream(nats_url))
    assert len(got) == 3
    for key, ts in got.items():
        uniq = sorted(set(ts))
        steps = {round(b - a, 6) for a, b in itertools.pairwise(uniq)}
        assert steps == {1.0}, f"{key}: a gap in the simulated series across the takeover: {sorted(steps)[-3:]}"
        assert len(uniq) >= 40
