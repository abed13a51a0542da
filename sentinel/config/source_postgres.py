"""Config of the TimescaleDB/PostgreSQL source (``type: postgres``). Owned by that source.

A table is described by its time column, key columns (a stream's labels) and value
columns (its fields); or ``query`` gives custom SQL whose result has those columns.
Identifiers here are plain names: the source quotes them, so any name is safe.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ._base import Duration, Strict


class PostgresNotifyConfig(Strict):
    """LISTEN/NOTIFY wake-up: poll at once when a row is inserted."""

    enabled: bool = Field(True, description="LISTEN on `channel` and poll at once on a notification")
    channel: str = Field("sentinel_new_rows", min_length=1, max_length=63,
                         description="NOTIFY channel (one per table is typical)")
    install_trigger: bool = Field(
        False, description="create (idempotently) a statement-level AFTER INSERT trigger that NOTIFYs `channel`"
    )


class PostgresWriteBackConfig(Strict):
    """Optional write-back of scores, thresholds and alert transitions for Grafana."""

    enabled: bool = Field(False, description="write ScoreRecords and alert transitions to PostgreSQL")
    dsn: str | None = Field(None, description="connection string; default: the source's dsn")
    table_schema: str | None = Field(None, description="schema of both tables; default: the search_path's first")
    scores_table: str = Field("sentinel_scores", min_length=1, description="one row per scored sample")
    transitions_table: str = Field("sentinel_alert_transitions", min_length=1,
                                   description="one row per change of a stream's alert state")
    create_tables: bool = Field(True, description="create both tables if missing (hypertables with TimescaleDB)")
    timescaledb: Literal["auto", "off"] = Field("auto", description="auto: use create_hypertable when present")
    chunk_time_interval: Duration = Field(86400.0, gt=0, description="hypertable chunk interval")
    batch_size: int = Field(5000, ge=1, description="rows per COPY")
    flush_interval: Duration = Field(1.0, gt=0, description="longest time a record waits in the buffer")
    max_buffer: int = Field(200_000, ge=1, description="records buffered; beyond this new ones are dropped and counted")
    stop_timeout: Duration = Field(10.0, ge=0, description="stop() flushes for at most this long")


class PostgresSourceConfig(Strict):
    type: Literal["postgres"] = "postgres"
    name: str = Field("postgres", description="source name (cursor and metrics label)")
    dsn: str = Field("postgresql://127.0.0.1:5432/sensors",
                     description="libpq connection string or URI; use ${PGPASSWORD} etc. for secrets")
    table_schema: str | None = Field(None, description="schema of `table`; default: the search_path's first")
    table: str = Field("metrics", min_length=1, description="table (or view / hypertable) holding the samples")
    query: str | None = Field(
        None,
        description=(
            "custom SQL instead of `table`; its result must have the time, key and value columns; "
            "named parameters %(name)s are bound from `query_params` (wrapped as a subquery)"
        ),
    )
    query_params: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="values bound to the custom query's %(name)s placeholders"
    )
    measurement: str | None = Field(None, description="measurement of the stream keys; default: `table`")
    time_column: str = Field("time", min_length=1, description="timestamptz, timestamp (UTC) or numeric epoch")
    epoch_unit: Literal["s", "ms", "us", "ns"] = Field("s", description="unit of a numeric time column")
    key_columns: list[str] = Field(default_factory=list, description="columns identifying a stream (its labels)")
    value_columns: list[str] = Field(
        default_factory=list, description="numeric/bool columns scored (a stream's fields); empty: all numeric ones"
    )
    per_field_streams: bool = Field(
        False, description="each value column is its own univariate stream (label field=<name>)"
    )
    start: Literal["latest", "earliest"] = Field(
        "latest", description="without a saved cursor: follow rows after the newest one, or read the table from the start"
    )
    poll_interval: Duration = Field(10.0, gt=0, description="poll this often when no NOTIFY arrives")
    lateness: Duration = Field(5.0, ge=0, description="rows up to this much older than the cursor are still picked up")
    page_size: int = Field(10_000, ge=1, description="rows per query (keyset paging)")
    max_seen: int = Field(
        200_000, ge=1, description="(time, key) pairs remembered within the lateness window to de-duplicate"
    )
    timescaledb: Literal["auto", "off"] = Field("auto", description="auto: use TimescaleDB features when present")
    history_bucket: Duration = Field(
        0.0, ge=0, description="downsample history to this bucket (time_bucket on TimescaleDB); 0 = raw rows"
    )
    pool_min: int = Field(1, ge=0, description="pooled connections kept open")
    pool_max: int = Field(4, ge=1, description="pooled connections at most (history and polling share them)")
    connect_timeout: Duration = Field(10.0, gt=0, description="per connection attempt")
    statement_timeout: Duration = Field(60.0, ge=0, description="server-side statement timeout (0 = none)")
    backoff_initial: Duration = Field(0.5, gt=0, description="first reconnect delay (full jitter)")
    backoff_max: Duration = Field(30.0, gt=0, description="longest reconnect delay")
    notify: PostgresNotifyConfig = Field(default_factory=PostgresNotifyConfig)
    write_back: PostgresWriteBackConfig = Field(default_factory=PostgresWriteBackConfig)

    @model_validator(mode="after")
    def _columns_ok(self) -> PostgresSourceConfig:
        cols = [self.time_column, *self.key_columns, *self.value_columns]
        dup = sorted({c for c in cols if cols.count(c) > 1})
        if dup:
            raise ValueError(f"a column is listed twice among time/key/value columns: {dup}")
        if self.pool_min > self.pool_max:
            raise ValueError(f"pool_min ({self.pool_min}) must not exceed pool_max ({self.pool_max})")
        return self

    @property
    def stream_measurement(self) -> str:
        return self.measurement or (self.table if self.query is None else self.name)
