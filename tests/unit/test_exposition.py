"""Per-stream exposition from arrays: byte for byte what prometheus_client writes for the same rows
(text 0.0.4 and OpenMetrics), the engine's array export equals its views, and a scrape keeps every family."""

from __future__ import annotations

import math

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as om_latest
from prometheus_client.parser import text_string_to_metric_families

from sentinel.band_metrics import BandCollector
from sentinel.config import load_config_text
from sentinel.metrics import Metrics, StreamCollector, StreamColumns, exposition, stream_rows
from sentinel.runtime.engine import Engine
from sentinel.runtime.views import StreamView
from sentinel.types import Sample, StreamKey


class RowsReference:
    """The landed collector: one Metric sample per row (the reference the array renderer must match)."""

    def __init__(self, rows):
        self.rows = rows

    def collect(self):
        fams = {
            "score": Metric("sentinel_anomaly_score", "Calibrated anomaly score in [0, 1] of the last sample.", "gauge"),
            "error": Metric("sentinel_reconstruction_error", "Reconstruction error of the last sample (normalised units).", "gauge"),
            "threshold": Metric("sentinel_threshold", "Current adaptive threshold on the reconstruction error.", "gauge"),
            "state": Metric("sentinel_alert_state", "Alert state: 0 ok, 1 pending, 2 firing.", "gauge"),
            "alerts": Metric("sentinel_alerts", "Alerts that went firing on this stream.", "counter"),
        }
        for r in self.rows:
            fams["score"].add_sample("sentinel_anomaly_score", r.labels, r.score)
            fams["error"].add_sample("sentinel_reconstruction_error", r.labels, r.error)
            fams["threshold"].add_sample("sentinel_threshold", r.labels, r.threshold)
            fams["state"].add_sample("sentinel_alert_state", r.labels, float(r.alert_state))
            fams["alerts"].add_sample("sentinel_alerts_total", r.labels, float(r.alerts_total))
        yield from fams.values()


KEYS = [StreamKey.of("pump", site="a", pump="p1"), StreamKey.of("m-x", **{"a-b": 'q"u\\o\nte', "0lead": "v"}),
        StreamKey.of("pump", {"site": "b", "measurement": "override"}), StreamKey.of("m", __hidden="x", a_b="y", **{"a-b": "z"})]
VALUES = [(0.5, 1.25, 0.75, 2, 3), (1.0, math.nan, math.inf, 0, 0), (0.0, 2.5e6, -math.inf, 3, 1),
          (1e-9, 12345678.0, 1e20, 1, 7)]


def views() -> list[StreamView]:
    return [StreamView(k, ("t",), True, st, sc, e, t, 1, 0.0, n) for k, (sc, e, t, st, n) in zip(KEYS, VALUES, strict=True)]


def columns_of(vs: list[StreamView], mode: str) -> list[StreamColumns]:
    vs = [v for v in vs if mode == "all" or v.alert_level != 0]
    return [StreamColumns([v.key for v in vs], [v.fields for v in vs], {
        "score": np.array([v.score for v in vs]), "error": np.array([0.0 if math.isnan(v.error) else v.error for v in vs]),
        "threshold": np.array([v.threshold if math.isfinite(v.threshold) else 0.0 for v in vs]),
        "state": np.array([float(v.alert_level) for v in vs]), "alerts": np.array([float(v.alerts_total) for v in vs]),
    })]


@pytest.mark.parametrize("mode", ["all", "non_ok"])
@pytest.mark.parametrize("om", [False, True])
def test_array_rendering_is_byte_for_byte_the_prometheus_client_text(mode: str, om: bool) -> None:
    ref = CollectorRegistry()
    ref.register(RowsReference(list(stream_rows(views(), mode))))  # type: ignore[arg-type]
    want = (om_latest(ref).decode()[: -len("# EOF\n")] if om else generate_latest(ref).decode())
    got = StreamCollector(columns=lambda: columns_of(views(), mode)).render(openmetrics=om)
    assert got == want
    # the same rows through the rows-based collector, and its collect() path
    rc = StreamCollector(rows=lambda: stream_rows(views(), mode))
    assert rc.render(openmetrics=om) == want
    reg = CollectorRegistry()
    reg.register(StreamCollector(columns=lambda: columns_of(views(), mode)))
    assert (om_latest(reg).decode()[: -len("# EOF\n")] if om else generate_latest(reg).decode()) == want


def test_a_scrape_renders_the_per_stream_families_once_beside_the_process_metrics() -> None:
    m = Metrics(CollectorRegistry())
    m.add_stream_collector(columns=lambda: columns_of(views(), "all"))
    for accept, om in (("", False), ("application/openmetrics-text; version=1.0.0", True)):
        body, ctype = exposition(m.registry, accept)
        text = body.decode()
        assert ("openmetrics" in ctype) == om and text.endswith("# EOF\n") == om
        fams = {f.name: f for f in text_string_to_metric_families(text.replace("# EOF\n", ""))}
        assert len(fams["sentinel_anomaly_score"].samples) == len(KEYS)
        assert "sentinel_samples_ingested" in fams or "sentinel_samples_ingested_total" in fams
        assert text.count("# TYPE sentinel_anomaly_score gauge") == 1
    # registry.collect() (tests, get_sample_value) still sees the per-stream series
    assert m.registry.get_sample_value("sentinel_alerts_total", {"measurement": "pump", "pump": "p1", "site": "a"}) == 3


def test_per_field_columns_are_exported_with_a_field_label() -> None:
    ch = StreamColumns([KEYS[0], KEYS[2]], [("temp", "vib"), ("temp",)],
                       {"score": np.array([0.1, 0.2]), "error": np.zeros(2), "threshold": np.zeros(2),
                        "state": np.zeros(2), "alerts": np.zeros(2), "exp": np.array([[1.5, 2.5], [3.5, np.nan]])})
    c = StreamCollector(columns=lambda: [ch])
    lines = list(c._family_lines([ch], "sentinel_expected_value", "exp"))
    assert "".join(lines) == ('sentinel_expected_value{field="temp",measurement="pump",pump="p1",site="a"} 1.5\n'
                              'sentinel_expected_value{field="vib",measurement="pump",pump="p1",site="a"} 2.5\n'
                              'sentinel_expected_value{field="temp",measurement="override",site="b"} 3.5\n')


def test_the_engine_array_export_matches_its_views() -> None:
    e = Engine(load_config_text("streams: {max_streams: 10}\n", source="t.yaml"))
    e.process([Sample(StreamKey.of("pump", id=str(i)), 1.0, ("t",) if i % 2 else ("t", "v"),
                      (1.0,) if i % 2 else (1.0, 2.0)) for i in range(5)])
    for mode in ("all", "non_ok", "none"):
        want = StreamCollector(rows=lambda mode=mode: stream_rows(e.stream_views(), mode)).render()
        band = CollectorRegistry()
        band.register(BandCollector(e.stream_views, lambda mode=mode: mode))
        want += generate_latest(band).decode()
        got = StreamCollector(columns=lambda mode=mode: e.stream_columns(mode)).render()
        assert sorted(got.splitlines()) == sorted(want.splitlines())


def test_the_band_families_are_byte_for_byte_the_band_collectors() -> None:
    nan = math.nan
    vs = [StreamView(KEYS[0], ("temp", "vib"), True, 2, 0.9, 1.0, 0.5, 1, 0.0, 1, (1.5, 2.0), (1.0, nan), (2.0, 3.25e7)),
          StreamView(StreamKey.of("m", field="x"), ("value",), False, 0, 0.0, nan, nan, 0, 0.0, 0, (nan,), (nan,), (nan,))]
    for mode in ("all", "non_ok"):
        ref = CollectorRegistry()
        ref.register(BandCollector(lambda: vs, lambda mode=mode: mode))
        want = generate_latest(ref).decode()
        rows = [v for v in vs if mode == "all" or v.alert_level != 0]
        ch = columns_of(rows, "all")[0]
        ch.fields = [v.fields for v in rows]
        for col, attr in (("exp", "expected"), ("lo", "lower"), ("hi", "upper")):
            W = max(len(v.fields) for v in rows)
            ch.columns[col] = np.array([list(getattr(v, attr)) + [nan] * (W - len(v.fields)) for v in rows])
        got = StreamCollector(columns=lambda ch=ch: [ch]).render()
        assert got[got.index("# HELP sentinel_expected_value"):] == want
