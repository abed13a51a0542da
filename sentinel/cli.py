"""The command line (click). The only module that parses argv.

Exit codes: 0 success, 1 runtime failure, 2 invalid config or usage.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import click

from . import __version__
from .config import ConfigError, dump_config, load_config, override
from .errors import SentinelError
from .replay.command import replay_command


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
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False))
@click.option("--listen", help="HOST:PORT of the HTTP server (overrides server.listen)")
@click.option("--shard", help="I/N: score only the streams rendezvous-hashed to shard I of N")
@click.option("--web.config.file", "web_config_file", help="TLS/basic-auth file (Prometheus exporter convention)")
@click.option("--role", type=click.Choice(["all", "router", "scorer"]), default="all", show_default=True,
              help="all: one process; router: parse and publish to NATS JetStream; scorer: score owned partitions")
def run(config_path: str, listen: str | None, shard: str | None, web_config_file: str | None, role: str) -> None:
    """Run the daemon."""
    from .runtime.lifecycle import main as daemon_main

    cfg = _load(config_path)
    overrides = [(k, v, o) for k, v, o in (("server.listen", listen, "--listen"),
                                           ("server.web_config_file", web_config_file, "--web.config.file")) if v]
    try:  # validated as the file is (a copy: the loaded config is frozen); re-applied at every reload
        for key, value, option in overrides:
            cfg = override(cfg, key, value, option)
    except ConfigError as e:
        click.echo(str(e), err=True)
        sys.exit(2)
    try:
        sys.exit(daemon_main(cfg, config_path=config_path, shard=shard, overrides=overrides, role=role))
    except SentinelError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(getattr(e, "exit_code", 1))


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False))
@click.option("--duration", default="1h", show_default=True, help="simulated time to write (e.g. 30m, 2h)")
@click.option("--end", "end", type=float, help="end of the simulated range, epoch seconds (default: now)")
@click.option("--stdout", "to_stdout", is_flag=True, help="print line protocol instead of writing to the databases")
@click.option("--follow", is_flag=True, help="after the range, keep writing new samples in real time")
def simulate(config_path: str, duration: str, end: float | None, to_stdout: bool, follow: bool) -> None:
    """Write the simulator's fleet into the configured InfluxDB/PostgreSQL sources (or stdout)."""
    import asyncio
    import time

    from .config import parse_duration
    from .lineprotocol import samples_to_lines
    from .runtime.factory import write_samples
    from .sources.simulator import Fleet

    cfg = _load(config_path)
    sims = [s for s in cfg.sources if s.type == "simulator"]
    if not sims:
        click.echo(f"{config_path}:sources: sentinel simulate needs a source of type simulator (the fleet)", err=True)
        sys.exit(2)
    targets = [s for s in cfg.sources if s.type in ("influxdb", "postgres")]
    if not targets and not to_stdout:
        click.echo(f"{config_path}:sources: no influxdb/postgres source to write into (or use --stdout)", err=True)
        sys.exit(2)
    sim = sims[0]
    t1 = end if end is not None else time.time()
    t0 = t1 - parse_duration(duration)
    fleet = Fleet(sim, start=t0)
    step = max(sim.interval, min(3600.0, 200_000 / max(sim.streams, 1) * sim.interval))

    async def write(a: float, b: float) -> int:
        samples = fleet.samples(a, b)
        if to_stdout:
            sys.stdout.write("".join(line + "\n" for line in samples_to_lines(samples)))
        for tgt in targets if not to_stdout else []:
            await write_samples(tgt, samples)
        return len(samples)

    async def go() -> None:
        total, a = 0, t0
        while a < t1:
            b = min(t1, a + step)
            total += await write(a, b)
            a = b
            click.echo(f"simulate: {total} samples up to {b:.0f}", err=True)
        while follow:
            await asyncio.sleep(sim.interval)
            b = time.time()
            total += await write(a, b)
            a = b

    try:
        asyncio.run(go())
    except KeyboardInterrupt:
        pass
    except SentinelError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)


@main.command("train")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False))
@click.option("--publish", is_flag=True,
              help="publish one model version per partition to the cluster's object store (scorers hot-swap it)")
def train_cmd(config_path: str, publish: bool) -> None:
    """Train every stream from the sources' history now and write a checkpoint (a new model version)."""
    import asyncio
    import time

    if publish:
        from .cluster.publish import publish as publish_models

        try:
            asyncio.run(publish_models(_load(config_path), say=lambda s: click.echo(s, err=True)))
        except (SentinelError, OSError, TimeoutError) as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)
        return

    from .metrics import Metrics
    from .model.train import resolve_device
    from .runtime.engine import Engine
    from .runtime.factory import build_source
    from .runtime.scheduler import TrainingScheduler
    from .state import checkpoint as ckpt

    cfg = _load(config_path)
    engine = Engine(cfg, device="cpu")
    cursors: dict = {}
    try:
        existing = ckpt.load_latest(cfg.state.dir)
        if existing is not None:
            engine.restore(existing.meta, existing.tensors)
            cursors = dict(existing.meta.get("cursors", {}))
    except (SentinelError, ValueError, KeyError, TypeError) as e:  # a bad checkpoint: say why, no traceback
        click.echo(f"error: cannot resume from {cfg.state.dir}: {e}", err=True)
        sys.exit(1)
    now = time.time()

    async def load() -> int:
        n = 0
        for sc in cfg.sources:
            src = build_source(sc, cfg, Metrics(), cursors.get(sc.name))
            samples = await src.history(None, now - cfg.streams.history_lookback, now)
            n += engine.load_history(samples)
        return n

    n = asyncio.run(load())
    device = str(resolve_device(cfg.model.device))
    click.echo(f"train: {n} history samples, {engine.n_streams} streams, device {device}", err=True)
    engine.set_trained_at(-float("inf"))  # retrain everything that has enough history
    scheduler = TrainingScheduler(engine, device=device, clock=lambda: now)

    def progress(i: int, n_jobs: int) -> Callable[[int, int, float], None]:
        def say(epoch: int, epochs: int, val: float) -> None:
            click.echo(f"train: job {i + 1}/{n_jobs} epoch {epoch}/{epochs} val_loss={val:.4f}", err=True)
        return say

    for i, counts in enumerate(scheduler.run_once_sync(now, progress if cfg.train.progress else None)):
        click.echo(f"train: job {i + 1}: {counts}", err=True)
    meta, tensors = engine.snapshot()
    meta["cursors"] = cursors
    meta["saved_at"] = now
    path = ckpt.save(cfg.state.dir, meta, tensors, cfg.state.keep)
    click.echo(f"train: model version {engine.model_version} written to {path}", err=True)


@main.command("feedback")
@click.option("--stream", required=True, help="the stream key, as /api/v1/streams lists it (measurement,k=v,...)")
@click.option("--from", "start", required=True, help="window start: ISO 8601 or epoch seconds")
@click.option("--to", "end", required=True, help="window end: ISO 8601 or epoch seconds")
@click.option("--label", required=True, type=click.Choice(["normal", "anomaly"]))
@click.option("--comment", default="", help="why (kept with the feedback)")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="the daemon's config: its address")
@click.option("--url", help="the daemon's base URL (default: from --config, else http://127.0.0.1:9680)")
@click.option("--user", envvar="SENTINEL_USER", help="basic-auth user (env SENTINEL_USER)")
@click.option("--password", envvar="SENTINEL_PASSWORD", help="basic-auth password (env SENTINEL_PASSWORD)")
@click.option("--ca-file", type=click.Path(dir_okay=False), help="CA bundle for an https daemon")
def feedback_cmd(stream: str, start: str, end: str, label: str, comment: str, config_path: str | None,
                 url: str | None, user: str | None, password: str | None, ca_file: str | None) -> None:
    """Tell the running daemon a window of a stream was normal, or a missed anomaly (POST /api/v1/feedback)."""
    from .feedback.client import daemon_url, post_feedback

    if url is None:
        cfg = _load(config_path) if config_path else None
        url = daemon_url(cfg.server.listen if cfg else None, cfg.server.external_url if cfg else None)
    body = {"stream": stream, "from": start, "to": end, "label": label, "comment": comment}
    try:
        status, ans = post_feedback(url, body, user=user, password=password, ca_file=ca_file)
    except OSError as e:
        click.echo(f"error: cannot reach {url}: {e}", err=True)
        sys.exit(1)
    if status != 200:
        click.echo(f"error: {url} answered {status}: {ans.get('error', ans)}", err=True)
        sys.exit(2 if status in (400, 404) else 1)
    d = ans.get("data", {})
    click.echo(f"feedback {d.get('label')} on {d.get('stream')}: {d.get('samples')} samples in the window"
               + ("; retrain scheduled" if d.get("retrain") else ""))


main.add_command(replay_command)

if __name__ == "__main__":
    main()
