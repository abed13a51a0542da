"""``sentinel replay``: backtest files through the same engine the daemon runs.

The files' own timestamps are the clock: warm-up, first training, scheduled and
drift retraining, and threshold adaptation happen as they would live. Output has
one row per input row, in order: ``timestamp,score,is_anomaly,error,threshold``
(``timestamp`` echoed as given), then the input's label columns. Bad rows are
counted by reason, get ``score=0,is_anomaly=0`` and never reach the engine's state.

Modules: :mod:`.timeparse` (time cells), :mod:`.formats` (raw tables: delimiter
sniffing, Grafana and InfluxDB annotated CSV), :mod:`.reader` / :mod:`.influx`
(series: time, value and label columns), :mod:`.run` (a fleet through one engine),
:mod:`.output`, :mod:`.report`, :mod:`.plot`, :mod:`.command` (the click command).
"""

from __future__ import annotations

from pathlib import Path

from ..config import SentinelConfig
from .output import write_output
from .reader import ReadOptions, Series, read_series
from .run import FleetResult, StreamResult, replay_fleet
from .timeparse import parse_timestamp

ReplayResult = StreamResult

__all__ = ["FleetResult", "ReadOptions", "ReplayResult", "Series", "StreamResult", "options_for", "parse_timestamp",
           "read_rows", "read_series", "replay", "replay_fleet", "write_output"]


def options_for(cfg: SentinelConfig, **kw) -> ReadOptions:
    """Read options from a config: its ``fields`` are required only when the file states them."""
    fields = kw.pop("fields", None) or (list(cfg.fields) if "fields" in cfg.model_fields_set else None)
    return ReadOptions(fields=fields, **kw)


def replay(cfg: SentinelConfig, input_path: str | Path, *, progress: bool = True, train_rows: int = 0,
           history: str | Path | None = None, **read_kw) -> StreamResult:
    """Replay one single-series file (the CLI's one-file case)."""
    from .command import load_history_for

    opts = options_for(cfg, **read_kw)
    series = read_series(input_path, opts)
    hist = load_history_for(series, [history] if history else [], opts)
    return replay_fleet(cfg, series[:1], history=hist, train_rows=train_rows, progress=progress).streams[0]


def read_rows(path: str | Path, fields: list[str]) -> tuple[list[str], list[list[str]]]:
    """The raw time column and the ``fields`` cells per row (for tools that only need the text)."""
    from .formats import read_tables
    from .reader import _find, _time_index

    t = read_tables(path)[0]
    ti = _time_index(t, ReadOptions())
    vi = [_find(t.header, f, t.path, t.header_line, "value") for f in fields]
    return ([r[ti] if ti < len(r) else "" for r in t.rows],
            [[r[j] if 0 <= j < len(r) else "" for j in vi] for r in t.rows])
