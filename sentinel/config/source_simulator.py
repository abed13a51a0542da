"""Config of the built-in simulator source (``type: simulator``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ._base import Duration, Strict


class SimulatorSourceConfig(Strict):
    type: Literal["simulator"] = "simulator"
    name: str = "simulator"
    streams: int = Field(300, ge=1, le=1_000_000, description="number of simulated sensors")
    fields: list[str] = Field(default_factory=lambda: ["temp", "vibration", "current"], min_length=1)
    interval: Duration = Field(1.0, gt=0, description="seconds between samples of one sensor")
    speed: float = Field(1.0, gt=0, description="simulated seconds per real second (1 = real time)")
    anomaly_rate: float = Field(0.002, ge=0, le=1, description="chance per sensor per hour of simulated time")
    history: Duration = Field(7200.0, description="simulated history offered for warm-up before now")
    seed: int = 0
    measurement: str = "sensor"
    sites: int = Field(4, ge=1)
