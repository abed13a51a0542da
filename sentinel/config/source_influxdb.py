"""Config of the InfluxDB source (``type: influxdb``). Owned by the InfluxDB source.

Modes (``mode``):

* ``subscription`` — InfluxDB 1.x pushes every write to Sentinel's ``/write``
  through a ``CREATE SUBSCRIPTION`` that Sentinel manages; on start and after an
  outage Sentinel backfills from the database (InfluxQL) and de-duplicates.
* ``poll_influxql`` — poll ``/query`` with InfluxQL (1.x, and 2.x/3.x through their
  v1-compatible API) with a time cursor.
* ``poll_flux`` — poll a 2.x server with Flux through ``influxdb-client``.
* ``receiver`` — only accept line protocol on ``/write`` and ``/api/v2/write``
  (Telegraf or any agent); no database is read.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ._base import Duration, Strict


class InfluxDBWriteBackConfig(Strict):
    """Optional write-back of scores beside the raw data (for Grafana)."""

    enabled: bool = Field(False, description="write score, threshold and alert state back to InfluxDB")
    url: str | None = Field(None, description="server to write to; default: the source's url")
    api: Literal["v1", "v2"] = Field("v1", description="v1: /write?db=&rp=, v2: /api/v2/write?bucket=&org=")
    database: str | None = Field(None, description="v1 database; default: the source's database")
    retention_policy: str = Field("", description="v1 retention policy ('' = the database default)")
    bucket: str | None = Field(None, description="v2 bucket; default: the source's bucket")
    measurement: str = Field("sentinel_score", description="measurement the scores are written as")
    source_measurement_tag: str = Field(
        "source_measurement", description="tag holding the scored stream's own measurement"
    )
    batch_size: int = Field(5000, ge=1, description="records per write request")
    flush_interval: Duration = Field(1.0, gt=0, description="longest time a record waits before it is written")
    max_buffer: int = Field(200_000, ge=1, description="records held while the server is slow; older ones dropped")
    timeout: Duration = Field(10.0, gt=0, description="HTTP timeout of one write")
    stop_timeout: Duration = Field(5.0, gt=0, description="stop() flushes for at most this long")


class InfluxDBReceiverConfig(Strict):
    """The line-protocol receiver on Sentinel's HTTP server (``/write``, ``/api/v2/write``)."""

    enabled: bool = Field(True, description="mount /write and /api/v2/write (required by subscription mode)")
    databases: list[str] = Field(
        default_factory=list,
        description="accepted v1 db / v2 bucket names; empty = any (subscription mode: the source's database)",
    )
    token: str | None = Field(
        None, description="required 'Authorization: Token <t>' or 'Bearer <t>' (also accepted as basic password)"
    )
    username: str | None = Field(None, description="required basic-auth / ?u= user (with password)")
    password: str | None = Field(None, description="required basic-auth / ?p= password")
    max_body_bytes: int = Field(25_000_000, ge=1024, description="largest body, after gzip decompression")
    max_pending_batches: int = Field(
        64, ge=1, description="pushed bodies waiting for the runtime; beyond it the receiver answers 503"
    )
    push_buffer: int = Field(
        1_000_000, ge=1000, description="pushed samples held while a backfill runs; overflow is counted"
    )


class InfluxDBSourceConfig(Strict):
    type: Literal["influxdb"] = "influxdb"
    name: str = Field("influxdb", description="source name (unique; cursors are stored under it)")
    url: str = Field("http://127.0.0.1:8086", description="InfluxDB base URL")
    mode: Literal["subscription", "poll_influxql", "poll_flux", "receiver"] = Field(
        "poll_influxql", description="how new data is followed (see module docstring)"
    )
    database: str = Field("sensors", description="1.x database (or 2.x DBRP-mapped database for InfluxQL)")
    retention_policy: str = Field("autogen", description="1.x retention policy")
    username: str | None = Field(None, description="1.x user for queries and subscription management")
    password: str | None = Field(None, description="1.x password")
    token: str | None = Field(None, description="2.x/3.x API token (sent as 'Authorization: Token ...')")
    org: str = Field("", description="2.x organisation (Flux)")
    bucket: str | None = Field(None, description="2.x bucket (Flux); default: '<database>/<retention_policy>'")

    # --- stream selection ---
    measurements: list[str] = Field(default_factory=list, description="measurements followed; empty = all")
    tags: dict[str, list[str]] = Field(
        default_factory=dict, description="tag filters: tag -> accepted values (all must match)"
    )
    ignore_tags: list[str] = Field(
        default_factory=list, description="tags dropped from the stream identity (e.g. a host that changes)"
    )
    fields: list[str] = Field(
        default_factory=list,
        description="numeric fields that form streams; empty = every numeric field (multivariate: fixed at first sight)",
    )
    stream_per: Literal["tagset", "field"] = Field(
        "tagset",
        description="tagset: one multivariate stream per measurement+tag set; field: one stream per field",
    )
    field_label: str = Field("field", description="label naming the field when stream_per=field")
    max_streams: int = Field(100_000, ge=1, description="streams this source creates at most; more are refused")

    # --- following ---
    poll_interval: Duration = Field(10.0, gt=0, description="time between polls (and liveness checks in push modes)")
    lateness: Duration = Field(
        5.0, description="poll modes read only up to now - lateness, so points arriving this late are not missed"
    )
    start_from: Duration = Field(
        0.0, description="with no stored cursor, start this long before now (0 = only new data)"
    )
    page_size: int = Field(10_000, ge=1, description="rows per series and query when catching up (paging)")
    query_timeout: Duration = Field(30.0, gt=0, description="HTTP timeout of one query")
    backoff_initial: Duration = Field(0.5, gt=0, description="first retry delay while the server is down")
    backoff_max: Duration = Field(30.0, gt=0, description="largest retry delay (full jitter)")

    # --- subscription mode ---
    subscription_name: str = Field("sentinel", description="name of the 1.x subscription Sentinel manages")
    subscription_destination: str | None = Field(
        None, description="URL InfluxDB pushes to; default http://<server.listen> (set by the runtime)"
    )
    remove_subscription_on_shutdown: bool = Field(
        False, description="drop the subscription on clean shutdown (pushes stop; backfill covers the gap)"
    )

    history: bool = Field(True, description="serve warm-up and retraining history from the database")

    receiver: InfluxDBReceiverConfig = Field(default_factory=InfluxDBReceiverConfig)
    write_back: InfluxDBWriteBackConfig = Field(default_factory=InfluxDBWriteBackConfig)

    @model_validator(mode="after")
    def _check(self) -> InfluxDBSourceConfig:
        if self.mode == "subscription" and not self.receiver.enabled:
            raise ValueError("mode subscription needs receiver.enabled: true")
        if (self.receiver.username is None) != (self.receiver.password is None):
            raise ValueError("receiver.username and receiver.password go together")
        return self

    @property
    def effective_bucket(self) -> str:
        return self.bucket or f"{self.database}/{self.retention_policy}"
