"""The TimescaleDB / PostgreSQL source: cursor polling, LISTEN/NOTIFY wake-up, history, write."""

from ...clients.postgres import detect_timescaledb
from .cursor import Cursor, TimeKind
from .source import PostgresSource
from .sql import Shape, history_query, install_notify_trigger, notify_trigger_statements, poll_query
from .write import create_table_statements, write_samples

__all__ = ["Cursor", "PostgresSource", "Shape", "TimeKind", "create_table_statements", "detect_timescaledb",
           "history_query", "install_notify_trigger", "notify_trigger_statements", "poll_query", "write_samples"]
