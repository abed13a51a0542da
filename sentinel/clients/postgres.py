"""PostgreSQL helpers shared by the source and the write-back."""

from __future__ import annotations

import psycopg
from psycopg import sql


def table_ident(schema: str | None, table: str) -> sql.Identifier:
    return sql.Identifier(schema, table) if schema else sql.Identifier(table)


TIMESCALEDB_QUERY = "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"


async def detect_timescaledb(conn: psycopg.AsyncConnection, mode: str = "auto") -> str | None:
    """The installed TimescaleDB version, or None (absent, or ``mode == "off"``)."""
    if mode == "off":
        return None
    cur = await conn.execute(TIMESCALEDB_QUERY)
    row = await cur.fetchone()
    return str(row[0]) if row else None


def one_line(e: BaseException) -> str:
    """An error message on one line (psycopg's span several).

    >>> one_line(ValueError("a\\n  b"))
    'a b'
    """
    return " ".join(str(e).split()) or type(e).__name__
