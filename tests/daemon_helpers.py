"""Shared helpers for the daemon's integration, restart and fault tests.

* :func:`write_config` writes a tiny, fast config (a few streams, hidden 8,
  min_history 128, history 256, 4 epochs) into a temp dir and returns its path;
  ``source="none"`` leaves the daemon without sources so a test feeds it crafted
  batches (:func:`tick_batch`) through :meth:`RunningDaemon.emit`.
* :class:`RunningDaemon` runs an in-process :class:`~sentinel.runtime.daemon.Daemon`
  on its own event loop in a background thread, so blocking fixtures (a real
  Prometheus, urllib) can be used beside it. Every wait is bounded.
* :func:`sentinel_exe` / :class:`SentinelProcess`: ``sentinel run`` as a subprocess.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import torch
import yaml
from prometheus_client import CollectorRegistry

from sentinel.config import SentinelConfig, load_config
from sentinel.runtime.daemon import Daemon
from sentinel.types import Sample, SourceBatch, StreamKey
from tests.servers._proc import free_port, http_ok, sentinel_exe, wait_until

ROOT = Path(__file__).resolve().parents[1]
SOURCE = "crafted"
FIELDS = ("temp", "vibration")
MIN_HISTORY = 128
NOISE = 0.3


def deep_merge(base: dict, extra: dict) -> dict:
    """``extra`` merged into a copy of ``base`` (dicts recursively, everything else replaced)."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def config_dict(tmp: Path, *, source: str = "none", streams: int = 8, port: int | None = None,
                extra: dict | None = None) -> dict:
    """A tiny daemon config as a dict (paths inside ``tmp``, a free loopback port)."""
    cfg: dict[str, Any] = {
        "server": {"listen": f"127.0.0.1:{port or free_port()}"},
        "sources": [],
        "streams": {"history_size": 256, "history_lookback": "0s", "max_gap_intervals": 20,
                    "rewarm_samples": 8},
        "model": {"hidden": 8, "window": 4, "device": "cpu"},
        "train": {"min_history": MIN_HISTORY, "min_history_span": 0, "epochs": 4, "bptt": 16, "segments": 2, "retrain_interval": 0,
                  "drift_retrain": False, "progress": False},
        "detect": {"threshold": {"method": "spot"}},
        "alerts": {"for": 0, "for_ticks": 0, "resolve_for": 0, "cooldown": 0, "enter": 0.9, "exit": 0.7},  # above normal data
        "state": {"dir": str(tmp / "state"), "checkpoint_interval": "1h"},
        "sinks": {"outbox": {"path": str(tmp / "outbox"), "retry_initial": 0.05, "retry_max": 0.2,
                             "flush_timeout": 2}},
        "logging": {"level": "info", "format": "text"},
    }
    if source == "simulator":
        cfg["sources"] = [{"type": "simulator", "name": "sim", "streams": streams, "fields": list(FIELDS),
                           "interval": "1s", "speed": 20, "anomaly_rate": 0, "regime_rate": 0, "history": "10m",
                           "seed": 3}]
        cfg["streams"]["history_lookback"] = "10m"
    elif source != "none":
        raise ValueError(source)
    return deep_merge(cfg, extra or {})


def write_config(tmp: Path, name: str = "sentinel.yaml", **kw: Any) -> Path:
    """Write :func:`config_dict` to ``tmp/name``; returns the path."""
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / name
    path.write_text(yaml.safe_dump(config_dict(tmp, **kw), sort_keys=False))
    return path


# -- crafted data ----------------------------------------------------------------------------------------
def keys(n: int) -> list[StreamKey]:
    return [StreamKey.of("machine", site=f"s{i % 2}", machine=f"m{i:02d}") for i in range(n)]


def value(key: StreamKey, i: int) -> tuple[float, ...]:
    """A periodic signal per stream and field (period 16 ticks) plus deterministic noise of sd ~0.3.

    The noise keeps the normal error distribution wide enough that a detector trained on
    ``MIN_HISTORY`` samples is well calibrated: normal data stays far below ``alerts.enter``.
    """
    hk = zlib.crc32(str(key).encode())
    ph = 0.7 * (hk % 5)
    out = []
    for j in range(len(FIELDS)):
        u = sum((zlib.crc32(f"{hk}:{i}:{j}:{r}".encode()) % 10007) / 10007.0 for r in range(3))
        out.append(math.sin(2 * math.pi * i / 16 + ph + j) * (j + 1) + NOISE * (u - 1.5) * 2)
    return tuple(out)


def tick_batch(ks: list[StreamKey], i: int, t0: float, spike: dict[StreamKey, float] | None = None,
               source: str = SOURCE) -> SourceBatch:
    """One sample per key at tick ``i`` (time ``t0 + i``); ``spike`` adds to the first field of some keys.

    The batch's cursor is ``{"i": i + 1}``: the tick a restarted source would continue from.
    """
    spike = spike or {}
    samples = []
    for k in ks:
        v = list(value(k, i))
        v[0] += spike.get(k, 0.0)
        samples.append(Sample(k, t0 + i, FIELDS, tuple(v)))
    return SourceBatch(source, samples, cursor={"i": i + 1}, received_at=time.time())


# -- an in-process daemon on a background loop -----------------------------------------------------------
class RunningDaemon:
    """A :class:`Daemon` on its own event loop in a thread; synchronous, bounded helpers around it."""

    def __init__(self, config_path: Path, *, registry: CollectorRegistry | None = None,
                 inline_training: bool = True, clock: Callable[[], float] = time.time, shard: str | None = None):
        self.config_path = config_path
        self.cfg: SentinelConfig = load_config(config_path)
        self.registry = registry if registry is not None else CollectorRegistry()
        torch.set_num_threads(self.cfg.model.score_threads)  # as ``sentinel run`` does; spinning threads on a
        # busy 2-core machine made tiny trainings 5x slower
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="daemon-loop", daemon=True)
        self._thread.start()
        self.daemon: Daemon = self.call(self._make(inline_training, clock, shard))
        self.records: list[tuple[list[Sample], Any]] = []
        self._started = False

    async def _make(self, inline: bool, clock: Callable[[], float], shard: str | None) -> Daemon:
        return Daemon(self.cfg, config_path=str(self.config_path), registry=self.registry, clock=clock,
                      inline_training=inline, shard=shard)

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> RunningDaemon:
        self.call(self.daemon.start())
        self._started = True
        return self

    def record_scores(self) -> None:
        """Keep every ``engine.process`` call's samples and output (for score comparisons)."""
        eng = self.daemon.engine
        orig = eng.process

        def process(samples: list[Sample]) -> Any:
            out = orig(samples)
            self.records.append((list(samples), out))
            return out

        eng.process = process  # type: ignore[method-assign]

    def emit(self, batch: SourceBatch) -> None:
        self.call(self.daemon.queue.put(batch))

    def drain(self, timeout: float = 60.0) -> None:
        """Wait until every emitted batch has been scored."""
        async def join() -> None:
            await self.daemon.queue.join()

        self.call(asyncio.wait_for(join(), timeout), timeout + 5)

    def counts(self) -> dict[str, int]:
        return self.daemon.engine.state_counts()

    def wait_trained(self, timeout: float = 60.0) -> None:
        """Until every stream is ready (the daemon's train loop ran and applied the results)."""
        wait_until(lambda: self.daemon.engine.n_streams > 0 and self.counts()["warming"] == 0
                   and self.daemon.training_inflight == 0, timeout=timeout, interval=0.05,
                   what="every stream trained")

    def feed(self, ks: list[StreamKey], start: int, stop: int, t0: float,
             spike: dict[int, dict[StreamKey, float]] | None = None) -> None:
        """Emit ticks ``start..stop-1`` one batch each and wait until they are scored."""
        for i in range(start, stop):
            self.emit(tick_batch(ks, i, t0, (spike or {}).get(i)))
            self.drain()

    @property
    def url(self) -> str:
        return self.daemon.listen_url

    def get(self, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
        return http(self.url + path, timeout=timeout)

    def post(self, path: str, timeout: float = 30.0) -> tuple[int, bytes]:
        return http(self.url + path, method="POST", timeout=timeout)

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        return self.registry.get_sample_value(name, labels or {})

    def __enter__(self) -> RunningDaemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, timeout: float = 90.0) -> None:
        """``Daemon.stop()`` (what SIGTERM does), then end the loop thread. Safe to call twice."""
        if self._started:
            self._started = False
            self.call(self.daemon.stop(), timeout)
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
        if not self.loop.is_running() and not self.loop.is_closed():
            self.loop.close()


@contextlib.contextmanager
def running_daemon(config_path: Path, **kw: Any) -> Iterator[RunningDaemon]:
    d = RunningDaemon(config_path, **kw)
    try:
        d.start()
        yield d
    finally:
        d.stop()


def http(url: str, method: str = "GET", body: bytes | None = None, timeout: float = 10.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body if body is not None else (b"" if method == "POST" else None),
                                 method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def streams_api(base: str) -> list[dict]:
    status, body = http(base + "/api/v1/streams")
    assert status == 200, body
    return json.loads(body)["data"]


# -- ``sentinel run`` as a subprocess --------------------------------------------------------------------
class SentinelProcess:
    """``sentinel run --config PATH`` with its output in ``log_path``; ``stop`` sends SIGTERM (bounded)."""

    def __init__(self, config_path: Path, log_path: Path, port: int | None = None):
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in close()
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [str(sentinel_exe()), "run", "--config", str(config_path), "--listen", f"127.0.0.1:{self.port}"],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=config_path.parent, env=env)

    def log(self, n: int = 6000) -> str:
        return self.log_path.read_text(errors="replace")[-n:]

    def wait_ready(self, timeout: float = 90.0) -> None:
        try:
            wait_until(lambda: self.proc.poll() is None and http_ok(f"{self.base}/-/ready"), timeout=timeout,
                       interval=0.2, what="sentinel /-/ready")
        except TimeoutError:
            raise AssertionError(f"sentinel exited ({self.proc.poll()}) or never became ready:\n{self.log()}") from None

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait (bounded); returns the exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise AssertionError(f"sentinel did not exit within {timeout}s of SIGTERM:\n{self.log()}") from None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        self._log.close()


def wait_for(pred: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    """:func:`wait_until` that raises AssertionError (a test failure, with ``what``)."""
    try:
        wait_until(pred, timeout=timeout, interval=interval, what=what)
    except TimeoutError as e:
        raise AssertionError(str(e)) from None


__all__ = ["FIELDS", "MIN_HISTORY", "RunningDaemon", "SentinelProcess", "config_dict", "deep_merge", "http",
           "keys", "running_daemon", "sentinel_exe", "streams_api", "tick_batch", "value", "wait_for",
           "write_config"]


def fleet_value(s: int, i: int, j: int, spikes: dict[int, int]) -> float:
    """Field ``j`` of stream ``s`` at tick ``i`` of the fault and cluster tests' deterministic fleet:
    a per-stream sine plus hashed noise, +25 on field 0 for 3 ticks where ``spikes`` (tick -> stream) says."""
    u = sum((zlib.crc32(f"{s}:{i}:{j}:{r}".encode()) % 10007) / 10007.0 for r in range(3))
    v = math.sin(2 * math.pi * i / 16 + 0.7 * (s % 5) + j) * (j + 1) + 0.6 * (u - 1.5)
    if j == 0 and any(t <= i < t + 3 and k == s for t, k in spikes.items()):
        v += 25.0
    return v


def fleet_body(i: int, streams: int, t0: int, spikes: dict[int, int]) -> bytes:
    """Tick ``i`` of that fleet as one line-protocol body (second precision)."""
    return "".join(f"machine,site=s{s % 2},machine=m{s:02d} temp={fleet_value(s, i, 0, spikes):.6f},"
                   f"vibration={fleet_value(s, i, 1, spikes):.6f} {t0 + i}\n" for s in range(streams)).encode()


def fleet_config(port: int, hook: str, *, history_size: int, min_history: int) -> dict[str, Any]:
    """The crash and cluster tests' daemon config: push receiver ``push`` (db ``sensors``), a small
    model trained once on ``min_history`` ticks, webhook sink ``hook`` behind a fast-retrying outbox."""
    return {
        "server": {"listen": f"127.0.0.1:{port}"},
        "sources": [{"type": "influxdb", "name": "push", "mode": "receiver", "database": "sensors"}],
        "streams": {"history_size": history_size, "history_lookback": "0s", "max_gap_intervals": 20,
                    "rewarm_samples": 8},
        "model": {"hidden": 8, "window": 4, "device": "cpu"},
        "train": {"min_history": min_history, "min_history_span": 0, "epochs": 4, "bptt": 16, "segments": 2,
                  "retrain_interval": 0, "drift_retrain": False, "progress": False},
        "detect": {"threshold": {"method": "spot"}},
        "alerts": {"for": 0, "for_ticks": 0, "resolve_for": 0, "cooldown": 0, "enter": 0.9, "exit": 0.7},
        "state": {"dir": "state", "checkpoint_interval": "1s"},
        "sinks": {"webhooks": [{"name": "hook", "url": hook}],
                  "outbox": {"path": "outbox", "retry_initial": 0.05, "retry_max": 0.2, "flush_timeout": 2}},
        "logging": {"level": "info", "format": "text"},
    }
