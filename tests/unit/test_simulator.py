"""The simulated fleet: determinism, range splits, anomaly kinds, line protocol, and source resume."""

from __future__ import annotations

import asyncio
import itertools
import math

import numpy as np
import pytest

from sentinel.config.source_simulator import SimulatorSourceConfig
from sentinel.lineprotocol import samples_to_lines
from sentinel.sources.base import Source
from sentinel.sources.simulator import (
    ANOMALY_KINDS,
    Anomaly,
    Fleet,
    SimulatorSource,
    make_series,
)
from sentinel.types import SourceBatch, StreamKey

T0 = 1_700_000_000.0


def cfg(**kw) -> SimulatorSourceConfig:
    base = {"streams": 12, "interval": 1.0, "seed": 7}
    base.update(kw)
    return SimulatorSourceConfig(**base)


# ---------------------------------------------------------------- fleet basics
def test_keys_fields_and_sample_shape():
    fleet = Fleet(cfg(sites=3), start=T0)
    assert fleet.fields == ("temp", "vibration", "current")
    assert fleet.keys[5] == StreamKey.of("sensor", site="site-2", sensor="s-0005")
    out = fleet.samples(T0, T0 + 3)
    assert len(out) == 3 * 12
    assert [s.ts for s in out[::12]] == [T0, T0 + 1, T0 + 2]
    assert [s.key for s in out[:12]] == fleet.keys
    assert all(len(s.values) == 3 and all(math.isfinite(v) for v in s.values) for s in out)


def test_deterministic_under_seed_and_different_across_seeds():
    a = Fleet(cfg(), start=T0).samples(T0, T0 + 20)
    b = Fleet(cfg(), start=T0).samples(T0, T0 + 20)
    c = Fleet(cfg(seed=8), start=T0).samples(T0, T0 + 20)
    assert a == b
    assert [s.values for s in a] != [s.values for s in c]


def test_split_ranges_equal_whole_range_including_fractional_bounds():
    fleet = Fleet(cfg(interval=2.0, anomaly_rate=1.0), start=T0)
    whole = fleet.samples(T0 - 100, T0 + 7300)
    parts = []
    for a, b in [(T0 - 100, T0 + 0.5), (T0 + 0.5, T0 + 2), (T0 + 2, T0 + 3999.9), (T0 + 3999.9, T0 + 7300)]:
        parts += fleet.samples(a, b)
    assert parts == whole
    ts = sorted({s.ts for s in whole})
    assert ts[0] == T0 - 100 and ts[-1] == T0 + 7298 and np.all(np.diff(ts) == 2.0)


def test_samples_for_selected_keys_match_the_full_fleet():
    fleet = Fleet(cfg(), start=T0)
    want = {fleet.keys[3], fleet.keys[9]}
    some = fleet.samples(T0, T0 + 5, keys=[*want, StreamKey.of("other")])
    full = [s for s in fleet.samples(T0, T0 + 5) if s.key in want]
    assert some == full


def test_fields_are_correlated_through_the_shared_load():
    _, v, labels = Fleet(cfg(anomaly_rate=0.0, regime_rate=0.0), start=T0).array(0, T0, T0 + 600)
    assert not labels.any()
    c = np.corrcoef(v.T)
    assert c[0, 1] > 0.7 and c[0, 2] > 0.7 and c[1, 2] > 0.7


def test_anomalies_labelled_only_after_start_and_match_array_labels():
    fleet = Fleet(cfg(anomaly_rate=1.0, streams=4), start=T0)
    assert fleet.anomalies(T0 - 86400, T0) == []
    labs = fleet.anomalies(T0, T0 + 6 * 3600)
    assert len(labs) >= 4 * 6 * 0.5  # probability 1 per sensor-hour, some cut by the window edge at most
    assert {a.kind for a in labs} <= set(ANOMALY_KINDS)
    assert all(isinstance(a, Anomaly) and a.start >= T0 and a.end > a.start and a.fields for a in labs)
    for i, key in enumerate(fleet.keys):
        ts, _, is_anom = fleet.array(i, T0, T0 + 6 * 3600)
        mine = [a for a in labs if a.key == key]
        expect = np.zeros(len(ts), dtype=bool)
        for a in mine:
            expect |= (ts >= a.start) & (ts < a.end)
        assert np.array_equal(is_anom, expect)
    # one sensor's anomalies never overlap
    for key in fleet.keys:
        mine = sorted((a.start, a.end) for a in labs if a.key == key)
        assert all(e1 <= s2 for (_, e1), (s2, _) in itertools.pairwise(mine))


def test_array_equals_samples_of_that_stream():
    fleet = Fleet(cfg(anomaly_rate=1.0), start=T0)
    ts, v, _ = fleet.array(4, T0, T0 + 900)
    got = [s for s in fleet.samples(T0, T0 + 900) if s.key == fleet.keys[4]]
    assert np.array_equal(ts, [s.ts for s in got])
    assert np.array_equal(v, np.array([s.values for s in got]))


def test_regime_changes_move_the_level_but_are_not_labelled():
    days = 6
    with_r = Fleet(cfg(anomaly_rate=0.0, regime_rate=1.0, interval=60.0), start=T0)
    without = Fleet(cfg(anomaly_rate=0.0, regime_rate=0.0, interval=60.0), start=T0)
    _, a, la = with_r.array(0, T0, T0 + days * 86400)
    _, b, _ = without.array(0, T0, T0 + days * 86400)
    assert not la.any() and with_r.anomalies(T0, T0 + days * 86400) == []
    diff = a[:, 0] - b[:, 0]
    jumps = np.flatnonzero(np.abs(np.diff(diff)) > 1e-9)
    assert len(jumps) >= 3  # about one change a day
    segments = np.split(diff, jumps + 1)
    assert all(np.ptp(seg) < 1e-9 for seg in segments)  # piecewise constant: a persisting new normal
    assert len({round(seg[0], 6) for seg in segments}) >= 3


# ---------------------------------------------------------------- anomaly kinds
def _windows(labels: np.ndarray) -> list[tuple[int, int]]:
    edges = np.diff(np.concatenate(([0], labels.astype(int), [0])))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True))


@pytest.mark.parametrize("kind", ANOMALY_KINDS)
def test_each_kind_changes_the_signal_only_in_its_windows(kind):
    fields = 2
    _, v, labels = make_series(kind, 3000, seed=3, fields=fields)
    _, clean, none = make_series(kind, 3000, seed=3, fields=fields, n_anomalies=0)
    assert v.shape == (3000, fields) and not none.any()
    wins = _windows(labels)
    assert len(wins) == 3 and wins[0][0] >= 1200  # clean first 40%
    assert np.array_equal(v[~labels], clean[~labels])
    spread = clean[:1200].std(axis=0)
    for a, b in wins:
        dev = v[a:b] - clean[a:b]
        f = int(np.argmax(np.abs(dev).max(axis=0)))  # the field hit
        w, c = v[a:b, f], clean[a:b, f]
        if kind in ("spike", "dip", "level_shift", "drift"):
            assert np.abs(dev[:, f]).max() > 1.5 * spread[f]
        if kind == "dip":
            assert (dev[:, f] < 0).all()
        if kind == "level_shift":
            assert np.ptp(dev[:, f]) < 1e-9  # a constant offset for the whole window
        if kind == "drift":
            assert abs(dev[-1, f]) > abs(dev[0, f]) * 5  # a ramp
        if kind == "stuck":
            assert np.ptp(w) == 0.0 and np.ptp(c) > 0
        if kind == "variance_burst":
            assert np.diff(w).std() > 3 * np.diff(c).std()
        if kind == "frequency_change":
            def peak(x):
                return int(np.argmax(np.abs(np.fft.rfft(x - np.polyval(np.polyfit(np.arange(len(x)), x, 1),
                                                                            np.arange(len(x)))))[1:])) + 1
            assert peak(w) > 1.5 * peak(c)
        if kind == "correlation_break":
            other = 1 - f
            before = np.corrcoef(clean[a:b, f], clean[a:b, other])[0, 1]
            during = np.corrcoef(w, v[a:b, other])[0, 1]
            assert before > 0.5 and during < before - 0.4


def test_make_series_rejects_bad_arguments():
    with pytest.raises(ValueError):
        make_series("nope", 100, 0)
    with pytest.raises(ValueError):
        make_series("correlation_break", 100, 0, fields=1)


def test_fleet_with_one_field_never_breaks_correlation():
    fleet = Fleet(cfg(fields=["value"], anomaly_rate=1.0, streams=30), start=T0)
    kinds = {a.kind for a in fleet.anomalies(T0, T0 + 3 * 3600)}
    assert "correlation_break" not in kinds and len(kinds) >= 4


# ---------------------------------------------------------------- line protocol
def _split_on(s: str, sep: str) -> list[str]:
    """Split on unescaped ``sep``, keeping escapes in the parts."""
    out, cur, i = [], "", 0
    while i < len(s):
        if s[i] == "\\" and i + 1 < len(s):
            cur += s[i : i + 2]
            i += 2
            continue
        if s[i] == sep:
            out.append(cur)
            cur = ""
        else:
            cur += s[i]
        i += 1
    return [*out, cur]


def _unesc(s: str) -> str:
    return "".join(p[1:] if p.startswith("\\") else p for p in _split_on_chars(s))


def _split_on_chars(s: str) -> list[str]:
    out, i = [], 0
    while i < len(s):
        n = 2 if s[i] == "\\" and i + 1 < len(s) else 1
        out.append(s[i : i + n])
        i += n
    return out


def _parse_line(line: str) -> tuple[str, dict[str, str], dict[str, float], int]:
    """A tiny InfluxDB line-protocol reader: ``series fields timestamp``."""
    series, fields, ts = _split_on(line, " ")
    meas, *tags = _split_on(series, ",")
    tag = dict((_unesc(k), _unesc(v)) for k, v in (_split_on(t, "=") for t in tags))
    val = {_unesc(k): float(v) for k, v in (_split_on(f, "=") for f in _split_on(fields, ","))}
    return _unesc(meas), tag, val, int(ts)


def test_line_protocol_round_trips_with_escaping_and_ns_timestamps():
    fleet = Fleet(cfg(measurement="pump room", streams=3), start=T0)
    samples = fleet.samples(T0 + 0.25, T0 + 2)
    weird = [
        type(samples[0])(StreamKey.of("m,x", {"a b": "c=d,e"}), 1.5, ("f 1", "g"), (2.0, float("nan"))),
        type(samples[0])(StreamKey.of("m"), 2.0, ("h",), (float("nan"),)),  # nothing to write
    ]
    text = "".join(line + "\n" for line in samples_to_lines(samples + weird))
    lines = text.splitlines()
    assert text.endswith("\n") and len(lines) == len(samples) + 1
    for smp, line in zip(samples, lines, strict=False):
        meas, tags, vals, ts = _parse_line(line)
        assert meas == "pump room" and tags == smp.key.label_dict()
        assert vals == dict(zip(smp.fields, smp.values, strict=True))
        assert ts == round(smp.ts * 1e9)
    assert lines[-1] == "m\\,x,a\\ b=c\\=d\\,e f\\ 1=2.0 1500000000"
    meas, tags, vals, ts = _parse_line(lines[-1])
    assert (meas, tags, vals, ts) == ("m,x", {"a b": "c=d,e"}, {"f 1": 2.0}, 1_500_000_000)


# ---------------------------------------------------------------- the source
class FakeTime:
    """A clock that only moves when the source sleeps."""

    def __init__(self, t: float):
        self.t = t
        self.sleeps = 0

    def __call__(self) -> float:
        return self.t

    async def sleep(self, d: float) -> None:
        self.sleeps += 1
        self.t += d
        await asyncio.sleep(0)


async def _collect(src: SimulatorSource, clock: FakeTime, n_batches: int) -> list[SourceBatch]:
    got: list[SourceBatch] = []

    async def emit(b: SourceBatch) -> None:
        got.append(b)
        if len(got) >= n_batches:
            await src.stop()

    task = asyncio.create_task(src.run(emit))
    for _ in range(10_000):  # bounded: the fake clock advances on every sleep
        if task.done():
            break
        await asyncio.sleep(0)
    await asyncio.wait_for(src.stop(), timeout=5)
    await asyncio.wait_for(task, timeout=5)
    return got


def test_source_is_a_source_and_history_is_the_fleet():
    src = SimulatorSource(cfg(), clock=lambda: T0)
    assert isinstance(src, Source) and src.connected and src.name == "simulator"
    hist = asyncio.run(src.history(None, T0 - 10, T0))
    assert hist == src.fleet.samples(T0 - 10, T0) and len(hist) == 10 * 12
    one = asyncio.run(src.history([src.fleet.keys[2]], T0 - 10, T0))
    assert [s.key for s in one] == [src.fleet.keys[2]] * 10


def test_source_emits_every_tick_and_resumes_without_gap_or_repeat():
    c = cfg(speed=10.0, streams=5)

    async def scenario():
        clock = FakeTime(T0)
        src = SimulatorSource(c, clock=clock, sleep=clock.sleep)
        first = await _collect(src, clock, 4)
        cursor = first[-1].cursor
        assert cursor is not None and set(cursor) >= {"t"}
        # restart later in real time: simulated time continues from the cursor
        clock2 = FakeTime(T0 + 5000)
        src2 = SimulatorSource(c, clock=clock2, sleep=clock2.sleep, resume=cursor)
        second = await _collect(src2, clock2, 3)
        return src, first, second, cursor

    src, first, second, cursor = asyncio.run(scenario())
    samples = [s for b in first + second for s in b.samples]
    ts = [s.ts for s in samples]
    assert ts == sorted(ts)
    pairs = [(s.key, s.ts) for s in samples]
    assert len(pairs) == len(set(pairs))  # nothing repeated
    end = second[-1].cursor["t"]
    assert samples == src.fleet.samples(T0, end)  # nothing skipped, values identical
    assert all(b.source == "simulator" for b in first + second)
    assert min(s.ts for b in second for s in b.samples) >= cursor["t"]


def test_source_chunks_large_catch_up_and_stop_is_idempotent():
    c = cfg(speed=1000.0, streams=5, max_batch=50)

    async def scenario():
        clock = FakeTime(T0)
        src = SimulatorSource(c, clock=clock, sleep=clock.sleep)
        got = await _collect(src, clock, 6)
        await src.stop()
        await src.stop()
        return got

    got = asyncio.run(scenario())
    assert all(0 < len(b.samples) <= 50 for b in got)
    ts = [s.ts for b in got for s in b.samples]
    assert np.all(np.diff(ts) >= 0)


def test_stop_before_run_returns_at_once():
    async def scenario():
        src = SimulatorSource(cfg(), clock=lambda: T0)
        await src.stop()

        async def emit(_b):  # pragma: no cover - never called
            raise AssertionError

        await asyncio.wait_for(src.run(emit), timeout=5)

    asyncio.run(scenario())
