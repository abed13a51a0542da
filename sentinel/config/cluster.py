"""Config of the ``router`` and ``scorer`` roles on NATS JetStream (``cluster:``; DESIGN §10).

Only read by ``sentinel run --role router|scorer`` and ``sentinel train --publish``;
``--role all`` (the default) ignores the section.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from ._base import Duration, Strict


class ClusterConfig(Strict):
    servers: list[str] = Field(default_factory=lambda: ["nats://127.0.0.1:4222"], min_length=1,
                               description="NATS server URLs (any node of the JetStream cluster)")
    stream: str = Field("SENTINEL", pattern=r"^[A-Za-z0-9_-]+$", description="the JetStream stream of samples")
    subject_prefix: str = Field("sentinel.p", pattern=r"^[A-Za-z0-9_.-]+[A-Za-z0-9_-]$",
                                description="partition p is published to <subject_prefix>.<p>")
    partitions: int = Field(64, ge=1, le=4096, description="P: fixed for the life of the stream")
    replicas: int = Field(1, ge=1, le=5, description="JetStream replicas of the stream and buckets (R3 in production)")
    max_age: Duration = Field(7 * 86400.0, gt=0, description="samples kept in the stream this long")
    state_bucket: str = Field("sentinel_state", pattern=r"^[A-Za-z0-9_-]+$",
                              description="object store of per-partition checkpoints and model versions")
    kv_bucket: str = Field("sentinel_cluster", pattern=r"^[A-Za-z0-9_-]+$",
                           description="KV of members, partition owners, leases and announcements")
    scorers: int | None = Field(None, ge=1, le=4096,
                                description="N; default: 1 + the highest scorer index registered in the KV")
    index: int | None = Field(None, ge=0, description="this scorer's i; default: the StatefulSet ordinal "
                                                      "at the end of the hostname (scorer-2 -> 2)")
    checkpoint_interval: Duration = Field(10.0, gt=0, description="per-partition checkpoints this often")
    lease_ttl: Duration = Field(10.0, gt=0, description="a poller lease or scorer heartbeat older than this is dead")
    fetch_batch: int = Field(512, ge=1, le=100_000, description="messages per pull request")
    fetch_linger: Duration = Field(0.05, le=1.0, description="after a short pull, wait this long before the next "
                                   "(fewer, fuller pulls; adds at most this much latency)")
    ack_wait: Duration = Field(600.0, gt=0, description="JetStream redelivers unacked messages after this")
    handover_timeout: Duration = Field(60.0, gt=0, description="longest wait for a partition's old owner to release it")

    @model_validator(mode="after")
    def _index_below_n(self) -> ClusterConfig:
        if self.index is not None and self.scorers is not None and self.index >= self.scorers:
            raise ValueError(f"index ({self.index}) must be below scorers ({self.scorers})")
        if self.ack_wait <= self.checkpoint_interval:
            raise ValueError(f"ack_wait ({self.ack_wait}) must exceed checkpoint_interval "
                             f"({self.checkpoint_interval}): messages are acked at checkpoints")
        return self
