"""Sentinel's Prometheus metrics (DESIGN §7), registered on an injected registry.

Names are a contract: dashboards, rules and users' queries depend on them.
Per-stream series are produced at scrape time by :class:`StreamCollector`
from the engine's arrays, labelled by each stream's own labels, so 100k streams
cost nothing between scrapes and ``metrics.per_stream`` can cut them down.

A scrape (:func:`exposition`) renders the per-stream families straight from the
engine's arrays in one pass per family: each stream's label string is built once and
cached, values are formatted by a C-level ``map(repr)``; everything else goes through
prometheus_client's encoders (text 0.0.4, or OpenMetrics when the scraper asks). The
per-stream families are :data:`STREAM_FAMILIES`: one line each (name, type, help, the
column of the engine's export that holds it); a column of shape ``[n, F]`` is exported
per field with a ``field`` label.
"""

from __future__ import annotations

import math
import re
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

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


#: The per-stream families: (name without the namespace, type, help, column of :class:`StreamColumns`).
STREAM_FAMILIES: tuple[tuple[str, str, str, str], ...] = (
    ("anomaly_score", "gauge", "Calibrated anomaly score in [0, 1] of the last sample.", "score"),
    ("reconstruction_error", "gauge", "Reconstruction error of the last sample (normalised units).", "error"),
    ("threshold", "gauge", "Current adaptive threshold on the reconstruction error.", "threshold"),
    ("alert_state", "gauge", "Alert state: 0 ok, 1 pending, 2 firing.", "state"),
    ("alerts", "counter", "Alerts that went firing on this stream.", "alerts"),
    # per field (columns [n, F]): the expected band (sentinel.detect.band), a stream label named ``field``
    # is shadowed by the field's name; NaN while a stream has no band yet
    ("expected_value", "gauge", "The model's expected value of the field for the last sample (sensor units).", "exp"),
    ("expected_lower", "gauge", "Lower edge of the field's expected band (sensor units).", "lo"),
    ("expected_upper", "gauge", "Upper edge of the field's expected band (sensor units).", "hi"),
)


@dataclass(slots=True)
class StreamColumns:
    """Exported numbers of ``n`` streams as arrays: ``keys`` and ``fields`` per row, ``columns`` name ->
    ``[n]`` (one series per stream) or ``[n, F]`` (one per stream and field, ``fields[i][j]`` naming column j)."""

    keys: Sequence[Any]  # StreamKey per row
    fields: Sequence[tuple[str, ...]]
    columns: dict[str, np.ndarray]


def _esc(v: str) -> str:
    return v.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')


def _fmt(arr: np.ndarray) -> list[str]:
    """``floatToGoString`` of every value, vectorised: ``repr`` except for the rare non-finite or >= 1e6."""
    a = np.asarray(arr, np.float64)
    out = list(map(repr, a.tolist()))
    odd = np.flatnonzero(~np.isfinite(a) | (a >= 1e6))
    for i in odd.tolist():
        out[i] = floatToGoString(a[i])
    return out


_MUTE = threading.local()  # set while exposition() renders the per-stream families itself
_FAST: weakref.WeakKeyDictionary[CollectorRegistry, StreamCollector] = weakref.WeakKeyDictionary()


class StreamCollector(Collector):
    """Yields the per-stream metric families on each scrape, from ``columns()`` (the engine's arrays)
    or, without it, from ``rows()``; :meth:`render` writes them as exposition text in one pass."""

    LABEL_CACHE_MAX = 2_000_000

    def __init__(self, rows: Callable[[], Iterable[StreamRow]] | None = None,
                 columns: Callable[[], list[StreamColumns]] | None = None):
        self._rows = rows
        self._columns = columns
        self._labels: dict[tuple[int, str | None], tuple[Any, str]] = {}  # (id(key), field) -> (key, labels)

    def describe(self) -> list[Metric]:
        return []  # per-stream families are dynamic; nothing to check at registration

    def _chunks(self) -> list[StreamColumns]:
        if self._columns is not None:
            return self._columns()
        rows = list(self._rows()) if self._rows is not None else []
        keys = [tuple(r.labels.items()) for r in rows]
        cols = {"score": np.array([r.score for r in rows], np.float64),
                "error": np.array([r.error for r in rows], np.float64),
                "threshold": np.array([r.threshold for r in rows], np.float64),
                "state": np.array([r.alert_state for r in rows], np.float64),
                "alerts": np.array([r.alerts_total for r in rows], np.float64)}
        return [StreamColumns(keys, [()] * len(rows), cols)]

    def _label_strings(self, ch: StreamColumns, per_field: bool = False) -> list[str]:
        """Each row's label string (each row's and field's with ``per_field``), cached per stream key
        object (looked up by identity: a key's hash is not cached, and 100k of them cost more than the text)."""
        cache = self._labels
        if len(cache) > self.LABEL_CACHE_MAX:
            cache.clear()
        out = []
        for i, k in enumerate(ch.keys):
            for f in (ch.fields[i] if per_field else (None,)):
                c = cache.get((id(k), f))
                if c is not None and c[0] is k:
                    out.append(c[1])
                    continue
                d = dict(k) if isinstance(k, tuple) else _label_dict(k)  # rows: their labels as exported
                if f is not None:
                    d["field"] = f
                lbl = "{" + ",".join(f'{n}="{_esc(v)}"' for n, v in sorted(d.items())) + "}"
                cache[(id(k), f)] = (k, lbl)
                out.append(lbl)
        return out

    def _family_lines(self, chunks: list[StreamColumns], sname: str, col: str,
                      labels: dict[int, list[str]] | None = None) -> Iterator[str]:
        """One family's sample lines; ``labels``: each chunk's label strings, computed once per scrape."""
        for c, ch in enumerate(chunks):
            arr = ch.columns[col]
            if arr.ndim == 1:
                lbls = labels.get(c) if labels is not None else None
                if lbls is None:
                    lbls = self._label_strings(ch)
                    if labels is not None:
                        labels[c] = lbls
                yield "".join([f"{sname}{lb} {v}\n" for lb, v in zip(lbls, _fmt(arr), strict=True)])
                continue
            widths = np.array([len(f) for f in ch.fields], np.int64)
            has = np.arange(arr.shape[1])[None, :] < widths[:, None]  # [n, F]: row-major, as collect() adds them
            flabels = self._label_strings(ch, per_field=True)
            yield "".join([f"{sname}{lb} {v}\n" for lb, v in zip(flabels, _fmt(arr[has]), strict=True)])

    def render(self, openmetrics: bool = False) -> str:
        """The per-stream families as exposition text (prometheus_client's formatting, byte for byte)."""
        chunks = self._chunks()
        out = []
        labels: dict[int, list[str]] = {}
        for name, typ, doc, col in STREAM_FAMILIES:
            if any(col not in ch.columns for ch in chunks):
                continue  # a family this source of rows does not have (rows: no band)
            full = f"{NAMESPACE}_{name}"
            sname = full + "_total" if typ == "counter" else full
            hname = full if openmetrics else sname
            text = doc.replace("\\", r"\\").replace("\n", r"\n")
            if openmetrics:
                text = text.replace('"', r'\"')
            out.append(f"# HELP {hname} {text}\n# TYPE {hname} {typ}\n")
            out.extend(self._family_lines(chunks, sname, col, labels))
        return "".join(out)

    def collect(self) -> Iterator[Metric]:
        if getattr(_MUTE, "on", False):
            return
        chunks = self._chunks()
        for name, typ, doc, col in STREAM_FAMILIES:
            if any(col not in ch.columns for ch in chunks):
                continue
            full = f"{NAMESPACE}_{name}"
            fam = Metric(full, doc, typ)
            sname = full + "_total" if typ == "counter" else full
            for ch in chunks:
                arr = ch.columns[col]
                for i, k in enumerate(ch.keys):
                    base = dict(k) if isinstance(k, tuple) else _label_dict(k)
                    if arr.ndim == 1:
                        fam.add_sample(sname, base, float(arr[i]))
                    else:
                        for j, f in enumerate(ch.fields[i]):
                            fam.add_sample(sname, {**base, "field": f}, float(arr[i, j]))
            yield fam


def _label_dict(k: Any) -> dict[str, str]:
    d = {"measurement": k.measurement}
    d.update({label_name(n): v for n, v in k.labels})
    return d


def exposition(registry: CollectorRegistry, accept: str = "") -> tuple[bytes, str]:
    """``(body, content type)`` of a scrape of ``registry``: OpenMetrics when ``accept`` asks for it,
    else text 0.0.4; the per-stream families rendered from arrays (:meth:`StreamCollector.render`)."""
    encoder, content_type = choose_encoder(accept)
    fast = _FAST.get(registry)
    if fast is None:
        return encoder(registry), content_type
    _MUTE.on = True
    try:
        body = encoder(registry)
    finally:
        _MUTE.on = False
    om = content_type.startswith("application/openmetrics-text")
    extra = fast.render(openmetrics=om).encode("utf-8")
    if om and body.endswith(b"# EOF\n"):
        return body[: -len(b"# EOF\n")] + extra + b"# EOF\n", content_type
    return body + extra, content_type


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

    def add_stream_collector(self, rows: Callable[[], Iterable[StreamRow]] | None = None,
                             columns: Callable[[], list[StreamColumns]] | None = None) -> StreamCollector:
        """The per-stream families, from the engine's arrays (``columns``) or from ``rows``; a scrape
        through :func:`exposition` renders them in one pass."""
        c = StreamCollector(rows, columns)
        self.registry.register(c)
        _FAST[self.registry] = c
        return c
