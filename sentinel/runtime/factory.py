"""Build sources and score write-backs from config (the only place that knows every source type)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..config import SentinelConfig
from ..metrics import Metrics
from ..sources.base import Source


def build_source(src_cfg: Any, cfg: SentinelConfig, metrics: Metrics, resume: dict | None,
                 clock: Callable[[], float] = time.time) -> Source:
    if src_cfg.type == "simulator":
        from ..sources.simulator import SimulatorSource

        return SimulatorSource(src_cfg, clock=clock, resume=resume)
    if src_cfg.type == "influxdb":
        from ..sources.influxdb import InfluxDBSource

        if src_cfg.mode == "subscription" and not src_cfg.subscription_destination:
            src_cfg = src_cfg.model_copy(update={"subscription_destination": f"http://{cfg.server.listen}"})
        return InfluxDBSource(src_cfg, metrics=metrics, clock=clock, resume=resume, streams=cfg.streams)
    if src_cfg.type == "postgres":
        from ..sources.timescale import PostgresSource

        return PostgresSource(src_cfg, metrics=metrics, clock=clock, resume=resume)
    if src_cfg.type == "mqtt":
        from ..sources.mqtt import MQTTSource

        return MQTTSource(src_cfg, metrics=metrics, clock=clock, resume=resume, streams=cfg.streams)
    raise ValueError(f"unknown source type {src_cfg.type!r}")


def build_writeback(src_cfg: Any, metrics: Metrics) -> Any | None:
    wb = getattr(src_cfg, "write_back", None)
    if wb is None or not getattr(wb, "enabled", False):
        return None
    if src_cfg.type == "influxdb":
        from ..writeback.influxdb import InfluxDBWriteBack

        return InfluxDBWriteBack(src_cfg, metrics=metrics)
    if src_cfg.type == "postgres":
        from ..writeback.postgres import PostgresWriteBack

        return PostgresWriteBack(src_cfg, metrics=metrics)
    return None


async def write_samples(src_cfg: Any, samples: list) -> None:
    """``sentinel simulate``: write samples into the source's database."""
    if src_cfg.type == "influxdb":
        from ..sources.influxdb import write_samples as w
    elif src_cfg.type == "postgres":
        from ..sources.timescale import write_samples as w  # type: ignore[assignment]
    else:
        raise ValueError(f"cannot write samples into a {src_cfg.type} source")
    await w(src_cfg, samples)
