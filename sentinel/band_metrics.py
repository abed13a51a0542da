"""The per-stream, per-field expected band as Prometheus series (DESIGN §7).

``sentinel_expected_value``, ``sentinel_expected_lower`` and ``sentinel_expected_upper``, labelled
by the stream's own labels plus ``field``, in the sensor's own units (:mod:`sentinel.detect.band`).
Produced at scrape time from the engine's stream views, under the same ``metrics.per_stream``
setting as the other per-stream series (all | non_ok | none). A stream without a band yet
(warming, no threshold) exports NaN, so every series exists from the stream's first scrape.
A stream label named ``field`` is shadowed by the field's name on these three series.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from .metrics import NAMESPACE, label_name

FAMILIES = (
    ("expected", f"{NAMESPACE}_expected_value", "The model's expected value of the field for the last sample (sensor units)."),
    ("lower", f"{NAMESPACE}_expected_lower", "Lower edge of the field's expected band (sensor units)."),
    ("upper", f"{NAMESPACE}_expected_upper", "Upper edge of the field's expected band (sensor units)."),
)


class BandCollector(Collector):
    """Yields the three band families from ``views()`` (stream views) on each scrape."""

    def __init__(self, views: Callable[[], Iterable[Any]], mode: Callable[[], str]):
        self._views = views
        self._mode = mode

    def describe(self) -> list[Metric]:
        return []  # dynamic families

    def collect(self) -> Iterator[Metric]:
        fams = {attr: Metric(name, doc, "gauge") for attr, name, doc in FAMILIES}
        mode = self._mode()
        if mode != "none":
            for v in self._views():
                if mode == "non_ok" and v.alert_level == 0:
                    continue
                base = {"measurement": v.key.measurement}
                base.update({label_name(k): val for k, val in v.key.labels})
                for attr, name, _doc in FAMILIES:
                    vals = getattr(v, attr) or (float("nan"),) * len(v.fields)
                    for f, x in zip(v.fields, vals, strict=False):
                        fams[attr].add_sample(name, {**base, "field": f}, float(x))
        yield from fams.values()
