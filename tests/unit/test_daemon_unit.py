"""Pure pieces of the daemon: rendezvous sharding, ``--shard`` parsing, readiness, ingest overflow."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from prometheus_client import CollectorRegistry

from sentinel.config import ConfigError, load_config_text
from sentinel.metrics import Metrics
from sentinel.runtime.daemon import Daemon
from sentinel.runtime.ingest import IngestQueue
from sentinel.runtime.shard import owner, parse_shard
from sentinel.types import Sample, SourceBatch, StreamKey

KEYS = [StreamKey.of("sensor", site=f"site-{i % 7}", sensor=f"s-{i:05d}") for i in range(4000)]


def test_owner_is_deterministic_and_in_range() -> None:
    for n in (1, 2, 5):
        owners = [owner(k, n) for k in KEYS[:200]]
        assert owners == [owner(k, n) for k in KEYS[:200]]
        assert set(owners) <= set(range(n))
    assert {owner(k, 1) for k in KEYS[:50]} == {0}
    assert owner(StreamKey.of("m", a="1", b="2"), 4) == owner(StreamKey.of("m", b="2", a="1"), 4)


def test_owner_spreads_keys_evenly() -> None:
    counts = Counter(owner(k, 3) for k in KEYS)
    assert set(counts) == {0, 1, 2}
    assert all(abs(c / len(KEYS) - 1 / 3) < 0.04 for c in counts.values()), counts


def test_growing_from_3_to_4_shards_moves_about_a_quarter_all_to_the_new_shard() -> None:
    before = {k: owner(k, 3) for k in KEYS}
    after = {k: owner(k, 4) for k in KEYS}
    moved = [k for k in KEYS if before[k] != after[k]]
    assert abs(len(moved) / len(KEYS) - 0.25) < 0.03, len(moved)
    assert {after[k] for k in moved} == {3}
    # and shrinking back moves exactly those keys home
    assert all(owner(k, 3) == before[k] for k in moved)


@pytest.mark.parametrize(("text", "want"), [(None, None), ("", None), ("0/1", (0, 1)), ("2/3", (2, 3)),
                                            (" 1 / 4 ", (1, 4))])
def test_parse_shard_accepts(text: str | None, want: tuple[int, int] | None) -> None:
    assert parse_shard(text) == want


@pytest.mark.parametrize(("text", "message"), [
    ("3/3", "need 0 <= I < N"), ("-1/2", "need 0 <= I < N"), ("1/0", "need 0 <= I < N"),
    ("a/b", "expected I/N"), ("1", "expected I/N"), ("1/2/3", "expected I/N"), ("1.5/2", "expected I/N"),
])
def test_parse_shard_rejects_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        parse_shard(text)
    assert "--shard" in str(err.value) and repr(text) in str(err.value)


def test_daemon_with_a_bad_shard_is_refused() -> None:
    with pytest.raises(ConfigError, match="--shard"):
        Daemon(load_config_text(""), registry=CollectorRegistry(), shard="4/4", inline_training=True)


class FakeSource:
    def __init__(self, name: str, connected: bool):
        self.name, self.connected = name, connected


def test_ready_names_the_sources_that_are_down_and_says_when_stopping() -> None:
    d = Daemon(load_config_text(""), registry=CollectorRegistry(), inline_training=True)
    ok, why = d.ready()
    assert not ok and why.startswith("starting")  # until start() has loaded history and started its loops
    d._started = True
    assert d.ready() == (True, "")
    d.sources = [FakeSource("influx", True), FakeSource("pg", False), FakeSource("pg2", False)]
    assert d.ready() == (False, "sources not connected: pg, pg2")
    d.sources[1].connected = d.sources[2].connected = True
    assert d.ready() == (True, "")
    d._stopping = True
    assert d.ready() == (False, "shutting down")


def _batch(i: int) -> SourceBatch:
    return SourceBatch("src", [Sample(StreamKey.of("m", k=str(i)), float(i), ("value",), (1.0,))] * (i + 1),
                       cursor={"i": i})


@pytest.mark.parametrize(("policy", "kept", "dropped"), [("drop_newest", [0, 1], 3 + 4),
                                                         ("drop_oldest", [2, 3], 1 + 2)])
def test_ingest_overflow_policies_drop_and_count_samples(policy: str, kept: list[int], dropped: int) -> None:
    registry = CollectorRegistry()
    q = IngestQueue(2, policy, Metrics(registry))

    async def main() -> list[int]:
        for i in range(4):
            await asyncio.wait_for(q.put(_batch(i)), 1)  # never blocks with a dropping policy
        assert registry.get_sample_value("sentinel_queue_depth", {"queue": "ingest"}) == 2
        out = [b.cursor["i"] for b in q.drain_nowait()]  # type: ignore[index]
        await asyncio.wait_for(q.join(), 1)  # a dropped batch does not hold up the drain
        return out

    assert asyncio.run(main()) == kept
    assert registry.get_sample_value("sentinel_queue_dropped_total", {"queue": "ingest"}) == dropped


def test_take_coalesces_what_is_waiting_up_to_the_sample_budget() -> None:
    q = IngestQueue(10, "block", Metrics(CollectorRegistry()))

    async def main() -> list[list[int]]:
        for i in range(4):  # batch i holds i + 1 samples
            await q.put(_batch(i))
        first = await q.take(max_samples=3)
        second = await q.take(max_samples=3)
        third = await q.take(max_samples=3)
        for taken in (first, second, third):
            q.done(taken)
        await asyncio.wait_for(q.join(), 1)
        return [[b.cursor["i"] for b in t] for t in (first, second, third)]  # type: ignore[index]

    assert asyncio.run(main()) == [[0, 1], [2], [3]]


def test_rejection_reasons_are_exported_from_the_start() -> None:
    registry = CollectorRegistry()
    Daemon(load_config_text(""), registry=registry, inline_training=True)
    for reason in ("out_of_order", "duplicate", "non_finite", "no_values", "max_streams", "bad_fields"):
        assert registry.get_sample_value("sentinel_samples_rejected_total", {"reason": reason}) == 0
    for result in ("success", "rejected", "failure"):
        assert registry.get_sample_value("sentinel_retrain_total", {"result": result}) == 0
