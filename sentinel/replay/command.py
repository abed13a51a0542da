"""The ``sentinel replay`` click command: inputs, history, outputs, report and plots."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from ..config import ConfigError, load_config
from ..errors import InputError
from ..types import StreamKey
from .output import safe_name, write_output
from .reader import ReadOptions, Series, read_series


def expand_inputs(paths: list[str]) -> list[tuple[Path, str]]:
    """Files (directories: their ``*.csv`` files, recursively) with a unique stream name each:
    the file's stem, or its path relative to the inputs' common folder when stems collide."""
    files: list[Path] = []
    for p in paths:
        q = Path(p)
        if q.is_dir():
            found = sorted(f for f in q.rglob("*") if f.is_file() and f.suffix.lower() in (".csv", ".tsv", ".txt"))
            if not found:
                raise InputError(f"{q}: no .csv files in this directory")
            files += found
        else:
            files.append(q)
    stems = [f.stem for f in files]
    if len(set(stems)) == len(stems):
        return [(f, f.stem) for f in files]
    base = Path(os.path.commonpath([str(f.resolve().parent) for f in files]))
    return [(f, str(f.resolve().with_suffix("").relative_to(base))) for f in files]


def load_history_for(series: list[Series], paths: list[str | Path], opts: ReadOptions) -> dict[StreamKey, Series]:
    """History series per input stream: one history series serves every input, else they pair by name."""
    if not paths or not series:
        return {}
    fields = list(series[0].fields)
    hopts = ReadOptions(**{**opts.__dict__, "fields": fields, "label_columns": []})
    hist: list[Series] = []
    for p in paths:
        for f, name in expand_inputs([str(p)]):
            hist += read_series(f, hopts, name)
    if len(hist) == 1:
        return {s.key: hist[0] for s in series}
    by_name = {h.name: h for h in hist}
    out = {s.key: by_name[s.name] for s in series if s.name in by_name}
    if not out:
        raise InputError(f"no history series matches an input by name (history: {sorted(by_name)[:5]}, "
                         f"inputs: {[s.name for s in series][:5]}); give one history file for all inputs")
    return out


def _split_fields(values: tuple[str, ...]) -> list[str] | None:
    out = [f.strip() for v in values for f in v.split(",") if f.strip()]
    return out or None


@click.command("replay")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), help="YAML config")
@click.option("--input", "inputs", required=True, multiple=True,
              help="CSV file(s) or a directory of them (several: each file/series is a stream of one run)")
@click.argument("more_inputs", nargs=-1, type=click.Path())
@click.option("--output", "output_path", required=True, help="CSV to write (a directory for several series)")
@click.option("--history", "history", multiple=True, help="normal-operation data to warm up and first train on")
@click.option("--train-rows", type=click.IntRange(min=0), default=0, help="the first N rows of each input are history")
@click.option("--time-column", help="name of the time column (default: timestamp, time, datetime, date, ts, _time)")
@click.option("--time-format", help="strptime format of the time column (default: ISO 8601 or epoch numbers)")
@click.option("--epoch-unit", type=click.Choice(["s", "ms", "us", "ns"]), help="unit of epoch times (default: by magnitude)")
@click.option("--fields", "fields", multiple=True, help="value columns, comma-separated (default: the config's "
              "fields if it states them, else 'value', else every numeric column)")
@click.option("--label-column", "label_columns", multiple=True, help="label column(s) kept aside (default: label, "
              "anomaly, is_anomaly, changepoint)")
@click.option("--series-column", help="long format: the column whose value names the series")
@click.option("--plot", "plot_path", help="PNG of values, score, threshold, alerts and labels (a directory for several)")
@click.option("--report", "report", is_flag=True, help="print a summary: first training, alerts, and scores vs labels")
@click.option("--quiet", is_flag=True, help="no progress output")
def replay_command(config_path: str, inputs: tuple[str, ...], more_inputs: tuple[str, ...], output_path: str,
                   history: tuple[str, ...], train_rows: int, time_column: str | None, time_format: str | None,
                   epoch_unit: str | None, fields: tuple[str, ...], label_columns: tuple[str, ...],
                   series_column: str | None, plot_path: str | None, report: bool, quiet: bool) -> None:
    """Backtest CSV files through the engine, the files' timestamps acting as the clock."""
    from . import options_for
    from .report import summary_lines
    from .run import replay_fleet

    try:
        cfg = load_config(config_path)
    except ConfigError as e:
        click.echo(str(e), err=True)
        sys.exit(2)
    opts = options_for(cfg, fields=_split_fields(fields), time_column=time_column, time_format=time_format,
                       epoch_unit=epoch_unit, label_columns=list(label_columns), series_column=series_column)
    try:
        series: list[Series] = []
        for f, name in expand_inputs([*inputs, *more_inputs]):
            series += read_series(f, opts, name)
        hist = load_history_for(series, list(history), opts)
        if not quiet:
            for s in series:
                for note in s.notes:
                    click.echo(f"replay: warning: {note}", err=True)
            if len(series) == 1:
                click.echo(f"replay: {series[0].path}: fields {list(series[0].fields)}, labels "
                           f"{list(series[0].labels) or 'none'}", err=True)
        res = replay_fleet(cfg, series, history=hist, train_rows=train_rows, progress=not quiet)
    except InputError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    out = Path(output_path)
    many = len(series) > 1 or out.is_dir()  # a directory: one file per series in it
    if many:
        out.mkdir(parents=True, exist_ok=True)
    for sr in res.streams:
        write_output(sr, out / f"{safe_name(sr.series.name)}.csv" if many else out)
    if plot_path:
        from .plot import plot

        pp = Path(plot_path)
        if many or pp.is_dir():
            pp.mkdir(parents=True, exist_ok=True)
        for sr in res.streams:
            plot(sr, pp / f"{safe_name(sr.series.name)}.png" if many or pp.is_dir() else pp, cfg.alerts.enter)
    nbad = sum(sum(sr.bad.values()) for sr in res.streams)
    firing = sum(int(sr.is_anomaly.sum()) for sr in res.streams)
    reasons: dict[str, int] = {}
    for sr in res.streams:
        for k, v in sr.bad.items():
            reasons[k] = reasons.get(k, 0) + v
    why = ", ".join(f"{k}={v}" for k, v in sorted(reasons.items())) or "none"
    click.echo(f"replay: {res.rows} rows of {len(series)} stream{'s' if len(series) > 1 else ''} in {res.seconds:.1f}s "
               f"({res.rows / max(res.seconds, 1e-9):,.0f} rows/s), {res.trainings} trainings in {res.jobs} batched "
               f"job{'s' if res.jobs != 1 else ''} ({res.train_seconds:.1f}s), {firing} rows firing, {nbad} bad rows "
               f"({why}) -> {output_path}", err=True)
    if report:
        for line in summary_lines(res):
            click.echo(line)
