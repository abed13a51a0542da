"""The compact history ring (sentinel.runtime.engine.ring): timestamps as uint32 counts from a
per-stream base, values in float32 or as float16 residuals; what comes back, and old checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sentinel.config import load_config_text
from sentinel.runtime.engine import Engine, Group
from sentinel.types import Sample, StreamKey

CAP = 64
DAY = 86400.0
KEY = StreamKey.of("pump", site="s1", pump="a")


def cfg(dtype: str = "float32", cap: int = CAP):
    return load_config_text(f"streams: {{history_size: {cap}, history_dtype: {dtype}, max_streams: 8}}\n"
                            "model: {hidden: 4, window: 2, device: cpu}\n"
                            "train: {min_history: 100000, retrain_interval: 0, drift_retrain: false}\n",
                            source="t.yaml")


def group(dtype: str = "float32", F: int = 1, streams: int = 2) -> Group:
    g = Group(F, cfg(dtype), "cpu")
    for i in range(streams):
        g.add(StreamKey.of("m", s=str(i)), tuple(f"f{j}" for j in range(F)))
    return g


def fill(g: Group, ts: np.ndarray, v: np.ndarray) -> None:
    """Append ``ts`` ``[T]`` (same times for every slot) and ``v`` ``[S, T, F]`` tick by tick."""
    slots = np.arange(v.shape[0])
    for i, t in enumerate(ts):
        g.append(slots, np.full(len(slots), t), v[:, i])


def test_irregular_ms_timestamps_and_float32_values_come_back_exactly() -> None:
    g = group()
    rng = np.random.default_rng(1)
    ts = 1_700_000_000 + np.cumsum(rng.integers(1, 90_000, 50)) / 1000.0  # irregular, whole milliseconds
    v = rng.normal(1013.25, 5.0, (2, 50, 1)).astype(np.float32)
    fill(g, ts, v)
    got_ts, got_v, fl = g.history(np.arange(2))
    np.testing.assert_array_equal(got_ts[:, -50:], np.broadcast_to(ts, (2, 50)))
    assert np.isnan(got_ts[:, :-50]).all() and np.isnan(got_v[:, :-50]).all() and not fl.any()
    np.testing.assert_array_equal(got_v[:, -50:], v)
    assert g.a["hist_t"].dtype == np.uint32 and g.a["hist_v"].dtype == np.float32


def test_sub_millisecond_timestamps_round_to_the_millisecond() -> None:
    g = group(streams=1)
    ts = 1_700_000_000.0 + np.array([0.0, 0.0004, 1.2346, 2.99951])
    fill(g, ts, np.ones((1, 4, 1), np.float32))
    got = g.history(np.arange(1), last=4)[0][0]
    np.testing.assert_allclose(got, ts, atol=5e-4 + 1e-6, rtol=0)
    np.testing.assert_array_equal(g.quantize(ts), got)  # quantize() gives what the ring gives back


def test_wrap_around_keeps_the_newest_cap_entries_in_time_order() -> None:
    g = group()
    T = 3 * CAP + 5
    ts = 1_000_000.0 + np.arange(T) * 10.0
    v = np.stack([np.arange(T), -np.arange(T)]).astype(np.float32)[..., None]
    fill(g, ts, v)
    got_ts, got_v, _ = g.history(np.arange(2))
    np.testing.assert_array_equal(got_ts[0], ts[-CAP:])
    np.testing.assert_array_equal(got_v[:, :, 0], v[:, -CAP:, 0])
    np.testing.assert_array_equal(g.history(np.arange(2), last=7)[0][1], ts[-7:])
    np.testing.assert_array_equal(g.oldest(2), [ts[-CAP], ts[-CAP]])


def test_gaps_beyond_the_offset_range_rebase_and_long_spans_coarsen_to_seconds() -> None:
    g = group(streams=1)
    # 30 days, then another 30: the second gap leaves uint32 milliseconds (49.7 days) behind the base
    ts = np.array([0.0, 1.5, 30 * DAY, 30 * DAY + 0.25, 60 * DAY, 60 * DAY + 2.0]) + 1_600_000_000
    fill(g, ts, np.arange(6, dtype=np.float32).reshape(1, 6, 1))
    assert g.a["hist_res"][0] == 1.0  # the ring spans 60 days: whole seconds
    got = g.history(np.arange(1), last=6)[0][0]
    np.testing.assert_allclose(got, ts, atol=0.5, rtol=0)
    # once a wrap finds the old entries gone, the ring goes back to milliseconds (what was written at
    # one second keeps that rounding)
    later = 60 * DAY + 1_600_000_000 + 10 + np.arange(2 * CAP) * 0.001
    fill(g, later, np.zeros((1, 2 * CAP, 1), np.float32))
    assert g.a["hist_res"][0] == 1000.0
    fill(g, later[-1:] + 45 * DAY, np.zeros((1, 1, 1), np.float32))  # fits 2^32 ms: no rebase
    got = g.history(np.arange(1))[0][0]
    assert got[-1] == later[-1] + 45 * DAY
    np.testing.assert_allclose(got[-7:-1], later[-6:], atol=1e-6, rtol=0)
    np.testing.assert_allclose(got[:-1], later[-CAP + 1:], atol=0.5, rtol=0)


def test_float16_values_keep_a_large_offset_signal_to_a_small_fraction_of_its_spread() -> None:
    g = group("float16", F=2)
    rng = np.random.default_rng(3)
    T = 2 * CAP + 17  # wrapped twice: the references were re-centred on the ring
    v = np.stack([rng.normal(1013.25, 0.1, (T, 2)), rng.normal(-40.0, 3.0, (T, 2))])
    v[0, 30:40, 1] = np.nan  # a missing field stays missing
    fill(g, 1e9 + np.arange(T), v)
    _ts, got, _ = g.history(np.arange(2))
    want = v[:, -CAP:]
    assert np.array_equal(np.isnan(got), np.isnan(want))
    err = np.nanmax(np.abs(got - want), axis=1)
    spread = np.nanstd(want, axis=1)
    assert (err <= 2e-3 * spread + 1e-4 * np.abs(np.nanmean(want, axis=1)) * 2**-10).all(), (err, spread)
    assert g.a["hist_v"].dtype == np.float16


def test_float16_values_far_beyond_its_range_grow_the_scale_instead_of_overflowing() -> None:
    g = group("float16", streams=1)
    v = np.array([1.0, 2.0, 1e6, -3e7, 5.0, 1e-3], np.float64).reshape(1, 6, 1)
    fill(g, 1e9 + np.arange(6), v)
    got = g.history(np.arange(1), last=6)[1][0, :, 0]
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, v[0, :, 0], rtol=0, atol=2**-11 * 3e7 * 1.01)
    np.testing.assert_allclose(got[2:4], v[0, 2:4, 0], rtol=2**-10)


def test_warm_up_history_is_merged_with_duplicates_at_millisecond_resolution() -> None:
    e = Engine(cfg())
    e.process([Sample(KEY, 100.0004, ("value",), (5.0,))])
    e.load_history([Sample(KEY, float(t), ("value",), (float(t),)) for t in range(90, 101)]
                   + [Sample(KEY, 100.0001, ("value",), (9.0,))])  # the live sample again, to the ms
    g, slot = e.groups[1], e.index[KEY][1]
    ts, v, _ = g.history(np.array([slot]), last=int(g.a["hist_n"][slot]))
    assert ts[0].tolist() == [float(t) for t in range(90, 101)]
    assert v[0, :, 0].tolist() == [float(t) for t in range(90, 100)] + [5.0]


def to_old_layout(e: Engine, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The checkpoint as the landed main wrote it: hist_ts float64 and hist_v float32 per ring position."""
    old = {k: v for k, v in tensors.items() if k.split(".")[-1] not in (
        "hist_t", "hist_base", "hist_res", "hist_v", "hist_ref", "hist_exp")}
    for F, g in e.groups.items():
        C = g.capacity
        n = np.minimum(g.a["hist_n"][:C], g.cap)
        ts, v = np.full((C, g.cap), np.nan), np.full((C, g.cap, F), np.nan, np.float32)
        for s in range(C):
            if n[s]:
                t_s, v_s, _ = g.history(np.array([s]), last=int(n[s]))
                pos = (g.a["hist_n"][s] - n[s] + np.arange(n[s])) % g.cap
                ts[s, pos], v[s, pos] = t_s[0], v_s[0]
        old[f"g{F}.a.hist_ts"] = torch.from_numpy(ts)
        old[f"g{F}.a.hist_v"] = torch.from_numpy(v)
        # the band's chart rings held the bounds themselves, in float32
        exp = g.a["ch_exp"][:C]
        old[f"g{F}.a.ch_lo"] = torch.from_numpy((exp - g.a["ch_lo"][:C]).astype(np.float32))
        old[f"g{F}.a.ch_hi"] = torch.from_numpy((exp + g.a["ch_hi"][:C]).astype(np.float32))
    return old


@pytest.mark.parametrize(("was", "now"), [("float32", "float32"), ("float32", "float16")])
def test_an_old_layout_checkpoint_restores_and_scores_as_before(was: str, now: str) -> None:
    e = Engine(cfg(was))
    keys = [KEY, StreamKey.of("pump", site="s1", pump="b")]
    T = CAP + 23  # wrapped
    for i in range(T):
        e.process([Sample(k, 5000.0 + i * 1.5, ("value",), (20.0 + np.sin(i / 5) + j,)) for j, k in enumerate(keys)])
    g = e.groups[1]
    g.a["ch_exp"][:2, :5] = 1013.25  # a band on the chart rings (these streams are not trained)
    g.a["ch_lo"][:2, :5], g.a["ch_hi"][:2, :5] = 0.5, 0.75
    meta, tensors = e.snapshot()
    old = to_old_layout(e, tensors)
    assert "g1.a.hist_ts" in old and "g1.a.hist_t" not in old
    r = Engine(cfg(now))
    r.restore(meta, old)
    for k in keys:
        s = e.index[k][1]
        want = e.groups[1].history(np.array([s]))
        got = r.groups[1].history(np.array([r.index[k][1]]))
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_allclose(got[1], want[1], rtol=0, atol=0 if now == "float32" else 2e-3)
        np.testing.assert_array_equal(got[2], want[2])
    np.testing.assert_array_equal(r.groups[1].a["hist_n"], e.groups[1].a["hist_n"])
    for k in ("ch_exp", "ch_lo", "ch_hi", "ch_thr", "ch_err", "ch_score"):
        np.testing.assert_array_equal(r.groups[1].a[k], g.a[k], err_msg=k)
    ch, want_ch = r.chart_series(KEY), e.chart_series(KEY)
    assert ch is not None and want_ch is not None and ch.lower is not None and ch.upper is not None
    np.testing.assert_array_equal(ch.lower, want_ch.lower)
    np.testing.assert_array_equal(ch.upper, want_ch.upper)
    first = (CAP - T % CAP) % CAP  # the point at chart ring position 0 (the rings hold the last CAP)
    assert ch.lower[first] == [1012.75] and ch.upper[first] == [1014.0]
    # a new-layout checkpoint restores too, and both keep appending where they were
    r2 = Engine(cfg(was))
    r2.restore(*e.snapshot())
    for x in (e, r, r2):
        x.process([Sample(k, 5000.0 + T * 1.5, ("value",), (7.0,)) for k in keys])
    for x in (r, r2):
        np.testing.assert_array_equal(x.groups[1].history(np.arange(2))[0], e.groups[1].history(np.arange(2))[0])


def test_a_checkpoint_of_another_history_size_is_refused() -> None:
    e = Engine(cfg())
    e.process([Sample(KEY, 1.0, ("value",), (1.0,))])
    with pytest.raises(ValueError, match="history_size 64 differs from the config's 128"):
        Engine(cfg(cap=128)).restore(*e.snapshot())


def test_entry_bytes_shrink() -> None:
    for dtype, per_entry in (("float32", 4 + 4 + 1), ("float16", 4 + 2 + 1)):
        g = group(dtype, streams=1)
        ring = sum(g.a[k][0].nbytes for k in ("hist_t", "hist_v", "hist_flag"))
        assert ring == CAP * per_entry  # was 8 + 4 + 1 = 13


def test_float16_residuals_are_recentred_after_a_level_shift_of_a_thousand_spreads() -> None:
    g = group("float16", streams=1)
    rng = np.random.default_rng(5)
    v = np.concatenate((rng.normal(0.0, 0.01, CAP), rng.normal(1000.0, 0.01, 3 * CAP))).reshape(1, -1, 1)
    fill(g, 1e9 + np.arange(v.shape[1]), v)
    assert abs(g.a["hist_ref"][0, 0] - 1000.0) < 0.01  # re-centred on the new level
    got = g.history(np.arange(1))[1][0, :, 0]
    assert np.abs(got - v[0, -CAP:, 0]).max() < 0.05 * 0.01 + 2**-24 * 1000  # float32's own rounding at 1000


def test_warm_up_of_many_streams_at_once_keeps_each_streams_newest_samples_in_order() -> None:
    e = Engine(cfg())
    keys = [StreamKey.of("pump", site="s1", pump=str(i)) for i in range(3)]
    e.process([Sample(keys[0], 500.0, ("value",), (-1.0,))])  # one live sample: history goes before it
    rng = np.random.default_rng(2)
    hist = []
    for i, k in enumerate(keys):
        ts = rng.permutation(np.arange(400.0, 400.0 + (10, CAP + 30, 5)[i]))  # out of order; one over cap
        hist += [Sample(k, float(t), ("value",), (float(t) + i,)) for t in ts]
    hist.append(Sample(keys[2], 401.0, ("value",), (float("inf"),)))  # unusable: skipped
    assert e.load_history(hist) == 10 + CAP + 30 + 5
    g = e.groups[1]
    for i, k in enumerate(keys):
        s = e.index[k][1]
        ts, v, _ = g.history(np.array([s]), last=int(g.a["hist_n"][s]))
        n = (10, CAP + 30, 5)[i]
        want = np.arange(400.0, 400.0 + n)[-CAP:]
        if i == 0:
            want = np.append(want, 500.0)
        np.testing.assert_array_equal(ts[0], want[-CAP:])
        np.testing.assert_array_equal(v[0, :, 0], np.where(want == 500.0, -1.0, want + i)[-CAP:])
        assert g.a["interval"][s] == 1.0 and g.a["last_ts"][s] == want[-1]


def test_float16_an_outlying_first_value_is_not_kept_as_the_centre() -> None:
    g = Group(1, cfg("float16", cap=256), "cpu")
    g.add(KEY, ("value",))
    rng = np.random.default_rng(7)
    v = np.concatenate(([0.0], rng.normal(1000.0, 0.01, 100))).reshape(1, -1, 1)  # a boot value, then the level
    fill(g, 1e9 + np.arange(101), v)
    assert abs(g.a["hist_ref"][0, 0] - 1000.0) < 0.05  # re-centred within the first few samples
    got = g.history(np.arange(1), last=101)[1][0, :, 0]
    err = np.abs(got - v[0, :, 0])
    assert err[4:].max() < 0.05 * 0.01 + 2**-24 * 1000  # after the first check at 4 entries: float32-like


def test_chart_rings_hold_no_more_than_the_history_and_a_checkpoint_with_120_entries_restores() -> None:
    e = Engine(cfg())
    keys = [KEY, StreamKey.of("pump", site="s1", pump="b"), StreamKey.of("pump", site="s1", pump="c")]
    for i in range(CAP + 23):  # wrapped; the third stream starts late (its rings not yet full)
        e.process([Sample(k, 5000.0 + i, ("value",), (20.0 + np.sin(i / 5) + j,)) for j, k in enumerate(keys)
                   if j < 2 or i >= CAP - 10])
    g = e.groups[1]
    assert g.chart == CAP and g.a["ch_score"].shape[1] == CAP
    rng = np.random.default_rng(1)
    written = np.arange(CAP)[None, :] < g.a["hist_n"][:3, None]
    g.a["ch_score"][:3] = np.where(written, rng.standard_normal((3, CAP)), np.nan)  # to tell positions apart
    ch = e.chart_series(KEY)
    assert ch is not None and len(ch.ts) == len(ch.score) == len(ch.state) == CAP
    meta, tensors = e.snapshot()
    C = int(meta["groups"]["1"]["capacity"])
    n = g.a["hist_n"][:C]
    old = dict(tensors)  # the rings as they were, 120 entries whatever history_size was
    for k in [k for k in g.a if k.startswith("ch_")]:
        x = np.full((C, 120, *g.a[k].shape[2:]), g.slots.spec[k][2], dtype=g.a[k].dtype)
        for s in range(C):
            for q in range(max(0, int(n[s]) - CAP), int(n[s])):
                x[s, q % 120] = g.a[k][s, q % CAP]
        old[f"g1.a.{k}"] = torch.from_numpy(x)
    r = Engine(cfg())
    r.restore(meta, old)
    for k in [k for k in g.a if k.startswith("ch_")]:
        np.testing.assert_array_equal(r.groups[1].a[k][:C], g.a[k][:C], err_msg=k)
    for k in keys:
        a, b = r.chart_series(k), e.chart_series(k)
        assert a is not None and b is not None
        for x, y in ((a.ts, b.ts), (a.score, b.score), (a.state, b.state), (a.expected, b.expected)):
            np.testing.assert_array_equal(np.asarray(x, np.float64), np.asarray(y, np.float64))
