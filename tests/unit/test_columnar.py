"""The columnar hot path agrees with the object path: parser (same samples, rejections, errors,
counts) and engine (same verdicts, rejections, events and state), on mixed bodies and batches."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.columns import Columns, SeriesTable, join, without_measurement
from sentinel.config import load_config_text
from sentinel.runtime.engine import BURN_IN, Engine
from sentinel.sources.selector import Selection, StreamSelector
from sentinel.types import Sample, StreamKey

NOW_NS = 1_700_000_000 * 10**9


def per_line(sel: Selection) -> StreamSelector:
    """A selector whose columnar path is off: every body takes the per-line path."""
    s = StreamSelector(sel)
    s._bulk.parse = lambda *a, **k: None  # type: ignore[method-assign]
    return s


def outcome(o) -> tuple:
    return ([(x.key, repr(x.ts), x.fields, tuple(map(repr, x.values))) for x in o.samples], sorted(o.rejected.items()),
            [(e.lineno, e.reason, e.line, e.message) for e in o.errors], o.lines, o.max_ts_ns)


num_text = st.one_of(
    st.floats(-1e6, 1e6, allow_nan=False).map(lambda x: f"{x:.4f}"),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers(-(2**63), 2**63).map(lambda i: f"{i}i"),
    st.integers(0, 2**64).map(lambda i: f"{i}u"),
    st.sampled_from(["1e999", "1.", ".5", "t", "nan", "-0", "1.5E+3", "x"]),
)
heads = st.sampled_from(["m,a=1", "m,a=2", "m,a=3", "n,a=1", "skip,a=1", "m,a=1,b=2", "m,b=2,a=1"])
layouts = st.sampled_from(["x", "x", "x", "y,x", "x,y", "z"])
stamps = st.one_of(st.integers(1_699_999_000, 1_700_001_000).map(str), st.just(""),
                   st.integers(0, 10**19).map(str), st.sampled_from(["17e8", "-1", "1700000000.5"]))
extra = st.sampled_from(["", "", "", "# comment", "# a b", "m,a=1 x=1 1700000000 junk", "bad", " m,a=1 x=1",
                        "m,a=1 x=1 ", "m,a=1  1", "m,a=1 x=1\t1700000000", "m,a=1 x=1 -5", "m,a=1 x=1 +5"])


@st.composite
def body(draw) -> str:
    dirty = draw(st.booleans())  # clean bodies (one layout per head, plain numbers) take the columnar path

    def val() -> str:
        return draw(num_text) if dirty and draw(st.integers(0, 9)) == 0 else f"{draw(st.floats(-1e3, 1e3)):.3f}"

    lines = []
    for _ in range(draw(st.integers(1, 25))):
        head = draw(heads)
        lay = draw(layouts) if dirty else ["x", "y,x", "x,y"][len(head) % 3]
        fields = ",".join(f"{k}={val()}" for k in lay.split(","))
        t = draw(stamps) if dirty and draw(st.integers(0, 6)) == 0 else str(1_700_000_000 + draw(st.integers(-5, 50)))
        lines.append(f"{head} {fields}" + (f" {t}" if t else ""))
        if dirty and draw(st.integers(0, 8)) == 0:
            lines.append(draw(extra))
    return "\n".join(lines) + ("\n" if draw(st.booleans()) else "")


selections = st.sampled_from([
    Selection(measurements=frozenset({"m", "n"}), max_future_ns=600 * 10**9),
    Selection(fields=("x", "y")),
    Selection(max_streams=3, max_future_ns=10 * 10**9, max_age_ns=3 * 10**9),
])


@settings(max_examples=300, deadline=None)
@given(selections, st.lists(body(), min_size=1, max_size=4), st.sampled_from(["s", "ns"]))
def test_columnar_parse_agrees_with_the_per_line_path(sel: Selection, bodies: list[str], precision: str) -> None:
    fast, slow = StreamSelector(sel), per_line(sel)
    for b in bodies * 2:  # the second pass: every head known, so the columnar path is tried
        now = NOW_NS if precision == "s" else 1_700_000_030
        assert outcome(fast.parse_body(b, precision, now)) == outcome(slow.parse_body(b, precision, now))
        assert fast.stream_count == slow.stream_count


@pytest.mark.parametrize("stamps", [
    ["1700000000000000001", "1700000000000000002", "1700000000000000003"],  # one width: the digit matrix
    ["0001700000000000001", "1700000000000000002", "0000000000000000000"],  # leading zeros, zero
    ["9223372036854775807", "1700000000000000002", "1700000000000000003"],  # int64's largest
    ["9223372036854775808", "1700000000000000002", "1700000000000000003"],  # beyond int64
    ["9999999999999999999", "1700000000000000002", "1700000000000000003"],  # the largest 19 digits
    ["1700000000000000001", "170000000000000002", "17000000000000000003"],  # widths differ
])
def test_nanosecond_stamps_of_one_width_parse_as_the_per_line_path(stamps: list[str]) -> None:
    sel = Selection(measurements=frozenset({"m"}), max_future_ns=10**19)
    fast, slow = StreamSelector(sel), per_line(sel)
    body = "\n".join(f"m,a={i} x={i}.5 {t}" for i, t in enumerate(stamps))
    for _ in range(2):  # the second pass: every head known, so the columnar path is tried
        for precision in ("ns", "us"):
            now = 1_700_000_000 * 10**9
            assert outcome(fast.parse_body(body, precision, now)) == outcome(slow.parse_body(body, precision, now))


def test_a_familiar_body_takes_the_columnar_path_and_reads_as_the_same_samples() -> None:
    sel = Selection(measurements=frozenset({"m"}), max_future_ns=600 * 10**9)
    fast, slow = StreamSelector(sel), per_line(sel)
    lines = [f"m,a={i} x={i}.5,y={i}i {1_700_000_000 + (7 - i)}" for i in range(8)] + ["other,a=1 x=1 1700000000"]
    body = "\n".join(lines)
    for _ in range(3):
        got, ref = fast.parse_body(body, "s", NOW_NS), slow.parse_body(body, "s", NOW_NS)
        assert outcome(got) == outcome(ref)
    assert isinstance(got.samples, Columns) and got.samples == ref.samples
    assert [s.ts for s in got.samples] == sorted(s.ts for s in ref.samples)
    # a new series in a body: the whole body takes the per-line path (streams are created in line order)
    got = fast.parse_body(body + "\nm,a=99 x=1 1700000001", "s", NOW_NS)
    assert not isinstance(got.samples, Columns) and len(got.samples) == 9


# ----------------------------------------------------------------------------- engine

CONFIG = """
streams: {history_size: 64, max_gap_intervals: 5, rewarm_samples: 2, max_streams: 12, max_fields: 3}
model: {hidden: 8, window: 4}
train: {min_history: 100000, retrain_interval: 0, drift_retrain: false}
alerts: {for: 0, for_ticks: 0, resolve_for: 0, resolve_for_ticks: 0}
"""


def make_ready(e: Engine, seed: int = 0) -> None:
    """Random weights and a calibrated threshold for every stream (what a training would leave)."""
    gen = torch.Generator().manual_seed(seed)
    for g in e.groups.values():
        sl = np.flatnonzero(g.a["alive"][: g.capacity])
        n, F = len(sl), g.F
        params = {k: torch.randn((n, *g.bank.t[k].shape[1:]), generator=gen) * 0.3 for k in ("W", "b", "D", "d")}
        g.bank.load(sl, params, torch.zeros(n, F), torch.ones(n, F))
        g.bank.reset_state(sl)
        xs = torch.randn((n, 40, F), generator=gen).numpy()
        _fe, err = g.bank.run_sequence(sl, xs)
        g.thr.calibrate(sl, [x[BURN_IN:] for x in err.numpy()])
        g.a["ready"][sl] = True
        g.a["calib_err"][sl] = g.a["err_ewma"][sl] = err.numpy()[:, BURN_IN:].mean(1)


def verdicts(out) -> tuple:
    return (out.score.tolist(), [x if x == x else "nan" for x in out.error.tolist()],
            [x if x == x else "nan" for x in out.threshold.tolist()], out.firing.tolist(), out.ready.tolist(),
            out.rejected, out.state.tolist(), [(str(ev.key), ev.status, ev.at, ev.score, ev.top_fields)
                                               for ev in out.events])


def state(e: Engine) -> dict:
    snap = {}
    for F, g in e.groups.items():
        snap.update({f"{F}.{k}": v.copy() for k, v in g.a.items()})
        snap.update({f"{F}.bank.{k}": v.float().numpy().copy() for k, v in g.bank.t.items()})  # bf16 W: exact
    return snap


K = [StreamKey.of("pump", id=str(i)) for i in range(8)]
ONE, TWO = ("temp",), ("temp", "vib")


def test_columnar_engine_path_equals_the_object_path_on_a_mixed_batch() -> None:
    cfg = load_config_text(CONFIG, source="test.yaml")
    a, b = Engine(cfg), Engine(cfg)
    rng = np.random.default_rng(3)
    first = [Sample(k, 1.0, ONE if i < 4 else TWO, tuple(rng.standard_normal(1 if i < 4 else 2)))
             for i, k in enumerate(K)]
    for e in (a, b):
        e.process(first)
        make_ready(e)
    table = SeriesTable()
    nan, inf = math.nan, math.inf
    for t in range(2, 40):
        batch = []
        for i, k in enumerate(K):
            F = 1 if i < 4 else 2
            v = tuple(float(x) for x in rng.standard_normal(F) * (8 if t % 13 == 0 and i == 2 else 1))
            batch.append(Sample(k, float(t), ONE if F == 1 else TWO, v))
        batch += [  # rejects and second rounds, mixed in
            Sample(K[0], float(t), ONE, (0.1,)),  # duplicate
            Sample(K[1], t - 0.5, ONE, (0.1,)),  # out of order
            Sample(K[2], t + 0.5, ONE, (0.2,)),  # a second sample of the stream: round 1
            Sample(K[3], t + 0.25, ONE, (nan,)),  # no values
            Sample(K[4], t + 0.5, TWO, (inf, 1.0)),  # non-finite
            Sample(K[5], t + 0.5, TWO, (nan, 1.0)),  # one field missing
            Sample(K[6], t + 0.5, ("temp", "cur"), (1.0, 2.0)),  # fields that are not the stream's
            Sample(K[7], t + 0.5, ("a", "b", "c", "d"), (1.0, 2.0, 3.0, 4.0)),  # too many fields
        ]
        rng.shuffle(batch)  # type: ignore[arg-type]
        cols = Columns.from_samples(batch, table)
        assert [repr(x) for x in cols] == [repr(x) for x in batch]
        oa, ob = a.process(batch), b.process(cols)
        assert verdicts(oa) == verdicts(ob)
    assert a.rejected == b.rejected and a.rejected["duplicate"] > 0 and a.rejected["bad_fields"] > 0
    sa, sb = state(a), state(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)
    # a new stream or a stream's fields in another order: the object path, same results
    new = [Sample(StreamKey.of("pump", id="new"), 50.0, ONE, (1.0,)), Sample(K[4], 50.0, ("vib", "temp"), (1.0, 2.0))]
    assert verdicts(b.process(Columns.from_samples(new, table))) == verdicts(a.process(new))
    assert b.n_streams == a.n_streams == 9


def test_join_keeps_columns_of_one_table_and_falls_back_to_samples() -> None:
    t = SeriesTable()
    x = Columns.from_samples([Sample(K[0], 1.0, ONE, (1.0,))], t)
    y = Columns.from_samples([Sample(K[1], 2.0, TWO, (1.0, math.nan))], t)
    j = join([x, [], y])
    assert isinstance(j, Columns) and j == list(x) + list(y) and j.values.shape == (2, 2)
    z = join([x, Columns.from_samples([Sample(K[2], 3.0, ONE, (1.0,))], SeriesTable())])
    assert isinstance(z, list) and len(z) == 2


def test_without_measurement_drops_our_own_write_back_from_columns_and_lists() -> None:
    own = StreamKey.of("sentinel_scores", id="1")
    batch = [Sample(K[0], 1.0, ONE, (1.0,)), Sample(own, 1.0, ONE, (0.5,)), Sample(K[1], 2.0, ONE, (2.0,))]
    cols = Columns.from_samples(batch, SeriesTable())
    for samples in (cols, batch):
        kept = without_measurement(samples, "sentinel_scores")
        assert kept is not None and [s.key for s in kept] == [K[0], K[1]]
        assert without_measurement(samples, "other") is None
    assert isinstance(without_measurement(cols, "sentinel_scores"), Columns)
