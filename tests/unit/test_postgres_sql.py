"""Pure tests of the SQL the PostgreSQL source and write-back generate (no server needed).

The TimescaleDB paths (``time_bucket``, ``create_hypertable``) cannot run here (the extension is
not installable on these machines), so their SQL is checked as text.
"""

from __future__ import annotations

import pytest

from sentinel.config.source_postgres import PostgresSourceConfig, PostgresWriteBackConfig
from sentinel.sources.timescale import (
    Cursor,
    Shape,
    TimeKind,
    create_table_statements,
    history_query,
    notify_trigger_statements,
    poll_query,
)
from sentinel.writeback.postgres import create_statements

TS = Shape(TimeKind("timestamptz", 1_000_000), ("site",), ("temp", "on"), frozenset({"on"}))
EPOCH = Shape(TimeKind("epoch_int", 1000), ("site",), ("temp",))


def s(q) -> str:
    return q.as_string(None)


def test_poll_query_quotes_identifiers_and_binds_values() -> None:
    cfg = PostgresSourceConfig(table='x"; DROP TABLE y; --', table_schema="s c", time_column="t'", key_columns=["site"])
    q = s(poll_query(cfg, TS, has_floor=True, has_after=True))
    assert 'FROM "s c"."x""; DROP TABLE y; --"' in q
    assert '"t\'" > %(_s_floor)s' in q
    assert '("t\'", COALESCE(CAST("site" AS text), \'\') COLLATE "C") > (%(_s_at)s, %(_s_ak0)s)' in q
    assert 'CAST(CAST("on" AS integer) AS double precision)' in q
    assert q.endswith("LIMIT %(_s_limit)s")


def test_custom_query_is_wrapped_as_subquery() -> None:
    cfg = PostgresSourceConfig(query="SELECT * FROM m WHERE a = %(a)s", query_params={"a": 1})
    q = s(poll_query(cfg, TS, has_floor=False, has_after=False))
    assert 'FROM (SELECT * FROM m WHERE a = %(a)s) AS "_sentinel_q"' in q


def test_history_downsampling_uses_time_bucket_only_with_timescaledb() -> None:
    cfg = PostgresSourceConfig(table="m", key_columns=["site"])
    tsdb = s(history_query(cfg, TS, filter_keys=True, bucketed=True, timescaledb=True))
    assert 'extract(epoch FROM time_bucket(%(_s_bucket)s, "time"))' in tsdb
    assert "GROUP BY 1, 2 ORDER BY 1, 2" in tsdb
    assert "IN (SELECT * FROM unnest(CAST(%(_s_kf0)s AS text[])))" in tsdb
    plain = s(history_query(cfg, TS, filter_keys=False, bucketed=True, timescaledb=False))
    assert "time_bucket" not in plain and 'floor(extract(epoch FROM "time") / %(_s_bucket_s)s)' in plain
    ints = s(history_query(cfg, EPOCH, filter_keys=False, bucketed=True, timescaledb=True))
    assert 'time_bucket(%(_s_bucket)s, "time")' in ints and "/ 1000" in ints
    raw = s(history_query(cfg, TS, filter_keys=False, bucketed=False, timescaledb=True))
    assert "time_bucket" not in raw and '"time" >= %(_s_since)s AND "time" < %(_s_until)s' in raw


def test_samples_table_and_writeback_become_hypertables_with_timescaledb() -> None:
    ddl = [s(q) for q in create_table_statements(None, 'my "t"', "time", ["site"], ["v"], timescaledb=True)]
    assert ddl[0].startswith('CREATE TABLE IF NOT EXISTS "my ""t""" ("time" timestamptz NOT NULL')
    assert ddl[1] == ("SELECT create_hypertable('\"my \"\"t\"\"\"', 'time', if_not_exists => TRUE, "
                      "migrate_data => TRUE)")
    assert not any("create_hypertable" in q for q in
                   (s(x) for x in create_table_statements(None, "t", "time", [], ["v"], timescaledb=False)))
    wb = [s(q) for q in create_statements(PostgresWriteBackConfig(table_schema="g", chunk_time_interval=3600),
                                          timescaledb=True)]
    hyper = [q for q in wb if "create_hypertable" in q]
    assert hyper == [
        "SELECT create_hypertable('\"g\".\"sentinel_scores\"', 'time', chunk_time_interval => "
        "'3600.0 seconds'::interval, if_not_exists => TRUE)",
        "SELECT create_hypertable('\"g\".\"sentinel_alert_transitions\"', 'time', chunk_time_interval => "
        "'3600.0 seconds'::interval, if_not_exists => TRUE)",
    ]
    assert not any("create_hypertable" in s(q) for q in create_statements(PostgresWriteBackConfig(),
                                                                          timescaledb=False))


def test_notify_trigger_passes_channel_as_literal_argument() -> None:
    stmts = [s(q) for q in notify_trigger_statements(None, "m", "$sentinel$'; DROP TABLE m; --")]
    assert "pg_notify(TG_ARGV[0]" in stmts[0] and "DROP" not in stmts[0]
    assert stmts[2].endswith("EXECUTE FUNCTION \"sentinel_notify_insert\"('$sentinel$''; DROP TABLE m; --')")
    assert "FOR EACH STATEMENT" in stmts[2]


def test_cursor_round_trips_and_bounds_its_memory() -> None:
    c = Cursor(lateness=10, max_seen=4)
    for t, k in [(1, ("a",)), (2, ("a",)), (2, ("b",)), (3, ("a",))]:
        c.mark(t, k)
    c.advance()
    assert c.floor is None or c.floor < 1
    d = c.to_dict()
    c2 = Cursor.from_dict(d, lateness=10, max_seen=4)
    assert [c2.is_new(t, k) for t, k in [(2, ("b",)), (2, ("c",)), (4, ("a",))]] == [False, True, True]
    for t in (4, 5):
        c2.mark(t, ("a",))
    c2.advance()  # 6 entries > max_seen=4: the oldest times are declared done
    assert len(c2) <= 4 and c2.floor == 2 and not c2.is_new(2, ("z",)) and c2.is_new(3, ("z",))
    c2.mark(30, ("a",))
    c2.advance()
    assert c2.floor == 20 and len(c2) == 1


def test_cursor_version_is_checked() -> None:
    from sentinel.errors import SourceError

    with pytest.raises(SourceError):
        Cursor.from_dict({"v": 99}, 1, 1)


@pytest.mark.parametrize(("type_name", "kind"), [("timestamptz", "timestamptz"), ("timestamp", "timestamp"),
                                                 ("int8", "epoch_int"), ("float8", "epoch_float"),
                                                 ("numeric", "epoch_float")])
def test_time_kinds(type_name: str, kind: str) -> None:
    tk = TimeKind.from_type(type_name, "ms")
    assert tk.kind == kind
    raw = tk.from_seconds(1_714_564_800.25)
    assert tk.seconds(raw) == 1_714_564_800.25
    assert tk.from_db(tk.to_db(raw)) == raw


def test_time_kind_rejects_text() -> None:
    from sentinel.errors import SourceError

    with pytest.raises(SourceError):
        TimeKind.from_type("text", "s")
