"""Per-slot stores grow together: doubling while small, then by a quarter, never past max_streams."""

from __future__ import annotations

from sentinel.config import load_config_text
from sentinel.runtime.engine import Engine
from sentinel.slots import SMALL, grown
from sentinel.types import Sample, StreamKey


def test_growth_doubles_while_small_then_by_a_quarter_and_stops_at_the_limit() -> None:
    assert grown(1, 2) == 2 and grown(1024, 1025) == 2048
    assert grown(SMALL, SMALL + 1) == SMALL + SMALL // 4
    assert grown(100_000, 100_001) == 125_000
    assert grown(100_000, 100_001, limit=110_000) == 110_000
    assert grown(100_000, 200_000, limit=110_000) == 200_000  # need wins over the limit
    cap, caps = 1, []
    while cap < 100_000:
        cap = grown(cap, cap + 1)
        caps.append(cap)
    assert cap <= 1.25 * 100_000 and caps[-1] == cap  # at most a quarter over (doubling: 131,072)


def test_every_store_of_a_group_grows_to_max_streams_and_no_further() -> None:
    e = Engine(load_config_text("streams: {max_streams: 5, history_size: 64}\nmodel: {hidden: 4, window: 2}\n",
                                source="t.yaml"))
    e.process([Sample(StreamKey.of("m", s=str(i)), 1.0, ("v",), (1.0,)) for i in range(7)])
    g = e.groups[1]
    assert e.n_streams == 5
    assert g.bank.capacity == g.capacity == 5
    assert g.thr.capacity == g.alerts.capacity == 64  # their own first allocation, not grown
    assert g.lthr is None or g.lthr.limit == 5


def test_reserve_allocates_once_and_streams_take_the_slots_in_order() -> None:
    e = Engine(load_config_text("streams: {max_streams: 100, history_size: 64}\nmodel: {hidden: 4, window: 2}\n",
                                source="t.yaml"))
    e.process([Sample(StreamKey.of("m", s="0"), 1.0, ("v",), (1.0,))])
    g = e.groups[1]
    g.reserve(40)
    assert g.bank.capacity == g.capacity == 40 and g.thr.capacity == g.alerts.capacity == 64  # theirs: at least 64
    e.process([Sample(StreamKey.of("m", s=str(i)), 1.0, ("v",), (1.0,)) for i in range(1, 40)])
    assert [e.index[StreamKey.of("m", s=str(i))][1] for i in range(40)] == list(range(40))
    assert g.bank.capacity == 40 and g.bank.used == 40
