"""Shared types: StreamKey text round trip, AlertEvent fingerprint."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sentinel.types import AlertEvent, StreamKey

text = st.text(alphabet=st.sampled_from(list("abcXYZ09_-.:/ ,=\\\"'é")), min_size=0, max_size=12)
names = st.text(alphabet=st.sampled_from(list("abc_09 ,=\\")), min_size=1, max_size=8)


@given(measurement=text, labels=st.dictionaries(names, text, max_size=4))
def test_stream_key_str_parse_round_trip(measurement: str, labels: dict[str, str]) -> None:
    k = StreamKey.of(measurement, labels)
    assert StreamKey.parse(str(k)) == k


def test_stream_key_escaping_examples() -> None:
    k = StreamKey.of("cpu load", host="a,b", path="x=y", note="back\\slash")
    assert str(k) == "cpu\\ load,host=a\\,b,note=back\\\\slash,path=x\\=y"
    assert StreamKey.parse(str(k)) == k
    assert StreamKey.of("m", b="2", a="1") == StreamKey.of("m", {"a": "1", "b": "2"})  # label order is irrelevant
    assert str(StreamKey("m")) == "m" and StreamKey.parse("m") == StreamKey("m")


def event(**kw) -> AlertEvent:
    base = dict(key=StreamKey.of("pump", site="s1"), status="firing", starts_at=10.0, ends_at=None, at=10.0,
                score=0.9, threshold=1.0, error=2.0)
    base.update(kw)
    return AlertEvent(**base)  # type: ignore[arg-type]


def test_fingerprint_is_stable_and_depends_only_on_labels() -> None:
    fp = event().fingerprint
    assert fp == event().fingerprint and len(fp) == 16 and int(fp, 16) >= 0
    # the same alert when it resolves, or with other numbers, keeps its fingerprint
    assert event(status="resolved", ends_at=20.0, at=20.0, score=0.1, top_fields=(("a", 1.0),)).fingerprint == fp
    # another stream or severity is another alert
    assert event(key=StreamKey.of("pump", site="s2")).fingerprint != fp
    assert event(severity="critical").fingerprint != fp
    # pinned value: the fingerprint must not change between releases (Alertmanager and outbox dedupe on it)
    assert fp == event().fingerprint == FINGERPRINT


def test_alert_labels() -> None:
    assert event().labels == {"alertname": "SentinelAnomaly", "measurement": "pump", "site": "s1",
                              "severity": "warning"}




FINGERPRINT = "58713a1388366e08"
