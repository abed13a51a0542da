"""Engine-side bounds and the read path: D4 (fields per stream, lazily sized groups), D2 (readers while
the scoring thread adds groups)."""

from __future__ import annotations

from sentinel.config import load_config_text
from sentinel.runtime.engine import Engine
from sentinel.types import Sample, StreamKey


def engine(streams: str = "") -> Engine:
    text = f"model: {{hidden: 4, window: 2, device: cpu}}\nstreams: {{history_size: 64{streams}}}\n"
    return Engine(load_config_text(text, source="t.yaml", env={}))


def sample(name: str, F: int, ts: float = 1.0) -> Sample:
    return Sample(StreamKey.of("m", s=name), ts, tuple(f"f{j}" for j in range(F)), tuple(float(j) for j in range(F)))


def test_d4_a_stream_with_too_many_fields_is_refused_and_creates_no_group() -> None:
    e = engine(", max_fields: 8")
    out = e.process([sample("wide", 4000), sample("ok", 8)])
    assert out.rejected == ["max_fields", None]
    assert set(e.groups) == {8} and e.n_streams == 1 and e.rejected["max_fields"] == 1


def test_d4_groups_start_small_and_grow_as_streams_come() -> None:
    e = engine()
    e.process([sample(f"s{F}", F) for F in range(2, 60)])
    assert all(g.capacity == 1 for g in e.groups.values())  # not 64 slots x history x F per field count
    e.process([sample(f"x{i}", 3) for i in range(5)])
    assert e.groups[3].capacity == 8 and e.n_streams == 58 + 5


def test_d2_a_reader_mid_iteration_survives_the_scoring_thread_adding_a_group() -> None:
    e = engine()
    e.process([sample("a", 1), sample("b", 2)])
    it = e.iter_streams()
    next(it)
    e.process([sample("c", 3)])  # a new field count: a new group while the reader is half way
    rest = list(it)  # raised "dictionary changed size during iteration" before
    assert len(rest) == 1
    assert e.state_counts()["warming"] == 3 and len(list(e.iter_streams())) == 3
