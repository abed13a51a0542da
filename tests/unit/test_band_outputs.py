"""Where the expected band goes out: Prometheus series, alert annotations, the outbox codec, write-back lines."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry

from sentinel.alerts.sinks import event_from_json, event_to_json
from sentinel.alerts.sinks.webhook import alert_annotations
from sentinel.band_metrics import BandCollector
from sentinel.runtime.views import StreamView
from sentinel.types import AlertEvent, ScoreRecord, StreamKey
from sentinel.writeback.influxdb import records_to_lines

KEY = StreamKey.of("pump", site="a")


def view(state: int, expected=(0.07, 20.0), lower=(0.05, 18.0), upper=(0.09, 22.0)) -> StreamView:
    return StreamView(KEY, ("Pressure", "temp"), True, state, 0.93, 2.0, 1.0, 1, 10.0, 1, expected, lower, upper)


def test_band_series_per_field_under_the_per_stream_setting() -> None:
    views = [view(2), StreamView(StreamKey.of("pump", site="b"), ("Pressure", "temp"), False, 0, 0.0,
                                  math.nan, math.nan, 0, -math.inf, 0)]
    mode = {"m": "all"}
    r = CollectorRegistry()
    r.register(BandCollector(lambda: views, lambda: mode["m"]))
    got = r.get_sample_value
    assert got("sentinel_expected_value", {"measurement": "pump", "site": "a", "field": "Pressure"}) == 0.07
    assert got("sentinel_expected_lower", {"measurement": "pump", "site": "a", "field": "temp"}) == 18.0
    assert got("sentinel_expected_upper", {"measurement": "pump", "site": "a", "field": "temp"}) == 22.0
    warming = got("sentinel_expected_value", {"measurement": "pump", "site": "b", "field": "temp"})
    assert warming is not None and math.isnan(warming)  # present from the first scrape, NaN until a band
    mode["m"] = "non_ok"
    assert got("sentinel_expected_value", {"measurement": "pump", "site": "b", "field": "temp"}) is None
    assert got("sentinel_expected_value", {"measurement": "pump", "site": "a", "field": "temp"}) == 20.0
    mode["m"] = "none"
    assert got("sentinel_expected_value", {"measurement": "pump", "site": "a", "field": "temp"}) is None


def event(**kw) -> AlertEvent:
    base = dict(key=KEY, status="firing", starts_at=1.0, ends_at=None, at=1.0, score=0.9312, threshold=1.0,
                error=4.0, top_fields=(("Pressure", 0.8), ("temp", 0.2)),
                expected=(("Pressure", 2.1312, 0.07, 0.0504, 0.0897), ("temp", 20.5, 20.0, 18.0, 22.0)))
    base.update(kw)
    return AlertEvent(**base)  # type: ignore[arg-type]


def test_annotation_says_the_value_against_its_band_in_words() -> None:
    ann = alert_annotations(event())
    assert ann["expected"] == "Pressure 2.13 (expected 0.05–0.09), score 0.93"
    assert ann["summary"] == "pump site=a: Pressure 2.13 (expected 0.05–0.09), score 0.93"
    # the top field leads, whatever the field order
    ann = alert_annotations(event(top_fields=(("temp", 0.7), ("Pressure", 0.3))))
    assert ann["expected"] == "temp 20.5 (expected 18–22), score 0.93"
    # without a band (an event from an older outbox, or no threshold yet): the old summary, no expected
    ann = alert_annotations(event(expected=()))
    assert "expected" not in ann and "deviates" in ann["summary"]
    ann = alert_annotations(event(expected=(("Pressure", 2.0, math.nan, math.nan, math.nan),)))
    assert "expected" not in ann


def test_outbox_codec_keeps_the_band_and_reads_old_entries() -> None:
    ev = event()
    assert event_from_json(event_to_json(ev)) == ev
    old = event_to_json(ev).replace(',"expected":' + event_to_json(ev).split(',"expected":')[1], "}")
    assert event_from_json(old).expected == ()


def test_influx_write_back_lines_carry_the_band_fields() -> None:
    r = ScoreRecord(KEY, 1.0, (2.0,), 0.5, 0.1, 1.0, 0, True, ("Pressure",), (0.07,), (0.05,), (math.nan,))
    (line,) = records_to_lines([r])
    assert "expected_Pressure=0.07" in line and "lower_Pressure=0.05" in line and "upper_Pressure" not in line
