"""Config of the built-in simulator source (``type: simulator``)."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field

from ._base import Duration, Strict

AnomalyKind = Literal[
    "spike", "dip", "level_shift", "variance_burst", "drift", "stuck", "frequency_change", "correlation_break"
]


class SimulatorSourceConfig(Strict):
    type: Literal["simulator"] = "simulator"
    name: str = "simulator"
    streams: int = Field(300, ge=1, le=1_000_000, description="number of simulated sensors")
    fields: list[str] = Field(default_factory=lambda: ["temp", "vibration", "current"], min_length=1)
    interval: Duration = Field(1.0, gt=0, description="seconds between samples of one sensor")
    speed: float = Field(1.0, gt=0, description="simulated seconds per real second (1 = real time)")
    anomaly_rate: float = Field(0.002, ge=0, le=1, description="chance per sensor per hour of simulated time")
    anomaly_kinds: list[AnomalyKind] = Field(
        default_factory=lambda: list(get_args(AnomalyKind)),
        min_length=1,
        description="kinds injected (correlation_break needs at least two fields)",
    )
    anomaly_magnitude: float = Field(1.0, gt=0, description="scales every injected anomaly's size")
    regime_rate: float = Field(
        0.5, ge=0, le=1, description="chance per sensor per day of a regime change (new normal level, unlabelled)"
    )
    history: Duration = Field(7200.0, description="simulated history offered for warm-up before now")
    seed: int = 0
    measurement: str = "sensor"
    sites: int = Field(4, ge=1)
    max_batch: int = Field(100_000, ge=1, description="most samples in one emitted batch (catch-up is chunked)")
