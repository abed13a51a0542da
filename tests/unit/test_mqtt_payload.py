"""MQTT payload decoding and topic -> stream key mapping (no broker: sentinel.sources.mqtt.payload/topics)."""

from __future__ import annotations

import json
import math

import pytest

from sentinel.config import ConfigError, dump_config, load_config_text
from sentinel.config.source_mqtt import MQTTSourceConfig
from sentinel.sources.mqtt.payload import REASONS, PayloadDecoder, lookup, timestamp_ns
from sentinel.sources.mqtt.source import selection_from
from sentinel.sources.mqtt.topics import TopicKey
from sentinel.sources.selector import StreamSelector
from sentinel.types import Sample, StreamKey

NOW = 1_800_000_000.0


def decoder(**kw: object) -> PayloadDecoder:
    cfg = MQTTSourceConfig.model_validate(kw)
    return PayloadDecoder(cfg, StreamSelector(selection_from(cfg)))


def run(d: PayloadDecoder, topic: str, payload: bytes | str) -> tuple[list[Sample], dict[str, int]]:
    out: list[Sample] = []
    rej: dict[str, int] = {}
    d.decode(topic, payload.encode() if isinstance(payload, str) else payload, NOW, out, rej)
    return out, rej


# -- topics ------------------------------------------------------------------------------------------
def test_topic_segments_after_the_prefix_become_labels() -> None:
    m = TopicKey("factory/eu", ["site", "_", "machine"])
    assert m.labels("factory/eu/s1/line3/m7/telemetry") == (("site", "s1"), ("machine", "m7"))
    assert m.labels("factory/us/s1/line3/m7") is None  # another prefix
    assert m.labels("factory/eu/s1/line3") is None  # too short
    assert m.labels("factory/eu//line3/m7") is None  # an empty named segment
    assert TopicKey("", []).labels("anything/at/all") == ()


def test_line_protocol_gets_topic_labels_which_win_over_payload_tags() -> None:
    d = decoder(topic_prefix="plant", key_from_topic=["site", "machine"])
    out, rej = run(d, "plant/s1/m7", "pump,site=wrong,line=3 temp=1.5,rpm=1200i 1700000000000000000\n"
                                     "pump,site=wrong,line=3 temp=2.5,rpm=1300i 1700000001000000000")
    assert rej == {}
    assert [s.key for s in out] == [StreamKey.of("pump", site="s1", machine="m7", line="3")] * 2
    assert [(s.ts, s.fields, s.values) for s in out] == [
        (1_700_000_000.0, ("rpm", "temp"), (1200.0, 1.5)), (1_700_000_001.0, ("rpm", "temp"), (1300.0, 2.5))]


def test_line_protocol_without_timestamp_takes_arrival_time_and_precision_applies() -> None:
    d = decoder(precision="s")
    out, _ = run(d, "t", "m v=1\nm v=2 1700000000")
    assert [s.ts for s in out] == [NOW, 1_700_000_000.0]  # in payload order (the source sorts a batch)


def test_bad_line_protocol_is_counted_by_the_codec_reason_and_good_lines_kept() -> None:
    d = decoder()
    out, rej = run(d, "t", 'm v=1 1\nm\nm,=x v=1\nm s="text"\nm v=2 2')
    assert [s.values for s in out] == [(1.0,), (2.0,)]
    assert rej == {"lp_missing_fields": 1, "lp_bad_tag": 1, "mqtt_non_numeric": 1}


def test_line_protocol_uses_stream_selection() -> None:
    d = decoder(measurements=["pump"], stream_per="field", tags={"site": ["a"]})
    out, _ = run(d, "t", "pump,site=a x=1,y=2 5\nfan,site=a x=1 5\npump,site=b x=1 5")
    assert sorted(str(s.key) for s in out) == ["pump,field=x,site=a", "pump,field=y,site=a"]


# -- JSON ----------------------------------------------------------------------------------------------
def test_json_fields_tags_measurement_and_timestamp_by_path() -> None:
    d = decoder(format="json", topic_prefix="plant", key_from_topic=["site"],
                json={"measurement_path": "kind", "fields": {"temp": "sensors.temp", "p": "sensors.p.0"},
                      "tags": {"fw": "meta.fw"}, "timestamp_path": "meta.ts", "timestamp_unit": "ms"})
    doc = {"kind": "boiler", "sensors": {"temp": 71.5, "p": ["2.5", 9]}, "meta": {"fw": 3, "ts": 1_700_000_000_500}}
    out, rej = run(d, "plant/s9/x", json.dumps(doc))
    assert rej == {}
    assert len(out) == 1
    s = out[0]
    assert s.key == StreamKey.of("boiler", site="s9", fw="3")
    assert s.ts == 1_700_000_000.5 and dict(zip(s.fields, s.values, strict=True)) == {"p": 2.5, "temp": 71.5}


def test_json_default_takes_every_top_level_number_and_arrival_time() -> None:
    d = decoder(format="json")
    out, rej = run(d, "t", '[{"a": 1, "b": 2.5, "on": true, "name": "x"}, {"a": 3, "b": 4}]')
    assert rej == {}
    assert [(s.key, s.ts, s.fields, s.values) for s in out] == [
        (StreamKey("mqtt"), NOW, ("a", "b"), (1.0, 2.5)), (StreamKey("mqtt"), NOW, ("a", "b"), (3.0, 4.0))]


def test_json_iso_timestamp() -> None:
    d = decoder(format="json", json={"timestamp_path": "t"})
    out, _ = run(d, "t", '{"t": "2023-11-14T22:13:20.25Z", "v": 1}')
    assert out[0].ts == pytest.approx(1_700_000_000.25, abs=1e-6)
    assert timestamp_ns("2023-11-14T22:13:20", "s") == 1_700_000_000 * 10**9  # naive = UTC
    assert timestamp_ns(-5, "s") is None and timestamp_ns([1], "s") is None


@pytest.mark.parametrize(("payload", "reason"), [
    (b"{not json", "mqtt_bad_json"),
    (b"\xff\xfe\x00garbage", "mqtt_bad_json"),
    (b'"a string"', "mqtt_bad_json"),
    (b"[" * 5000 + b"]" * 5000, "mqtt_bad_json"),
    (b'{"temp": "hot"}', "mqtt_non_numeric"),
    (b'{"temp": true}', "mqtt_non_numeric"),
    (b'{"temp": NaN}', "mqtt_non_numeric"),
    (b'{"other": 1}', "mqtt_no_fields"),
    (b'{"temp": 1, "ts": "yesterday"}', "mqtt_bad_timestamp"),
    (b'{"temp": 1}', "mqtt_bad_timestamp"),
])
def test_hostile_json_is_rejected_with_a_reason(payload: bytes, reason: str) -> None:
    d = decoder(format="json", json={"fields": {"temp": "temp"}, "timestamp_path": "ts"})
    out, rej = run(d, "t", payload)
    assert out == [] and rej == {reason: 1}
    out, rej = run(d, "t", b'{"temp": 2, "ts": 5}')  # and the decoder goes on
    assert [s.values for s in out] == [(2.0,)] and rej == {}


def test_oversize_topic_and_too_many_fields() -> None:
    d = decoder(format="json", max_payload_bytes=64, max_fields=3, topic_prefix="p", key_from_topic=["m"])
    assert run(d, "p/m1", b'{"a": ' + b"1" * 100 + b"}") == ([], {"mqtt_oversize": 1})
    assert run(d, "q/m1", b'{"a": 1}') == ([], {"mqtt_topic": 1})
    assert run(d, "p/m1", b'{"a": 1, "b": 2, "c": 3, "d": 4}') == ([], {"mqtt_too_many_fields": 1})
    out, rej = run(d, "p/m1", b'{"a": 1, "b": 2, "c": 3}')
    assert rej == {} and out[0].key == StreamKey.of("mqtt", m="m1")


def test_non_numeric_field_is_dropped_but_the_point_kept() -> None:
    d = decoder(format="json", json={"fields": {"a": "a", "b": "b"}})
    out, rej = run(d, "t", b'{"a": 1, "b": "broken"}')
    assert rej == {"mqtt_non_numeric": 1}
    assert out[0].fields == ("a", "b") and out[0].values[0] == 1.0 and math.isnan(out[0].values[1])


def test_reasons_are_distinct_and_prefixed() -> None:
    assert len(set(REASONS)) == len(REASONS) and all(r.startswith("mqtt_") for r in REASONS)


def test_lookup_paths() -> None:
    doc = {"a": [{"b": 1}], "c": None}
    assert lookup(doc, "a.0.b") == 1 and lookup(doc, "c") is None
    assert lookup(doc, "a.1.b") is lookup(doc, "x") is lookup(doc, "a.b")


# -- config ----------------------------------------------------------------------------------------------
def test_config_loads_with_env_expansion_and_derives_the_connection() -> None:
    cfg = load_config_text(
        "sources:\n- type: mqtt\n  url: mqtts://broker.local\n  topics: ['plant/+/+/telemetry']\n"
        "  username: sentinel\n  password: ${MQTT_PASSWORD}\n  format: json\n  json: {fields: {t: temp}}\n",
        source="m.yaml", env={"MQTT_PASSWORD": "s3cret"})
    src = cfg.sources[0]
    assert isinstance(src, MQTTSourceConfig)
    assert (src.host, src.port, src.use_tls, src.password, src.qos, src.clean_session) == (
        "broker.local", 8883, True, "s3cret", 1, False)
    assert src.effective_client_id == "sentinel-mqtt" and src.json_payload.fields == {"t": "temp"}
    assert MQTTSourceConfig(url="mqtt://127.0.0.1").port == 1883
    dumped = dump_config(cfg)
    assert "s3cret" not in dumped and "<secret>" in dumped
    again = load_config_text(dumped.replace("<secret>", "x"), source="dump.yaml").sources[0]
    assert isinstance(again, MQTTSourceConfig) and again.json_payload == src.json_payload


def test_tls_files_are_relative_to_the_config_file(tmp_path) -> None:
    from sentinel.config import load_config

    p = tmp_path / "sentinel.yaml"
    p.write_text("sources:\n- type: mqtt\n  tls: {ca_file: certs/ca.pem, cert_file: /abs/c.pem, key_file: k.pem}\n")
    tls = load_config(p, env={}).sources[0].tls  # type: ignore[union-attr]
    assert (tls.ca_file, tls.cert_file, tls.key_file) == (str(tmp_path / "certs/ca.pem"), "/abs/c.pem",
                                                          str(tmp_path / "k.pem"))


@pytest.mark.parametrize(("yaml_src", "where"), [
    ("url: http://x:1883", "sources[0].url"),
    ("topics: ['a/b#']", "sources[0].topics"),
    ("topics: ['a/#/b']", "sources[0].topics"),
    ("qos: 3", "sources[0].qos"),
    ("json: {nope: 1}", "sources[0].json.nope"),
])
def test_config_errors_name_the_key(yaml_src: str, where: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config_text(f"sources:\n- type: mqtt\n  {yaml_src}\n", source="m.yaml")
    assert f"m.yaml:{where}:" in str(e.value)


# -- input bounds (issue 11: D5, invalid UTF-8, tag values) ------------------------------------------------
def bounded(**kw: object) -> PayloadDecoder:
    from sentinel.config.schema import StreamsConfig

    cfg = MQTTSourceConfig.model_validate({"topic_prefix": "", "key_from_topic": [], **kw})
    streams = StreamsConfig(max_future=60, max_age=3600, max_tag_value_length=64, max_fields=4)
    return PayloadDecoder(cfg, StreamSelector(selection_from(cfg, streams)))


def test_streams_bounds_apply_to_mqtt_line_protocol_against_the_receipt_time() -> None:
    d = bounded()
    ns = int(NOW * 1e9)
    out, rej = run(d, "x", "\n".join([
        f"pump v=1 {ns + 3600 * 10**9}",  # an hour ahead: would poison the stream (D5)
        f"pump v=2 {ns - 7200 * 10**9}",  # older than max_age
        f"pump,t={'x' * 1000} v=3 {ns}",  # tag value too long (a 1 MiB tag made /metrics 26 MB)
        f"pump a=1,b=2,c=3,d=4,e=5 {ns}",  # more than max_fields
        f"pump v=4 {ns + 30 * 10**9}",  # within max_future: kept
    ]))
    assert [s.values for s in out] == [(4.0,)]
    assert rej == {"future": 1, "too_old": 1, "tag_value_too_long": 1, "max_fields": 1}
    out, _ = run(d, "x", f"pump v=5 {ns + 40 * 10**9}")
    assert [s.values for s in out] == [(5.0,)]  # the stream was not poisoned


def test_streams_bounds_apply_to_json_timestamps() -> None:
    d = bounded(format="json", json={"fields": {"v": "v"}, "timestamp_path": "ts"})
    out, rej = run(d, "x", json.dumps([{"v": 1, "ts": NOW + 3600}, {"v": 2, "ts": NOW}]))
    assert [s.values for s in out] == [(2.0,)] and rej == {"future": 1}


def test_invalid_utf8_lines_are_rejected_not_replaced() -> None:
    d = bounded()
    ns = int(NOW * 1e9)
    out, rej = run(d, "x", f"pump,site=\xff v=1 {ns}\npump v=2 {ns}".encode("latin-1"))
    assert [s.values for s in out] == [(2.0,)] and rej == {"invalid_utf8": 1}
    assert all("\ufffd" not in str(s.key) for s in out)


def test_a_full_write_ahead_log_acknowledges_nothing_and_keeps_the_messages(tmp_path) -> None:
    """Issue 11: the MQTT source PUBACKs a QoS 1 message only once it is in the write-ahead log. With
    the log full the batch is not emitted nor acknowledged (the broker keeps it) and waits in the
    source; once the log has room it goes out whole, then the PUBACK."""
    import asyncio

    from sentinel.sources.mqtt.client import Message
    from sentinel.sources.mqtt.source import MQTTSource
    from sentinel.state.ingestlog import IngestLog
    from sentinel.state.wal import WalPosition

    cfg = MQTTSourceConfig.model_validate({"name": "mq", "url": "mqtt://127.0.0.1:1", "topics": ["s/#"]})
    src = MQTTSource(cfg, metrics=None, clock=lambda: 1_700_000_100.0)
    log = IngestLog(tmp_path / "wal", fsync="off", segment_bytes=4096, max_bytes=8192, keep=1)
    src.receiver.log, src.receiver.retry_after = log, 0.0

    class Conn:
        def __init__(self) -> None:
            self.acked: list[int] = []

        def ack(self, msgs: list[Message]) -> None:
            self.acked += [m.mid for m in msgs]

    conn, emitted = Conn(), []

    async def emit(b) -> None:
        emitted.append(b)

    async def main() -> list[tuple[int, int, int]]:
        steps = []
        for i in range(12):  # ~1 KB a batch: the log is full after a few
            src._pending.extend(Message(f"s/{i}", b"m v=1 %d" % (1_700_000_000 + j) + b" " * 90, 10 * i + j, 1,
                                        1_700_000_050.0) for j in range(10))
            await src._emit_pending(emit, conn)  # type: ignore[arg-type]
            steps.append((len(conn.acked), len(emitted), len(src._pending)))
        log.scored(log.wal.position)
        log.checkpointed(log.covered)  # a checkpoint covers all: the log has room again
        while src._pending:
            await src._emit_pending(emit, conn)  # type: ignore[arg-type]
        return steps

    try:
        steps = asyncio.run(main())
    finally:
        log.close()
    full = next(i for i, (a, _e, _p) in enumerate(steps) if a < 10 * (i + 1))
    assert 0 < full < 11, steps
    for i, (acked, n_emitted, pending) in enumerate(steps[full:], full):  # full: nothing more out, nothing acked
        assert (acked, n_emitted, pending) == (10 * full, full, 10 * (i + 1 - full)), steps
    assert sorted(conn.acked) == list(range(120)) and len({m for m in conn.acked}) == 120
    assert sum(len(b.samples) for b in emitted) == 120
    assert all(isinstance(b.wal_position, WalPosition) for b in emitted)  # each batch emitted was logged
