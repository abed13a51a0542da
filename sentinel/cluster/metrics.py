"""The cluster roles' own metrics (DESIGN §7), in the daemon's registry, under ``sentinel_``.

Router: ``sentinel_router_published_total`` (samples), ``sentinel_router_publish_errors_total``,
``sentinel_poller_lease_held``. Scorer: ``sentinel_partitions_owned``,
``sentinel_partition_lag_messages{partition}``, ``sentinel_partition_model_version{partition}``,
``sentinel_partition_checkpoint_seconds`` (one partition's write).
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

NS = "sentinel"


class RouterMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.published = Counter("router_published", "Samples published to JetStream.", namespace=NS,
                                 registry=registry)
        self.publish_errors = Counter("router_publish_errors", "Bodies whose publish to JetStream failed.",
                                      namespace=NS, registry=registry)
        self.lease_held = Gauge("poller_lease_held", "1 while this router holds the pollers' lease.",
                                namespace=NS, registry=registry)


class ScorerMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.owned = Gauge("partitions_owned", "Partitions this scorer owns.", namespace=NS, registry=registry)
        self.lag = Gauge("partition_lag_messages", "Messages of a partition not yet fetched.", ["partition"],
                         namespace=NS, registry=registry)
        self.model_version = Gauge("partition_model_version", "Newest published model version a partition's streams were offered "
                                   "(each kept its own weights where they did better on its history).",
                                   ["partition"], namespace=NS, registry=registry)
        self.checkpoint_seconds = Histogram("partition_checkpoint_seconds", "Writing one partition's checkpoint.",
                                            namespace=NS, registry=registry)

    def own(self, partitions: list[int]) -> None:
        self.owned.set(len(partitions))
        for p in partitions:
            self.lag.labels(str(p)).set(0)
            self.model_version.labels(str(p)).set(0)

    def disown(self, p: int) -> None:
        for g in (self.lag, self.model_version):
            with contextlib.suppress(KeyError):
                g.remove(str(p))
