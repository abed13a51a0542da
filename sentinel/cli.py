"""The command line (click). The only module that parses argv.

Exit codes: 0 success, 1 runtime failure, 2 invalid config or usage.
"""

from __future__ import annotations

import sys

import click

from . import __version__
from .config import ConfigError, dump_config, load_config
from .errors import InputError, SentinelError


def _load(path: str):
    try:
        return load_config(path)
    except ConfigError as e:
        click.echo(str(e), err=True)
        sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sentinel")
def main() -> None:
    """Sentinel: streaming anomaly detection for sensor fleets."""


@main.command("check-config")
@click.argument("path", type=click.Path(dir_okay=False))
def check_config(path: str) -> None:
    """Validate PATH and print the effective config (exit 2 with file:key: reason on error)."""
    cfg = _load(path)
    click.echo(dump_config(cfg), nl=False)


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), help="YAML config")
@click.option("--input", "input_path", required=True, type=click.Path(dir_okay=False), help="CSV: timestamp + value column(s)")
@click.option("--output", "output_path", required=True, type=click.Path(dir_okay=False), help="CSV to write")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="PNG of value, score, threshold, alerts")
@click.option("--quiet", is_flag=True, help="no progress output")
def replay(config_path: str, input_path: str, output_path: str, plot_path: str | None, quiet: bool) -> None:
    """Backtest a CSV file through the engine, the file's timestamps acting as the clock."""
    from . import replay as rp

    cfg = _load(config_path)
    try:
        res = rp.replay(cfg, input_path, progress=not quiet)
    except InputError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    rp.write_output(res, output_path)
    if plot_path:
        rp.plot(res, list(cfg.fields), plot_path, cfg.alerts.enter)
    n = len(res.timestamps)
    nbad = sum(res.bad.values())
    firing = int(res.is_anomaly.sum())
    reasons = ", ".join(f"{k}={v}" for k, v in sorted(res.bad.items())) or "none"
    click.echo(f"replay: {n} rows in {res.seconds:.1f}s, {res.trainings} trainings, {firing} rows firing, "
               f"{nbad} bad rows ({reasons}) -> {output_path}", err=True)


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False))
@click.option("--listen", help="HOST:PORT of the HTTP server (overrides server.listen)")
@click.option("--shard", help="I/N: score only the streams rendezvous-hashed to shard I of N")
@click.option("--web.config.file", "web_config_file", help="TLS/basic-auth file (Prometheus exporter convention)")
def run(config_path: str, listen: str | None, shard: str | None, web_config_file: str | None) -> None:
    """Run the daemon."""
    from .runtime.daemon import main as daemon_main

    cfg = _load(config_path)
    if listen:
        cfg.server.listen = listen
    if web_config_file:
        cfg.server.web_config_file = web_config_file
    try:
        sys.exit(daemon_main(cfg, config_path=config_path, shard=shard))
    except SentinelError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(getattr(e, "exit_code", 1))


if __name__ == "__main__":
    main()
