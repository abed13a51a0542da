"""Sentinel's Prometheus metrics (DESIGN §7), registered on an injected registry.

Names are a contract: dashboards, rules and users' queries depend on them.
Per-stream series are produced at scrape time by :class:`StreamCollector`
from the engine's arrays, labelled by each stream's own labels, so 100k streams
cost nothing between scrapes and ``metrics.per_stream`` can cut them down.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

NAMESPACE = "sentinel"

#: Label values known before any event, exported as 0 from the first scrape (Prometheus'
#: instrumentation guidance: dashboards and ``rate()`` work before the first event).
RETRAIN_RESULTS = ("success", "rejected", "failure")
ALERT_STATUSES = ("firing", "resolved")
STREAM_STATES = ("warming", "ready", "ok", "pending", "firing")
NOTIFICATION_RESULTS = ("success", "failure", "dropped")
SOURCE_ERROR_KINDS = ("unavailable", "error")
FEEDBACK_LABELS = ("normal", "anomaly")

_LABEL_OK = re.compile(r"[^a-zA-Z0-9_]")


def label_name(key: str) -> str:
    """A stream label (InfluxDB tag, SQL column) as a valid Prometheus label name."""
    name = _LABEL_OK.sub("_", key)
    if not name or name[0].isdigit():
        name = "_" + name
    if name.startswith("__"):
        name = "tag" + name
    return name


@dataclass(frozen=True, slots=True)
class StreamRow:
    """One stream's exported numbers at scrape time."""

    labels: dict[str, str]
    score: float
    error: float
    threshold: float
    alert_state: int
    alerts_total: int


def stream_rows(views: Iterable[Any], mode: str = "all") -> Iterator[StreamRow]:
    """The exported rows of the engine's stream views (``mode``: all | non_ok | none).

    ``views`` are :class:`~sentinel.runtime.views.StreamView` objects; ``non_ok`` keeps
    pending and firing streams only.
    """
    if mode == "none":
        return
    for v in views:
        if mode == "non_ok" and v.alert_level == 0:
            continue
        labels = {"measurement": v.key.measurement}
        labels.update({label_name(k): val for k, val in v.key.labels})
        yield StreamRow(labels=labels, score=v.score, error=0.0 if math.isnan(v.error) else v.error,
                        threshold=v.threshold if math.isfinite(v.threshold) else 0.0,
                        alert_state=v.alert_level, alerts_total=v.alerts_total)


class StreamCollector(Collector):
    """Yields the per-stream metric families from ``rows()`` on each scrape."""

    def __init__(self, rows: Callable[[], Iterable[StreamRow]]):
        self._rows = rows

    def describe(self) -> list[Metric]:
        return []  # per-stream families are dynamic; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        fams = {
            "score": Metric(f"{NAMESPACE}_anomaly_score", "Calibrated anomaly score in [0, 1] of the last sample.", "gauge"),
            "error": Metric(f"{NAMESPACE}_reconstruction_error", "Reconstruction error of the last sample (normalised units).", "gauge"),
            "threshold": Metric(f"{NAMESPACE}_threshold", "Current adaptive threshold on the reconstruction error.", "gauge"),
            "state": Metric(f"{NAMESPACE}_alert_state", "Alert state: 0 ok, 1 pending, 2 firing.", "gauge"),
            "alerts": Metric(f"{NAMESPACE}_alerts", "Alerts that went firing on this stream.", "counter"),
        }
        for r in self._rows():
            fams["score"].add_sample(f"{NAMESPACE}_anomaly_score", r.labels, r.score)
            fams["error"].add_sample(f"{NAMESPACE}_reconstruction_error", r.labels, r.error)
            fams["threshold"].add_sample(f"{NAMESPACE}_threshold", r.labels, r.threshold)
            fams["state"].add_sample(f"{NAMESPACE}_alert_state", r.labels, float(r.alert_state))
            fams["alerts"].add_sample(f"{NAMESPACE}_alerts_total", r.labels, float(r.alerts_total))
        yield from fams.values()


class Metrics:
    """Process-level metrics. Create one per registry; tests pass a fresh ``CollectorRegistry``."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        ns = NAMESPACE
        self.samples_ingested = Counter("samples_ingested", "Samples accepted for scoring.", ["source"], namespace=ns, registry=r)
        self.samples_rejected = Counter(
            "samples_rejected", "Samples rejected, by reason.", ["reason"], namespace=ns, registry=r
        )
        self.streams = Gauge("streams", "Streams by lifecycle and alert state.", ["state"], namespace=ns, registry=r)
        self.streams_refused = Counter(
            "streams_refused", "New streams refused because streams.max_streams was reached.", namespace=ns, registry=r
        )
        self.score_batch_seconds = Histogram(
            "score_batch_seconds", "Time to score one batch of samples.", namespace=ns, registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self.ingest_lag_seconds = Gauge(
            "ingest_lag_seconds", "Age of the newest scored sample when it was scored.", ["source"], namespace=ns, registry=r
        )
        self.model_version = Gauge("model_version", "Version of the model bank in use.", namespace=ns, registry=r)
        self.retrain = Counter("retrain", "Retraining runs, by result.", ["result"], namespace=ns, registry=r)
        self.retrain_duration_seconds = Histogram(
            "retrain_duration_seconds", "Wall time of a retraining run.", namespace=ns, registry=r,
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600),
        )
        self.checkpoint_last_success = Gauge(
            "checkpoint_last_success_timestamp_seconds", "Unix time of the last successful checkpoint.",
            namespace=ns, registry=r,
        )
        self.wal_bytes = Gauge("wal_bytes", "Bytes in the write-ahead log of pushed writes.", namespace=ns, registry=r)
        self.task_restarts = Counter("task_restarts", "Background tasks that died and were restarted.", ["task"],
                                     namespace=ns, registry=r)
        self.notifications = Counter(
            "notifications", "Alert notifications, by sink and result.", ["sink", "result"], namespace=ns, registry=r
        )
        self.outbox_pending = Gauge("outbox_pending", "Notifications waiting in the outbox.", ["sink"], namespace=ns, registry=r)
        self.outbox_dropped = Counter(
            "outbox_dropped", "Notifications dropped because the outbox was full.", ["sink"], namespace=ns, registry=r
        )
        self.config_last_reload_successful = Gauge(
            "config_last_reload_successful", "1 if the last config reload succeeded.", namespace=ns, registry=r
        )
        self.config_last_reload_successful.set(1)
        self.queue_dropped = Counter(
            "queue_dropped", "Items dropped by a bounded queue's overflow policy.", ["queue"], namespace=ns, registry=r
        )
        self.queue_depth = Gauge("queue_depth", "Items waiting in a bounded queue.", ["queue"], namespace=ns, registry=r)
        self.alert_transitions = Counter(
            "alert_transitions", "Alert transitions, by new status.", ["status"], namespace=ns, registry=r
        )
        self.source_up = Gauge("source_up", "1 while the source is connected.", ["source"], namespace=ns, registry=r)
        self.source_errors = Counter("source_errors", "Failed runs of a source (retried with backoff), by kind.",
                                     ["source", "kind"], namespace=ns, registry=r)
        self.feedback = Counter("feedback", "Operator feedback on a stream's window, by label.", ["label"],
                                namespace=ns, registry=r)
        for lab in FEEDBACK_LABELS:
            self.feedback.labels(lab)
        for res in RETRAIN_RESULTS:
            self.retrain.labels(res)
        for status in ALERT_STATUSES:
            self.alert_transitions.labels(status)
        for state in STREAM_STATES:
            self.streams.labels(state).set(0)

    # -- label values known at start, each series exported as 0 before its first event ---------
    def add_reasons(self, *reasons: Iterable[str]) -> None:
        """Every reason a sample or line can be rejected for (engine and line protocol)."""
        for group in reasons:
            for reason in group:
                self.samples_rejected.labels(reason)

    def add_source(self, name: str) -> None:
        """A configured source: ingested, lag, up and error series."""
        self.samples_ingested.labels(name)
        self.ingest_lag_seconds.labels(name).set(0)
        self.source_up.labels(name).set(0)
        for kind in SOURCE_ERROR_KINDS:
            self.source_errors.labels(name, kind)

    def add_sink(self, name: str, pending: int = 0) -> None:
        """A configured sink: notifications by result, outbox pending (``pending``) and dropped."""
        for result in NOTIFICATION_RESULTS:
            self.notifications.labels(sink=name, result=result)
        self.outbox_pending.labels(sink=name).set(pending)
        self.outbox_dropped.labels(sink=name)

    def add_queue(self, name: str) -> None:
        """A bounded queue: depth and dropped series."""
        self.queue_depth.labels(name).set(0)
        self.queue_dropped.labels(name)

    def add_stream_collector(self, rows: Callable[[], Iterable[StreamRow]]) -> StreamCollector:
        c = StreamCollector(rows)
        self.registry.register(c)
        return c
