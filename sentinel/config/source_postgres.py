"""Config of the TimescaleDB/PostgreSQL source (``type: postgres``). Owned by that source."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ._base import Duration, Strict


class PostgresSourceConfig(Strict):
    type: Literal["postgres"] = "postgres"
    name: str = "postgres"
    dsn: str = "postgresql://127.0.0.1:5432/sensors"
    table: str = "metrics"
    time_column: str = "time"
    key_columns: list[str] = Field(default_factory=list)
    value_columns: list[str] = Field(default_factory=list)
    poll_interval: Duration = 10.0
    lateness: Duration = 5.0
