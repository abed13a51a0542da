"""``sentinel replay``'s reader: delimiters, time/label/value columns, epoch units, InfluxDB and
Grafana CSV, and hostile files (a clear ``file:line: reason`` error or counted bad rows)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from sentinel.errors import InputError
from sentinel.replay.formats import sniff_delimiter
from sentinel.replay.reader import ReadOptions, read_series
from sentinel.replay.timeparse import epoch_unit, make_parser

T0 = 1_700_000_000
ISO = ["2023-11-14 22:13:20", "2023-11-14 22:13:21", "2023-11-14 22:13:22"]


def write(tmp_path: Path, text: str, name: str = "in.csv") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def one(path: Path, **kw) -> object:
    series = read_series(path, ReadOptions(**kw))
    assert len(series) == 1
    return series[0]


@pytest.mark.parametrize("delim", [",", ";", "\t"])
def test_delimiter_is_sniffed(tmp_path: Path, delim: str) -> None:
    rows = [delim.join(["timestamp", "a", "b"])] + [delim.join([str(T0 + i), f"{i}.5", f"{-i}"]) for i in range(3)]
    s = one(write(tmp_path, "\n".join(rows) + "\n"))
    assert s.fields == ("a", "b")
    np.testing.assert_array_equal(s.ts, [T0, T0 + 1, T0 + 2])
    np.testing.assert_array_equal(s.values, [[0.5, 0], [1.5, -1], [2.5, -2]])


def test_semicolon_file_with_decimal_commas(tmp_path: Path) -> None:
    s = one(write(tmp_path, "time;value\n1700000000;1,5\n1700000001;-2,25\n"))
    np.testing.assert_array_equal(s.values[:, 0], [1.5, -2.25])


def test_sniffing_prefers_the_delimiter_that_splits_the_header() -> None:
    assert sniff_delimiter("datetime;a;b", ["2020-01-01 00:00:00;1.5;2"]) == ";"
    assert sniff_delimiter("t,a,b", ["1,2,3"]) == ","
    assert sniff_delimiter("t\ta", ["1\t2"]) == "\t"


@pytest.mark.parametrize("name", ["timestamp", "Time", "DATETIME", "date", "ts", "_time"])
def test_time_column_found_by_name(tmp_path: Path, name: str) -> None:
    s = one(write(tmp_path, f"value,{name}\n1.0,{ISO[0]}\n2.0,{ISO[1]}\n"))
    assert s.fields == ("value",) and s.ts[0] == T0


def test_time_column_given_by_option_and_missing_is_a_clear_error(tmp_path: Path) -> None:
    p = write(tmp_path, f"when,value\n{ISO[0]},1\n")
    assert one(p, time_column="when").ts[0] == T0
    with pytest.raises(InputError, match=r"in\.csv:1: no time column \(looked for timestamp"):
        read_series(p)


@pytest.mark.parametrize(("scale", "unit"), [(1, "s"), (1_000, "ms"), (1_000_000, "us"), (1_000_000_000, "ns")])
def test_epoch_units_by_magnitude(tmp_path: Path, scale: int, unit: str) -> None:
    assert epoch_unit([T0 * scale, (T0 + 1) * scale])[0] == unit
    s = one(write(tmp_path, "ts,value\n" + "".join(f"{(T0 + i) * scale},{i}\n" for i in range(3))))
    np.testing.assert_allclose(s.ts, [T0, T0 + 1, T0 + 2], rtol=0, atol=1e-6)


def test_epoch_unit_and_time_format_options(tmp_path: Path) -> None:
    s = one(write(tmp_path, "t,value\n1700000000000,1\n"), time_column="t", epoch_unit="ms")
    assert s.ts[0] == T0
    s = one(write(tmp_path, "t,value\n14.11.2023 22:13:20,1\n", "f.csv"), time_column="t",
            time_format="%d.%m.%Y %H:%M:%S")
    assert s.ts[0] == T0
    assert make_parser(["2023-11-14T22:13:20.123456789Z"])[0]("2023-11-14T22:13:20.123456789Z") == pytest.approx(
        T0 + 0.123456, abs=1e-6)


def test_iso_with_zone_offset_and_naive_utc(tmp_path: Path) -> None:
    s = one(write(tmp_path, "time,value\n2023-11-14T22:13:20Z,1\n2023-11-15T00:13:21+02:00,2\n2023-11-14 22:13:22,3\n"))
    np.testing.assert_array_equal(s.ts, [T0, T0 + 1, T0 + 2])


def test_label_columns_are_kept_aside_and_values_default_to_numeric_columns(tmp_path: Path) -> None:
    text = "datetime;x;y;anomaly;changepoint;note\n" + "".join(
        f"{ISO[i]};{i}.0;{2 * i}.0;{int(i == 1)}.0;{int(i == 1)}.0;n{i}\n" for i in range(3))
    s = one(write(tmp_path, text))
    assert s.fields == ("x", "y")  # not the labels, not the text column
    np.testing.assert_array_equal(s.labels["anomaly"], [0, 1, 0])
    assert set(s.labels) == {"anomaly", "changepoint"} and s.label_text["anomaly"][1] == "1.0"


def test_value_column_preferred_and_explicit_fields_required(tmp_path: Path) -> None:
    p = write(tmp_path, "timestamp,value,other\n1700000000,1,2\n")
    assert one(p).fields == ("value",)
    assert one(p, fields=["other", "value"]).fields == ("other", "value")
    with pytest.raises(InputError, match=r"in\.csv:1: header lacks value column\(s\) \['temp'\]"):
        read_series(p, ReadOptions(fields=["temp"]))


def test_label_column_full_of_text(tmp_path: Path) -> None:
    p = write(tmp_path, "timestamp,value,label\n1700000000,1,foo\n1700000001,2,bar\n")
    s = one(p)  # auto-detected: carried to the output, not used as labels, with a note
    assert s.labels == {} and s.label_text["label"] == ["foo", "bar"]
    assert any("label column 'label'" in n and "in.csv:2" in n for n in s.notes)
    with pytest.raises(InputError, match=r"in\.csv:2: label column 'label': 'foo' is not 0/1"):
        read_series(p, ReadOptions(label_columns=["label"]))
    words = one(write(tmp_path, "timestamp,value,label\n1700000000,1,normal\n1700000001,2,anomaly\n", "w.csv"))
    np.testing.assert_array_equal(words.labels["label"], [0, 1])


def test_duplicate_time_column_is_a_clear_error(tmp_path: Path) -> None:
    p = write(tmp_path, "timestamp,value,timestamp\n1700000000,1,1700000000\n")
    with pytest.raises(InputError, match=r"in\.csv:1: time column 'timestamp' appears 2 times \(columns 1, 3\)"):
        read_series(p)


def test_ragged_rows_and_mixed_delimiters_are_counted_bad_rows(tmp_path: Path) -> None:
    text = ("timestamp,a,b\n1700000000,1,2\n1700000001;3;4\n1700000002,5\n1700000003,6,7,8\n1700000004,9,10,\n"
            "1700000005,x,1\n1700000006,inf,1\nsoon,1,1\n1700000008,,\n")
    s = one(write(tmp_path, text))
    assert s.bad == [None, "ragged", "ragged", "ragged", None, "non_numeric", "non_finite", "bad_timestamp", None]
    assert np.isnan(s.ts[[1, 2, 3, 5, 6, 7]]).all() and np.isnan(s.values[[1, 2, 3, 5, 6, 7]]).all()
    np.testing.assert_array_equal(s.values[4], [9, 10])  # a trailing empty cell is fine
    assert np.isnan(s.values[8]).all() and s.ts[8] == T0 + 8  # all missing: the engine rejects it (no_values)
    np.testing.assert_array_equal(s.lines, np.arange(2, 11))


def test_empty_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="empty file"):
        read_series(write(tmp_path, "\n\n"))
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00\x01")
    with pytest.raises(InputError, match="not UTF-8"):
        read_series(tmp_path / "bin.csv")
    with pytest.raises(InputError, match="no numeric value columns"):
        read_series(write(tmp_path, "timestamp,name\n1700000000,a\n", "t.csv"))


INFLUX = """#group,false,false,true,true,false,false,true,true,true
#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,dateTime:RFC3339,double,string,string,string
#default,_result,,,,,,,,
,result,table,_start,_stop,_time,_value,_field,_measurement,host
,,0,2023-11-14T22:00:00Z,2023-11-15T00:00:00Z,2023-11-14T22:13:20Z,1.5,temp,cpu,a
,,0,2023-11-14T22:00:00Z,2023-11-15T00:00:00Z,2023-11-14T22:13:21.000000001Z,2.5,temp,cpu,a
,,1,2023-11-14T22:00:00Z,2023-11-15T00:00:00Z,2023-11-14T22:13:20Z,10,load,cpu,a
,,1,2023-11-14T22:00:00Z,2023-11-15T00:00:00Z,2023-11-14T22:13:21.000000001Z,11,load,cpu,a

#group,false,false,true,true,false,false,true,true,true
#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,dateTime:RFC3339,double,string,string,string
#default,_result,,,,,,,,
,result,table,_start,_stop,_time,_value,_field,_measurement,host
,,2,2023-11-14T22:00:00Z,2023-11-15T00:00:00Z,2023-11-14T22:13:22Z,7,temp,cpu,b
"""


def test_influxdb_annotated_csv_gives_one_series_per_tag_set_with_fields_pivoted(tmp_path: Path) -> None:
    series = read_series(write(tmp_path, INFLUX, "export.csv"))
    by = {str(s.key): s for s in series}
    assert set(by) == {"cpu,host=a", "cpu,host=b"}
    a = by["cpu,host=a"]
    assert a.fields == ("load", "temp")
    np.testing.assert_array_equal(a.values, [[10, 1.5], [11, 2.5]])
    assert a.ts[0] == T0 and a.stamps[0] == "2023-11-14T22:13:20Z"
    b = by["cpu,host=b"]
    assert b.fields == ("temp",) and b.ts[0] == T0 + 2


GRAFANA = 'sep=,\n"Time","cpu{host=""a""}","mem"\n"2023-11-14 22:13:20","12.5 %","1.5 GB"\n' \
          '"2023-11-14 22:13:21","13 %",""\n'


def test_grafana_csv_with_sep_line_quotes_and_units(tmp_path: Path) -> None:
    s = one(write(tmp_path, GRAFANA, "grafana.csv"))
    assert s.fields == ('cpu{host="a"}', "mem")
    np.testing.assert_array_equal(s.values[0], [12.5, 1.5])
    assert s.values[1, 0] == 13 and math.isnan(s.values[1, 1])
    assert s.ts[0] == T0


def test_long_format_with_a_series_column(tmp_path: Path) -> None:
    text = "time,sensor,value\n" + "".join(f"{T0 + i},{'ab'[i % 2]},{i}\n" for i in range(6))
    series = read_series(write(tmp_path, text), ReadOptions(series_column="sensor"))
    assert [s.name for s in series] == ["in.a", "in.b"]
    np.testing.assert_array_equal(series[1].values[:, 0], [1, 3, 5])
