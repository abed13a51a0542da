"""Shared parts of the NATS cluster tests and benchmark: configs, input, processes, readers.

Input is a crafted fleet pushed as line protocol (one body per tick, every stream); the
reference is the same bodies through ``sentinel run --role all``. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import Any

import yaml

from tests.daemon_helpers import deep_merge, fleet_body, fleet_config, fleet_value, http
from tests.servers._proc import http_ok, sentinel_exe, wait_until

STREAMS = 12
T0 = 1_700_000_000
WARM = 64  # = train.min_history: every stream trains on exactly these ticks, in every run
AFTER = 48  # ticks scored after training
SPIKES = {WARM + 8: 3, WARM + 22: 7, WARM + 36: 10}  # tick -> stream with a 3-tick spike
PARTITIONS = 22  # with these 12 streams: a 5/7 split over two scorers, 4 streams move to a third


def value(s: int, i: int, j: int) -> float:
    return fleet_value(s, i, j, SPIKES)


def key(s: int) -> str:
    return f"machine,machine=m{s:02d},site=s{s % 2}"


def body(i: int, streams: int = STREAMS) -> bytes:
    return fleet_body(i, streams, T0, SPIKES)


def config(tmp: Path, port: int, hook: str, *, nats: list[str] | None = None, extra_cluster: dict | None = None,
           name: str = "sentinel.yaml", streams: int = STREAMS, extra: dict | None = None) -> Path:
    """A ``--role`` config: push receiver ``push`` (db ``sensors``), webhook ``hook``; ``extra`` merged in."""
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = deep_merge(fleet_config(port, hook, history_size=128, min_history=WARM),
                     {"server": {"wal": {"fsync": "off"}}, "streams": {"max_streams": max(1000, 2 * streams)}})
    if nats is not None:
        cfg["cluster"] = {"servers": nats, "partitions": PARTITIONS, "checkpoint_interval": "1s", "lease_ttl": "3s",
                          "handover_timeout": "30s", **(extra_cluster or {})}
    cfg = deep_merge(cfg, extra or {})
    p = tmp / name
    p.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return p


class Proc:
    """``sentinel run --role ROLE`` as a subprocess with its own port and log."""

    def __init__(self, cfg: Path, role: str = "all", log_name: str | None = None, env: dict | None = None):
        self.cfg, self.role = cfg, role
        self.port = yaml.safe_load(cfg.read_text())["server"]["listen"].rsplit(":", 1)[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.logpath = cfg.parent / (log_name or f"{role}.log")
        self.env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen | None = None
        self._log: Any = None
        self.start()

    def start(self) -> None:
        self._log = open(self.logpath, "ab")  # noqa: SIM115 (closed in close)
        self.proc = subprocess.Popen([str(sentinel_exe()), "run", "--config", str(self.cfg), "--role", self.role],
                                     stdout=self._log, stderr=subprocess.STDOUT, cwd=self.cfg.parent, env=self.env)

    def log(self, n: int = 5000) -> str:
        return self.logpath.read_text(errors="replace")[-n:]

    def wait_ready(self, timeout: float = 90) -> None:
        p = self.proc
        assert p is not None
        try:
            wait_until(lambda: p.poll() is None and http_ok(self.base + "/-/ready"), timeout=timeout,
                       interval=0.1, what=f"{self.role} ready")
        except TimeoutError:
            raise AssertionError(f"{self.role} not ready ({p.poll()}):\n{self.log()}") from None

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.close()

    def terminate(self, timeout: float = 60) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"{self.role} did not exit on SIGTERM:\n{self.log()}") from None

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None

    # -- readers ---------------------------------------------------------------------------------
    def streams(self) -> list[dict]:
        st, b = http(self.base + "/api/v1/streams")
        assert st == 200, b
        return json.loads(b)["data"]

    def history(self, stream: str) -> dict:
        st, b = http(self.base + "/api/v1/streams/" + urllib.parse.quote(stream, safe="") + "/history")
        assert st == 200, (st, b)
        return json.loads(b)["data"]

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        from prometheus_client.parser import text_string_to_metric_families

        st, b = http(self.base + "/metrics")
        assert st == 200, b
        total = 0.0
        for fam in text_string_to_metric_families(b.decode()):
            for s in fam.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in (labels or {}).items()):
                    total += s.value
        return total


def post(base: str, i: int, streams: int = STREAMS, timeout: float = 30.0) -> None:
    """POST tick ``i``; a 5xx (a NATS node lost, a leader election) is retried as Telegraf would, bounded."""
    deadline = time.monotonic() + timeout
    while True:
        st, b = http(f"{base}/write?db=sensors&precision=s", method="POST", body=body(i, streams), timeout=10)
        if st == 204:
            return
        if time.monotonic() > deadline or st < 500:
            raise AssertionError(f"write of tick {i} answered {st}: {b[:300]!r}")
        time.sleep(0.2)


def all_streams(procs: list[Proc]) -> list[dict]:
    out: list[dict] = []
    for p in procs:
        out.extend(p.streams())
    return out


def wait_trained(procs: list[Proc], n: int = STREAMS, timeout: float = 90) -> None:
    def ok() -> bool:
        rows = all_streams(procs)
        return len(rows) == n and all(r["state"] != "warming" for r in rows)
    try:
        wait_until(ok, timeout=timeout, interval=0.2, what="every stream trained")
    except TimeoutError:
        raise AssertionError(f"not trained: {[(r['stream'], r['state']) for r in all_streams(procs)]}\n"
                             + "\n".join(p.log(2000) for p in procs)) from None


def wait_last(procs: list[Proc], last_ts: float, n: int = STREAMS, timeout: float = 90) -> None:
    def ok() -> bool:
        rows = all_streams(procs)
        return len(rows) == n and all(r["last_ts"] == last_ts for r in rows)
    try:
        wait_until(ok, timeout=timeout, interval=0.2, what=f"every stream scored up to {last_ts}")
    except TimeoutError:
        raise AssertionError(f"not caught up: {[(r['stream'], r['last_ts']) for r in all_streams(procs)]}\n"
                             + "\n".join(p.log(3000) for p in procs)) from None


def histories(procs: list[Proc]) -> dict[str, dict[float, float]]:
    """Per stream: timestamp -> score of every recent scored point (from whichever process holds it)."""
    out: dict[str, dict[float, float]] = {}
    for p in procs:
        for r in p.streams():
            h = p.history(r["stream"])
            out[r["stream"]] = {t: s for t, s in zip(h["ts"], h["score"], strict=True) if t is not None}
    return out
