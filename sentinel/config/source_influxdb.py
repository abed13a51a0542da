"""Config of the InfluxDB source (``type: influxdb``). Owned by the InfluxDB source."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ._base import Duration, Strict


class InfluxDBSourceConfig(Strict):
    type: Literal["influxdb"] = "influxdb"
    name: str = "influxdb"
    url: str = "http://127.0.0.1:8086"
    mode: Literal["subscription", "poll_influxql", "poll_flux", "receiver"] = "poll_influxql"
    database: str = "sensors"
    retention_policy: str = "autogen"
    measurements: list[str] = Field(default_factory=list)
    fields: list[str] = Field(default_factory=list)
    poll_interval: Duration = 10.0
    lateness: Duration = 5.0
