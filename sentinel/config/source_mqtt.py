"""Config of the MQTT source (``type: mqtt``). Owned by the MQTT source.

Sentinel subscribes to ``topics`` on one broker (``mqtt://host:port`` or, with TLS,
``mqtts://host:port``) at ``qos`` (1 by default) with a persistent session: a fixed
``client_id`` and ``clean_session: false``, so messages the broker queued while
Sentinel was away are delivered when it comes back. A QoS 1 message is acknowledged
only once the runtime has taken its samples.

Payloads are ``line_protocol`` (the one codec, :mod:`sentinel.lineprotocol`) or
``json`` (fields, tags and the timestamp picked by dotted paths, see
:class:`MQTTJSONConfig`). ``key_from_topic`` names the topic segments after
``topic_prefix`` that become stream labels, e.g. prefix ``plant`` and
``[site, machine]``: ``plant/s1/m7/telemetry`` -> ``site=s1,machine=m7``
(a name ``_`` skips a segment). Topic labels win over payload tags of the same name.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from ._base import Duration, Strict


class MQTTTLSConfig(Strict):
    """TLS towards the broker (on by itself for ``mqtts://``)."""

    enabled: bool = Field(False, description="use TLS (implied by an mqtts:// url)")
    ca_file: str | None = Field(None, description="CA bundle that signed the broker's certificate; default: system")
    cert_file: str | None = Field(None, description="client certificate (mutual TLS)")
    key_file: str | None = Field(None, description="client key (mutual TLS)")
    insecure: bool = Field(False, description="skip the broker hostname check (tests only)")

    @model_validator(mode="after")
    def _pair(self) -> MQTTTLSConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("tls.cert_file and tls.key_file go together")
        return self


class MQTTJSONConfig(Strict):
    """How a JSON payload (an object, or an array of objects) becomes points.

    Paths are dotted (``a.b.0.c``: keys, and list indices as numbers).
    """

    measurement: str = Field("mqtt", description="measurement of the streams (unless measurement_path)")
    measurement_path: str | None = Field(None, description="path of the measurement name in the payload")
    fields: dict[str, str] = Field(
        default_factory=dict, description="field name -> path; empty = every top-level number"
    )
    tags: dict[str, str] = Field(default_factory=dict, description="tag name -> path (missing paths are skipped)")
    timestamp_path: str | None = Field(None, description="path of the timestamp; unset = arrival time")
    timestamp_unit: Literal["s", "ms", "us", "ns"] = Field(
        "s", description="unit of a numeric timestamp (strings are read as ISO 8601 / RFC 3339)"
    )


class MQTTSourceConfig(Strict):
    type: Literal["mqtt"] = "mqtt"
    name: str = Field("mqtt", description="source name (unique)")
    url: str = Field("mqtt://127.0.0.1:1883", description="broker: mqtt://host:port or mqtts://host:port")
    topics: list[str] = Field(
        default_factory=lambda: ["sensors/#"], min_length=1, description="topic filters (+ and # wildcards)"
    )
    qos: Literal[0, 1, 2] = Field(1, description="subscription QoS (1: at least once)")
    client_id: str = Field(
        "", description="fixed client id of the persistent session; default sentinel-<name> "
        "(give each Sentinel instance its own)"
    )
    clean_session: bool = Field(
        False, description="false: the broker keeps the session (subscriptions, queued QoS>0 messages) "
        "while Sentinel is away"
    )
    keepalive: Duration = Field(30.0, ge=5, description="MQTT keep-alive interval")
    connect_timeout: Duration = Field(10.0, gt=0, description="longest wait for CONNACK and SUBACK")
    username: str | None = Field(None, description="broker user (${ENV} expansion applies)")
    password: str | None = Field(None, description="broker password (${ENV} expansion applies)")
    tls: MQTTTLSConfig = Field(default_factory=MQTTTLSConfig)

    format: Literal["line_protocol", "json"] = Field("line_protocol", description="payload format")
    precision: Literal["ns", "us", "ms", "s"] = Field("ns", description="line protocol timestamp precision")
    json_payload: MQTTJSONConfig = Field(default_factory=MQTTJSONConfig, alias="json")
    topic_prefix: str = Field("", description="leading topic segments skipped before key_from_topic")
    key_from_topic: list[str] = Field(
        default_factory=list, description="label names of the topic segments after topic_prefix ('_' skips one)"
    )

    # --- stream selection (as the InfluxDB source) ---
    measurements: list[str] = Field(default_factory=list, description="measurements followed; empty = all")
    tags: dict[str, list[str]] = Field(default_factory=dict, description="tag filters: tag -> accepted values")
    ignore_tags: list[str] = Field(default_factory=list, description="tags dropped from the stream identity")
    fields: list[str] = Field(default_factory=list, description="numeric fields that form streams; empty = all")
    stream_per: Literal["tagset", "field"] = Field("tagset", description="one stream per tag set or per field")
    field_label: str = Field("field", description="label naming the field when stream_per=field")
    max_streams: int = Field(100_000, ge=1, description="streams this source creates at most")

    # --- bounds ---
    max_payload_bytes: int = Field(65_536, ge=64, description="larger payloads are rejected (mqtt_oversize)")
    max_fields: int = Field(256, ge=1, description="fields per JSON point at most (mqtt_too_many_fields)")
    max_pending: int = Field(100_000, ge=1, description="messages waiting for the runtime; more are dropped "
                             "(mqtt_overflow)")
    batch_max: int = Field(10_000, ge=1, description="messages decoded into one batch at most")
    backoff_initial: Duration = Field(0.5, gt=0, description="first reconnect delay")
    backoff_max: Duration = Field(30.0, gt=0, description="largest reconnect delay (full jitter)")

    model_config = Strict.model_config | {"populate_by_name": True}

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        u = urlsplit(v)
        if u.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not u.hostname:
            raise ValueError(f"url must be mqtt://host:port or mqtts://host:port, got {v!r}")
        try:
            u.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise ValueError(f"url has a bad port: {v!r}") from None
        return v

    @field_validator("topics")
    @classmethod
    def _topics(cls, v: list[str]) -> list[str]:
        for t in v:
            parts = t.split("/")
            bad = not t or any(("+" in p and p != "+") or ("#" in p and p != "#") for p in parts)
            if bad or ("#" in parts and parts.index("#") != len(parts) - 1):
                raise ValueError(f"invalid topic filter {t!r} (+ stands for one whole level, # only last)")
        return v

    @model_validator(mode="after")
    def _check(self) -> MQTTSourceConfig:
        if (self.username is None) != (self.password is None) and self.password is not None:
            raise ValueError("password needs username")
        return self

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def use_tls(self) -> bool:
        return self.tls.enabled or urlsplit(self.url).scheme in ("mqtts", "ssl")

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or (8883 if self.use_tls else 1883)

    @property
    def effective_client_id(self) -> str:
        return self.client_id or f"sentinel-{self.name}"
