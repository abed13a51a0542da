"""Shared pieces of the end-to-end tests: a small, fast daemon config, signals, waiting.

The e2e tests run the real :class:`~sentinel.runtime.daemon.Daemon` (its HTTP server,
ingest queue, scoring thread, training loop, checkpoints, notifier and write-backs)
against real servers. Model settings are small (hidden 8, ``min_history`` 64,
``history_size`` 256, 2 epochs) and training runs inline, so a stream is ready a
second or two after it has enough history, deterministically.

Signals are deterministic: a sine with period 20 samples plus seeded noise, one
sample per second; a spike is a value tens of standard deviations away.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from sentinel.config import SentinelConfig
from sentinel.runtime.daemon import Daemon
from tests.servers._proc import free_port

NS = 1_000_000_000
SPIKE = 60.0  # normal values are 10 +- 1.1


def value(k: int, stream: int = 0, seed: int = 0) -> float:
    """The normal signal of ``stream`` at sample ``k``: level 10 + stream, sine of period 20, noise 0.05."""
    rnd = random.Random(seed * 1_000_003 + stream * 10_007 + k)
    return 10.0 + stream + math.sin(2 * math.pi * k / 20.0) + rnd.gauss(0.0, 0.05)


def small_config(tmp: Path, sources: list[dict[str, Any]], *, webhook_url: str | None = None,
                 **sections: Any) -> SentinelConfig:
    """A daemon config for tests: free port, temp state, small fast model, quick alerting.

    ``sections`` override whole top-level sections (merged one level deep).
    """
    raw: dict[str, Any] = {
        "server": {"listen": f"127.0.0.1:{free_port()}"},
        "sources": sources,
        "streams": {"history_size": 256, "history_lookback": 3600, "rewarm_samples": 4},
        "model": {"hidden": 8, "window": 4, "device": "cpu"},
        "train": {"min_history": 64, "min_history_span": 0, "epochs": 2, "bptt": 16, "segments": 2, "patience": 1,
                  "retrain_interval": 0, "drift_retrain": False, "progress": False},
        "alerts": {"enter": 0.5, "exit": 0.4, "for": 0, "for_ticks": 0, "cooldown": 0},
        "state": {"dir": str(tmp / "state"), "checkpoint_interval": 3600},
        "sinks": {"outbox": {"path": str(tmp / "outbox"), "retry_initial": 0.05, "retry_max": 0.2}},
        "logging": {"level": "warning", "format": "text"},
    }
    if webhook_url:
        raw["sinks"]["webhooks"] = [{"name": "e2e", "url": webhook_url}]
    for k, v in sections.items():
        if isinstance(v, dict) and isinstance(raw.get(k), dict):
            raw[k] = {**raw[k], **v}
        else:
            raw[k] = v
    return SentinelConfig.model_validate(raw)


class Clock:
    """A settable clock (epoch seconds) the daemon and its sources read; the test moves it."""

    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def running(cfg: SentinelConfig, *, clock: Callable[[], float] = time.time,
                  registry: CollectorRegistry | None = None) -> AsyncIterator[Daemon]:
    """Start a daemon (inline training), yield it, and always stop it."""
    d = Daemon(cfg, registry=registry or CollectorRegistry(), clock=clock, inline_training=True)
    try:
        await d.start()
        yield d
    finally:
        if d._stop_lock is not None:  # start() got far enough to be stopped
            await d.stop()


async def eventually(pred: Callable[[], Any], what: str, timeout: float = 30.0, interval: float = 0.05) -> Any:
    """Await until ``pred()`` is truthy (bounded in time); return its value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def ingested(d: Daemon, source: str) -> float:
    return d.metrics.registry.get_sample_value("sentinel_samples_ingested_total", {"source": source}) or 0.0


def stream_state(d: Daemon, stream: str) -> dict | None:
    return next((s for s in d.streams() if s["stream"] == stream), None)


def http_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def firing_alerts(bodies: list[dict]) -> list[dict]:
    """The firing alerts of Alertmanager-format webhook bodies, flattened."""
    return [a for b in bodies for a in b.get("alerts", []) if a.get("status") == "firing"]
