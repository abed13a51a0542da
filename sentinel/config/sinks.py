"""Config of the alert sinks (webhook, Alertmanager) and their durable outbox."""

from __future__ import annotations

from pydantic import Field

from ._base import Duration, Strict


class WebhookConfig(Strict):
    name: str = "webhook"
    url: str
    timeout: Duration = Field(5.0, gt=0)
    hmac_secret: str | None = Field(None, description="HMAC-SHA256 key; sets X-Sentinel-Signature")
    group_by: list[str] = Field(default_factory=lambda: ["alertname"])
    send_resolved: bool = True
    headers: dict[str, str] = Field(default_factory=dict)


class AlertmanagerConfig(Strict):
    name: str = "alertmanager"
    url: str = "http://127.0.0.1:9093"
    timeout: Duration = Field(5.0, gt=0)
    resend_interval: Duration = Field(60.0, gt=0, description="re-send firing alerts this often")


class OutboxConfig(Strict):
    path: str = Field("state/outbox", description="outbox directory, relative to the config file")
    max_entries: int = Field(100_000, ge=1)
    retry_initial: Duration = Field(1.0, gt=0)
    retry_max: Duration = Field(300.0, gt=0)


class SinksConfig(Strict):
    webhooks: list[WebhookConfig] = Field(default_factory=list)
    alertmanagers: list[AlertmanagerConfig] = Field(default_factory=list)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    log_alerts: bool = True
