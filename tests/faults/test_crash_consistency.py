"""``kill -9`` at random moments loses no acknowledged write and no alert (D1), against a reference run.

A deterministic fleet (``STREAMS`` streams × 2 fields, spikes at fixed ticks) is pushed
as line protocol over HTTP by a Telegraf-like sender: one request per tick, retried
until it gets a 2xx, never re-sent once acknowledged. Both runs start from the same
trained checkpoint (made once, with training off afterwards, so the runs are
deterministic):

* the reference run gets every batch, uninterrupted;
* the crash run is killed with SIGKILL ``KILLS`` times at seeded moments: right after
  a random acknowledgement plus 0-40 ms (so kills land while requests are being
  logged and scored), every fourth life after 1.2-2.5 s (around the 1 s checkpoints),
  and every fourth life (the one after a kill at life 0, 4, 8, ...) by the process itself at an armed failpoint
  (:mod:`sentinel.failpoints`: mid-record in the log, record logged but not yet
  acknowledged, scored but not yet reported, checkpoint temp file written but not
  renamed), so each of those moments is hit for certain. It is restarted each time
  and the sender carries on.

Then: every firing and resolve the reference delivered reached the crash run's webhook at
least once, nothing fired that the reference did not fire, and every stream's final
score, threshold and alert state are equal. The seed is printed
(``SENTINEL_FAULT_SEED`` repeats a run); ``SENTINEL_CRASH_KILLS`` sets the kill count
(the nightly size is ``-m nightly``: 200 kills; its last result is in benchmarks/README.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from tests.daemon_helpers import fleet_body, fleet_config, fleet_value, sentinel_exe
from tests.servers._proc import free_port, http_ok, wait_until

STREAMS = 12
T0 = 1_700_000_000
WARM = 170  # ticks before the shared checkpoint (min_history 128 + margin)
TICKS = 420  # ticks after it
SPIKES = {WARM + 40 + 30 * j: j % STREAMS for j in range(12)}  # tick -> stream with a 3-tick spike
KILLS = int(os.environ.get("SENTINEL_CRASH_KILLS", "20"))
FAILPOINTS = ("checkpoint.write", "wal.torn", "engine.tick", "checkpoint.renamed", "wal.append")


def value(s: int, i: int, j: int) -> float:
    return fleet_value(s, i, j, SPIKES)


def body(i: int) -> bytes:
    return fleet_body(i, STREAMS, T0, SPIKES)


def config(tmp: Path, port: int, hook: str) -> Path:
    cfg = fleet_config(port, hook, history_size=256, min_history=128)
    # a couple of slots per checkpoint step: each checkpoint is copied in chunks with ticks scored between
    # them (fuzzy), and a restart replays the log into streams that already hold part of it
    cfg["state"]["checkpoint_chunk_bytes"] = 16384
    p = tmp / "sentinel.yaml"
    p.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return p


class Hook:
    """A threaded webhook receiver on 127.0.0.1 recording every alert it is sent."""

    def __init__(self) -> None:
        self.alerts: list[dict] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length", 0))
                data = json.loads(self.rfile.read(n))
                outer.alerts.extend(data.get("alerts", []))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *a: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> set[tuple[str, str, str]]:
        return {(a["fingerprint"], a["startsAt"], a["status"]) for a in self.alerts}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Daemon:
    def __init__(self, cfg: Path, port: int, log: Path, failpoint: str | None = None):
        self.base = f"http://127.0.0.1:{port}"
        self._log = open(log, "ab")  # noqa: SIM115 (closed in stop)
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONUNBUFFERED": "1"}
        env.pop("SENTINEL_FAILPOINTS", None)
        if failpoint:
            env["SENTINEL_FAILPOINTS"] = failpoint
        self.proc = subprocess.Popen([str(sentinel_exe()), "run", "--config", str(cfg)], stdout=self._log,
                                     stderr=subprocess.STDOUT, cwd=cfg.parent, env=env)
        self.logpath = log

    def wait_ready(self, timeout: float = 90) -> None:
        try:
            wait_until(lambda: self.proc.poll() is None and http_ok(self.base + "/-/ready"), timeout=timeout,
                       interval=0.05, what="ready")
        except TimeoutError:
            raise AssertionError(f"not ready ({self.proc.poll()}):\n{self.logpath.read_text()[-4000:]}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self._log.close()

    def died_by_itself(self, timeout: float) -> bool:
        try:
            return self.proc.wait(timeout) == -signal.SIGKILL
        except subprocess.TimeoutExpired:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()

    def streams(self) -> dict[str, dict]:
        with urllib.request.urlopen(self.base + "/api/v1/streams", timeout=10) as r:
            data = json.loads(r.read())
        rows = data["data"] if isinstance(data, dict) else data
        return {row["stream"]: row for row in rows}

    def settled(self, last_tick: int, hook: Hook, want_events: int | None = None) -> bool:
        rows = self.streams()
        done = len(rows) == STREAMS and all(r["last_ts"] == T0 + last_tick for r in rows.values())
        return done and (want_events is None or len(hook.events()) >= want_events)


class Sender(threading.Thread):
    """Telegraf-like: batch i is POSTed until a 2xx (or a 400, which Telegraf drops too); then i + 1."""

    def __init__(self, base: str, first: int, last: int):
        super().__init__(daemon=True)
        self.base, self.next, self.last = base, first, last
        self.allowed = first
        self.acked = first - 1
        self.retries = 0
        self.stop_flag = False
        self.cv = threading.Condition()

    def run(self) -> None:
        while not self.stop_flag and self.next <= self.last:
            with self.cv:
                while self.next > self.allowed and not self.stop_flag:
                    self.cv.wait(0.05)
            if self.stop_flag:
                return
            req = urllib.request.Request(f"{self.base}/write?db=sensors&precision=s", data=body(self.next),
                                         method="POST")
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    ok = 200 <= r.status < 300
            except urllib.error.HTTPError as e:
                ok = e.code == 400
            except (OSError, urllib.error.URLError):
                ok = False
            if ok:
                with self.cv:
                    self.acked = self.next
                    self.next += 1
                    self.cv.notify_all()
            else:
                self.retries += 1
                time.sleep(0.02)

    def allow(self, upto: int) -> None:
        with self.cv:
            self.allowed = upto
            self.cv.notify_all()

    def wait_acked(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self.cv:
            while self.acked < n:
                left = deadline - time.monotonic()
                assert left > 0, f"batch {n} not acknowledged in {timeout}s (acked {self.acked})"
                self.cv.wait(min(left, 0.1))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state directory holding a checkpoint of a trained fleet after WARM ticks."""
    tmp = tmp_path_factory.mktemp("base")
    hook = Hook()
    port = free_port()
    d = Daemon(config(tmp, port, hook.url), port, tmp / "log")
    try:
        d.wait_ready()
        s = Sender(d.base, 0, WARM - 1)
        s.allow(WARM - 1)
        s.start()
        s.wait_acked(WARM - 1, 120)
        wait_until(lambda: len(d.streams()) == STREAMS and all(r["state"] != "warming" for r in d.streams().values()),
                   timeout=180, interval=0.5, what="trained")
        wait_until(lambda: d.settled(WARM - 1, hook), timeout=60, interval=0.2, what="scored")
    finally:
        d.stop()
        hook.close()
    return tmp / "state"


def run_reference(tmp: Path, state: Path) -> tuple[set, dict]:
    shutil.copytree(state, tmp / "state")
    hook = Hook()
    port = free_port()
    d = Daemon(config(tmp, port, hook.url), port, tmp / "log")
    try:
        d.wait_ready()
        s = Sender(d.base, WARM, WARM + TICKS - 1)
        s.allow(WARM + TICKS - 1)
        s.start()
        s.wait_acked(WARM + TICKS - 1, 300)
        wait_until(lambda: d.settled(WARM + TICKS - 1, hook), timeout=60, interval=0.2, what="reference scored")
        time.sleep(1.0)  # outbox delivery
        final = d.streams()
    finally:
        d.stop()
    events = hook.events()
    hook.close()
    return events, final


def run_with_kills(tmp: Path, state: Path, rnd: random.Random, kills: int,
                   want: int) -> tuple[set, dict, int, dict[str, int]]:
    shutil.copytree(state, tmp / "state")
    hook = Hook()
    port = free_port()
    cfg = config(tmp, port, hook.url)
    last = WARM + TICKS - 1
    points = sorted(rnd.sample(range(WARM + 1, last - 5), kills))
    hits: dict[str, int] = dict.fromkeys(FAILPOINTS, 0)
    fp = None
    d = Daemon(cfg, port, tmp / "log")
    s = Sender(d.base, WARM, last)
    s.start()
    done = 0
    try:
        for life, at in enumerate(points):
            if fp is not None:  # this life dies at its failpoint (maybe while replaying), else by our kill
                s.allow(min(last, s.acked + 80))
                if d.died_by_itself(60):
                    hits[fp] += 1
            else:
                d.wait_ready()
                s.allow(at + rnd.randint(0, 3))
                s.wait_acked(at, 120)
                time.sleep(rnd.uniform(1.2, 2.5) if life % 4 == 3 else rnd.uniform(0, 0.04))
            d.kill()
            done += 1
            last_life = life == len(points) - 1  # the final process runs to the end unarmed
            fp = FAILPOINTS[(life // 4) % len(FAILPOINTS)] if life % 4 == 0 and not last_life else None
            # engine.tick counts scoring rounds, and a loaded machine merges many queued batches into
            # one round: arm it within the first few rounds so the life surely reaches it
            n_at = 1 if fp is not None and fp.startswith("checkpoint") else (
                rnd.randint(1, 3) if fp == "engine.tick" else rnd.randint(1, 20))
            arm = None if fp is None else f"{fp}={n_at}"
            d = Daemon(cfg, port, tmp / "log", failpoint=arm)
        d.wait_ready()
        s.allow(last)
        s.wait_acked(last, 300)
        wait_until(lambda: d.settled(last, hook), timeout=90, interval=0.2, what="crash run scored")
        with contextlib.suppress(TimeoutError):  # the outbox catching up; a shortfall is asserted below
            wait_until(lambda: len(hook.events()) >= want, timeout=15, interval=0.2, what="alerts")
        time.sleep(1.0)
        final = d.streams()
    finally:
        s.stop_flag = True
        d.stop()
    events = hook.events()
    hook.close()
    return events, final, done, hits


def check_kills(trained: Path, tmp_path: Path, n: int) -> None:
    seed = int(os.environ.get("SENTINEL_FAULT_SEED", random.randrange(2**32)))
    print(f"seed={seed} kills={n} (SENTINEL_FAULT_SEED={seed} to repeat)")
    ref_events, ref_final = run_reference(tmp_path / "ref", trained)
    assert any(e[2] == "firing" for e in ref_events) and any(e[2] == "resolved" for e in ref_events)
    events, final, kills, hits = run_with_kills(tmp_path / "crash", trained, random.Random(seed), n, len(ref_events))
    print(f"kills={kills} failpoint deaths={hits} alerts={len(events)} reference={len(ref_events)}")
    assert kills == n
    if n >= 20:  # the process died mid-record, mid-tick and mid-checkpoint, where the failpoints were armed
        assert hits["wal.torn"] and hits["engine.tick"] and hits["checkpoint.write"], hits
    assert ref_events - events == set(), f"alerts lost (seed {seed}): {sorted(ref_events - events)}"
    assert events - ref_events == set(), f"alerts the reference never sent (seed {seed}): {sorted(events - ref_events)}"
    assert set(final) == set(ref_final)
    for k, r in ref_final.items():
        got = final[k]
        assert (got["state"], got["last_ts"]) == (r["state"], r["last_ts"]), (k, seed)
        assert got["score"] == pytest.approx(r["score"], rel=1e-9, abs=1e-12), (k, seed)
        assert got["threshold"] == pytest.approx(r["threshold"], rel=1e-9, abs=1e-12), (k, seed)


@pytest.mark.timeout(900)
def test_kill_9_at_random_moments_loses_no_alert_and_ends_in_the_same_state(trained: Path, tmp_path: Path) -> None:
    check_kills(trained, tmp_path, KILLS)


@pytest.mark.slow
@pytest.mark.nightly
@pytest.mark.timeout(5400)
def test_nightly_200_kills(trained: Path, tmp_path: Path) -> None:
    check_kills(trained, tmp_path, 200)
