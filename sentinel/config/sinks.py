"""Config of the alert sinks (webhook, Alertmanager) and their durable outbox.

Every key has a default except the receivers' URLs. Durations accept ``250ms``,
``5s``, ``1m`` or a number of seconds.

.. code-block:: yaml

    sinks:
      webhooks:
        - name: ops-webhook            # also the payload's "receiver" and the metrics' sink label
          url: https://hooks.example/sentinel
          hmac_secret: ${WEBHOOK_SECRET}
          group_by: [alertname, site]
      alertmanagers:
        - url: http://127.0.0.1:9093
          resend_interval: 1m
      outbox:
        path: state/outbox
"""

from __future__ import annotations

from pydantic import Field, model_validator

from ._base import Duration, Strict


class WebhookConfig(Strict):
    name: str = Field("webhook", min_length=1, description="receiver name; unique among all sinks")
    url: str
    timeout: Duration = Field(5.0, gt=0, description="per-request timeout")
    hmac_secret: str | None = Field(None, description="HMAC-SHA256 key; sets X-Sentinel-Signature: sha256=<hex>")
    group_by: list[str] = Field(default_factory=lambda: ["alertname"], description="labels that group alerts")
    send_resolved: bool = True
    headers: dict[str, str] = Field(default_factory=dict, description="extra HTTP headers (e.g. Authorization)")


class AlertmanagerConfig(Strict):
    name: str = Field("alertmanager", min_length=1, description="sink name; unique among all sinks")
    url: str = "http://127.0.0.1:9093"
    timeout: Duration = Field(5.0, gt=0, description="per-request timeout")
    resend_interval: Duration = Field(60.0, gt=0, description="re-send firing alerts this often")
    headers: dict[str, str] = Field(default_factory=dict, description="extra HTTP headers (e.g. Authorization)")
    read_silences: bool = Field(False, description="read silences whose comment starts `sentinel:normal` as "
                                "normal feedback on the streams they match (polls /api/v2/silences)")
    silences_interval: Duration = Field(30.0, gt=0, description="how often silences are read")


class OutboxConfig(Strict):
    path: str = Field("state/outbox", description="outbox directory, relative to the config file")
    max_entries: int = Field(100_000, ge=1, description="per sink; beyond it the oldest entries are dropped")
    retry_initial: Duration = Field(1.0, gt=0, description="first retry delay (full jitter below it)")
    retry_max: Duration = Field(300.0, gt=0, description="cap of the exponential retry delay")
    batch: int = Field(500, ge=1, description="outbox entries taken per delivery round")
    flush_timeout: Duration = Field(5.0, ge=0, description="on shutdown, time given to deliver what is pending")


class SinksConfig(Strict):
    webhooks: list[WebhookConfig] = Field(default_factory=list)
    alertmanagers: list[AlertmanagerConfig] = Field(default_factory=list)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    log_alerts: bool = Field(True, description="log every alert transition")

    @model_validator(mode="after")
    def _unique_names(self) -> SinksConfig:
        names = [s.name for s in self.webhooks] + [s.name for s in self.alertmanagers]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"sink names must be unique across webhooks and alertmanagers, repeated: {dup}")
        return self
