"""Raw tables out of the files users have: plain CSV (``,`` ``;`` or tab, sniffed), Grafana's
"Inspect → Data" CSV (an optional ``sep=`` line, quoted cells) and InfluxDB annotated CSV
(``influx query --raw``: ``#datatype``/``#group``/``#default`` lines, one header per table).

Nothing here interprets cells; :mod:`.reader` picks the columns and parses values.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError

DELIMITERS = (",", ";", "\t")
SNIFF_LINES = 50


@dataclass
class RawTable:
    """One table of a file: its header, its rows as text cells, and where each row sits in the file."""

    path: str
    header: list[str]
    rows: list[list[str]]
    lines: list[int]                 # 1-based file line of each row
    header_line: int
    kind: str                        # "csv" | "grafana" | "influx"
    delimiter: str
    group: list[bool] | None = None  # InfluxDB: the #group annotation per column
    datatypes: list[str] | None = None
    notes: list[str] = field(default_factory=list)


def read_text(path: str | Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text (byte {e.start}): is it a CSV file?") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror or e}") from None


def sniff_delimiter(header: str, following: list[str]) -> str:
    """The delimiter that splits the header into the most columns; ties go to the one the
    following lines agree with most, then to ``,``."""
    best, best_key = ",", (0, 0.0)
    for d in DELIMITERS:
        n = len(next(csv.reader([header], delimiter=d)))
        if n < 2:
            continue
        agree = sum(1 for ln in following if len(next(csv.reader([ln], delimiter=d))) == n)
        key = (n, agree / max(len(following), 1))
        if key > best_key:
            best, best_key = d, key
    return best


def read_tables(path: str | Path) -> list[RawTable]:
    """All tables of ``path`` (one for a plain or Grafana CSV). Raises InputError for an empty file."""
    text = read_text(path)
    lines = text.splitlines()
    first = next((i for i, ln in enumerate(lines) if ln.strip()), None)
    if first is None:
        raise InputError(f"{path}: empty file (a header row with a time column and value columns is required)")
    if lines[first].startswith("#"):
        return _influx_tables(str(path), lines)
    kind, delim = "csv", None
    head = first
    if lines[first].lower().startswith("sep=") and len(lines[first].strip()) == 5:  # Excel/Grafana hint
        kind, delim = "grafana", lines[first].strip()[4]
        nxt = next((i for i in range(first + 1, len(lines)) if lines[i].strip()), None)
        if nxt is None:
            raise InputError(f"{path}: no header row after the 'sep=' line")
        head = nxt
    if delim is None:
        delim = sniff_delimiter(lines[head], [ln for ln in lines[head + 1 : head + 1 + SNIFF_LINES] if ln.strip()])
    header = [h.strip() for h in next(csv.reader([lines[head]], delimiter=delim))]
    if header and header[0].lower() == "time" and '"' in lines[head]:
        kind = "grafana"
    rows: list[list[str]] = []
    nums: list[int] = []
    body = "\n".join(lines[head + 1 :])
    reader = csv.reader(io.StringIO(body), delimiter=delim)
    try:
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            rows.append(row)
            nums.append(head + 1 + reader.line_num)
    except csv.Error as e:
        raise InputError(f"{path}:{head + 1 + reader.line_num}: {e}") from None
    return [RawTable(str(path), header, rows, nums, head + 1, kind, delim)]


def _influx_tables(path: str, lines: list[str]) -> list[RawTable]:
    """InfluxDB annotated CSV: annotation lines, a header, rows; tables separated by blank lines."""
    tables: list[RawTable] = []
    ann: dict[str, list[str]] = {}
    cur: RawTable | None = None
    for i, ln in enumerate(lines, start=1):
        if not ln.strip():
            cur = None
            continue
        try:
            cells = next(csv.reader([ln]))
        except csv.Error as e:
            raise InputError(f"{path}:{i}: {e}") from None
        if ln.startswith("#"):
            ann[cells[0].lstrip("#").strip().lower()] = cells
            cur = None
            continue
        if cur is None:
            header = [h.strip() for h in cells]
            if "_time" not in header and "error" in header:
                raise InputError(f"{path}:{i}: the export holds an InfluxDB error table, not data")
            group = [c.strip().lower() == "true" for c in ann["group"]] if "group" in ann else None
            types = [c.strip() for c in ann["datatype"]] if "datatype" in ann else None
            cur = RawTable(path, header, [], [], i, "influx", ",", group, types)
            tables.append(cur)
            ann = {}
            continue
        cur.rows.append(cells)
        cur.lines.append(i)
    if not tables:
        raise InputError(f"{path}: InfluxDB annotated CSV without a header row")
    return tables
