"""Line-protocol parser: grammar cases, fast path == full scanner, round trips, fuzzing."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sentinel.lineprotocol import Point, format_point, parse, parse_field_value, samples_to_lines
from sentinel.sources.selector import Selection, StreamSelector
from sentinel.types import Sample, StreamKey


def sel(**kw) -> StreamSelector:
    return StreamSelector(Selection(**kw))


# ----------------------------------------------------------------------------- grammar


@pytest.mark.parametrize(
    ("text", "value"),
    [("1", 1.0), ("-1.5e3", -1500.0), (".5", 0.5), ("12i", 12), ("-12i", -12), ("12u", 12), ("t", True),
     ("TRUE", True), ("False", False), ("f", False), ("9223372036854775807i", 2**63 - 1)],
)
def test_field_values(text: str, value: object) -> None:
    got = parse_field_value(text)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize("text", ["", "1x", "nan", "inf", "-inf", "1_0", "1e999", "12.5i", "-1u", "tru", "9223372036854775808i",
                                  "1e", "٣", "1 "])
def test_bad_field_values(text: str) -> None:
    with pytest.raises(ValueError):
        parse_field_value(text)


def test_escapes_quotes_and_types() -> None:
    body = (
        'my\\ meas\\,x,tag\\ k=v\\=1\\,2,b=c str="a \\"q\\" \\\\ , = x",i=5i,u=7u,f=1.5,b=t 1700000000000000001\n'
        "# a comment\n\n   \n"
        'm,t=x s="multi\nline" 5\n'
        "m f=1\n"
    )
    pts, errs = parse(body)
    assert errs == []
    assert pts[0] == Point("my meas,x", (("tag k", "v=1,2"), ("b", "c")),
                           {"str": 'a "q" \\ , = x', "i": 5, "u": 7, "f": 1.5, "b": True}, 1700000000000000001)
    assert pts[1].fields == {"s": "multi\nline"} and pts[1].ts == 5
    assert pts[2] == Point("m", (), {"f": 1.0}, None)


@pytest.mark.parametrize(
    ("line", "reason"),
    [("m", "lp_missing_fields"), (",t=1 f=1", "lp_missing_measurement"), ("m,t f=1", "lp_bad_tag"),
     ("m,t= f=1", "lp_bad_tag"), ("m,=v f=1", "lp_bad_tag"), ("m f=", "lp_bad_field_value"), ("m f", "lp_bad_field"),
     ("m f=1,", "lp_bad_field"), ("m f=abc", "lp_bad_field_value"), ('m f="abc', "lp_unbalanced_quotes"),
     ("m f=1 12x", "lp_bad_timestamp"), ("m f=1 1 2", "lp_bad_timestamp"), ("m  ", "lp_missing_fields"),
     ("m f=1 99999999999999999999", "lp_bad_timestamp")],
)
def test_bad_lines_are_rejected_with_a_reason(line: str, reason: str) -> None:
    pts, errs = parse(line + "\nok v=1 1")
    assert [e.reason for e in errs] == [reason] and errs[0].lineno == 1
    assert [p.measurement for p in pts] == ["ok"]
    out = sel().parse_body(line + "\nok v=1 1")
    assert out.rejected == {reason: 1} and len(out.samples) == 1 and out.lines == 2


def test_precision_and_missing_timestamp() -> None:
    out = sel().parse_body("m v=1 1700000000\nm v=2", precision="s", now_ns=1_800_000_000 * 10**9)
    assert [s.ts for s in out.samples] == [1_700_000_000.0, 1_800_000_000.0]
    out = sel().parse_body("m v=1 1700000000123", precision="ms")
    assert out.samples[0].ts == pytest.approx(1_700_000_000.123)
    assert out.max_ts_ns == 1_700_000_000_123_000_000


# ----------------------------------------------------------------------------- selection


def test_multivariate_streams_fix_field_order_and_mask_missing() -> None:
    s = sel()
    out = s.parse_body("pump,site=a,id=1 temp=20,vib=3i,state=\"ok\" 2\npump,id=1,site=a temp=21 3\n"
                       "pump,site=a,id=1 vib=4i 1\npump,site=a,id=1 on=true 4")
    key = StreamKey.of("pump", site="a", id="1")
    assert [x.key for x in out.samples] == [key] * 3  # the bool-only point has no selected field
    assert [round(x.ts * 1e9) for x in out.samples] == [1, 2, 3]  # sorted by time within the body
    assert math.isnan(out.samples[0].values[0]) and out.samples[0].values[1] == 4.0
    assert out.samples[1].values == (20.0, 3.0) and math.isnan(out.samples[2].values[1])


def test_per_field_streams_filters_and_limit() -> None:
    refused = []
    s = StreamSelector(Selection(measurements=frozenset({"pump"}), tags={"site": frozenset({"a"})},
                                 ignore_tags=frozenset({"host"}), fields=("temp", "on"), stream_per="field",
                                 max_streams=2), on_refused=refused.append)
    out = s.parse_body("pump,site=a,id=1,host=h1 temp=20,on=t,vib=1 1\npump,site=b,id=1 temp=1 1\n"
                       "other,site=a temp=1 1\npump,site=a,id=2 temp=5 2\npump,site=a,id=2 temp=6 3")
    assert {(str(x.key), x.values) for x in out.samples} == {
        ("pump,field=temp,id=1,site=a", (20.0,)), ("pump,field=on,id=1,site=a", (1.0,))}
    assert out.rejected == {"max_streams": 2} and refused == [StreamKey.of("pump", site="a", id="2", field="temp")]
    assert s.stream_count == 2


# ----------------------------------------------------------------------------- properties

names = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=8)
meas_names = names.filter(lambda s: not s.startswith("#"))
values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-(2**63), 2**63 - 1),
    st.booleans(),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=10),
)
points = st.builds(
    Point,
    meas_names,
    st.lists(st.tuples(names, names), max_size=3).map(tuple),
    st.dictionaries(names, values, min_size=1, max_size=4),
    st.one_of(st.none(), st.integers(-(2**62), 2**62)),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(points, min_size=1, max_size=6))
def test_round_trip_of_generated_points(pts: list[Point]) -> None:
    body = "\n".join(format_point(p) for p in pts)
    got, errs = parse(body)
    assert errs == []
    assert got == pts


def _reference_samples(body: str) -> list[tuple]:
    """What the scanner-only path yields (each line alone through the full grammar)."""
    ref = StreamSelector(Selection())
    out, rej = [], {}
    pts, errs = parse(body)
    for p in pts:
        ref.add_point(p.measurement, p.tags, p.fields, 7 if p.ts is None else p.ts, out, rej)
    out.sort(key=lambda s: s.ts)
    return [(s.key, s.ts, s.fields, s.values) for s in out], len(errs)


simple = st.text(st.sampled_from("ab,= 1.-i\\\"#tfTu9\n"), max_size=60)
unquoted = st.text(st.sampled_from("ab,= 1.-ie#tfTu9\n\r"), max_size=60)  # always the fast path first


@settings(max_examples=500, deadline=None)
@given(st.one_of(simple, unquoted))
def test_fast_path_agrees_with_the_full_scanner(body: str) -> None:
    got = StreamSelector(Selection()).parse_body(body, now_ns=7)
    ref, nerr = _reference_samples(body)
    assert [(s.key, s.ts, s.fields, tuple(map(repr, s.values))) for s in got.samples] == \
        [(k, t, f, tuple(map(repr, v))) for k, t, f, v in ref]
    assert sum(v for k, v in got.rejected.items() if k.startswith("lp_")) == nerr


@settings(max_examples=300, deadline=None)
@given(st.lists(points, min_size=1, max_size=5), st.data())
def test_mutated_bodies_never_crash_and_keep_only_valid_lines(pts: list[Point], data: st.DataObject) -> None:
    body = "\n".join(format_point(p) for p in pts)
    pos = data.draw(st.integers(0, len(body)))
    junk = data.draw(st.text(max_size=5))
    mutated = body[:pos] + junk + body[pos + data.draw(st.integers(0, 3)):]
    s = StreamSelector(Selection())
    out = s.parse_body(mutated, now_ns=7)
    ref, _nerr = _reference_samples(mutated)
    assert len(out.samples) == len(ref)
    assert out.lines >= len(out.errors)
    assert {x.key for x in out.samples} <= {k for k, *_ in ref}
    assert s.stream_count == len({k for k, *_ in ref})


num_text = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers(-(2**64), 2**64).map(lambda i: f"{i}i"),
    st.integers(-5, 2**65).map(lambda i: f"{i}u"),
    st.sampled_from(["1e999", "-1e999", "1.", ".5", "1e5", "t", "nan", "1_0", "00.1", "-0", "1.5E+3"]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["m,a=1", "m,a=2", "n"]), st.sampled_from(["x", "y", "x,y", "y,x"]),
                          st.lists(num_text, min_size=2, max_size=2), st.integers(0, 10**19)),
                min_size=1, max_size=30))
def test_repeated_heads_take_the_layout_path_and_still_agree(rows) -> None:
    lines = []
    for head, keys, vals, ts in rows:
        fields = ",".join(f"{k}={v}" for k, v in zip(keys.split(","), vals, strict=False))
        lines.append(f"{head} {fields} {ts}")
    body = "\n".join(lines)
    got = StreamSelector(Selection()).parse_body(body, now_ns=7)
    ref, nerr = _reference_samples(body)
    assert [(s.key, s.ts, s.fields, tuple(map(repr, s.values))) for s in got.samples] == \
        [(k, t, f, tuple(map(repr, v))) for k, t, f, v in ref]
    assert sum(v for k, v in got.rejected.items() if k.startswith("lp_")) == nerr


# ----------------------------------------------------------------------------- samples through the codec

_names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=8)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_names, st.dictionaries(_names, _names, max_size=3),
                          st.dictionaries(_names, st.floats(allow_nan=False, allow_infinity=False), min_size=1,
                                          max_size=3),
                          st.integers(0, 2**40)), min_size=1, max_size=5))
def test_samples_to_lines_then_parse_is_the_identity(rows: list) -> None:
    """format -> parse = identity for any measurement, tag, field name and value (escapes included)."""
    samples = [Sample(StreamKey.of(m, tags), ts / 1e3, tuple(fields), tuple(fields.values()))
               for m, tags, fields, ts in rows if not m.startswith("#")]  # a comment line: left out
    points, errors = parse("\n".join(samples_to_lines(samples)))
    assert errors == []
    assert [(p.measurement, dict(p.tags), p.fields, p.ts) for p in points] == \
        [(s.key.measurement, s.key.label_dict(), dict(zip(s.fields, s.values, strict=True)), round(s.ts * 1e9))
         for s in samples]


def test_samples_to_lines_leaves_out_what_line_protocol_cannot_say() -> None:
    nan, inf = math.nan, math.inf
    samples = [Sample(StreamKey.of("m", a="", b="x"), 1.0, ("f", "g", "h"), (1.0, nan, inf)),
               Sample(StreamKey.of("m"), 2.0, ("f",), (nan,)),
               Sample(StreamKey.of("m", field="f", b="x"), 3.0, ("value",), (2.0,)),
               Sample(StreamKey.of("#m"), 4.0, ("f",), (1.0,))]
    assert samples_to_lines(samples, field_label="field") == ["m,b=x f=1.0 1000000000", "m,b=x value=2.0 3000000000"]


def test_a_line_starting_with_white_space_goes_to_the_full_scanner() -> None:
    assert StreamSelector(Selection()).parse_body("\r 1=1", now_ns=7).samples == []
