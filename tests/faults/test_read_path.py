"""The read path under concurrent readers (D2) and a background task that dies (logged, counted, restarted)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sentinel.types import Sample, SourceBatch, StreamKey
from tests.daemon_helpers import RunningDaemon, http, wait_for, write_config


def wide_batch(i: int, F: int) -> SourceBatch:
    key = StreamKey.of("probe", n=f"{F}-{i}")
    return SourceBatch("crafted", [Sample(key, 1_700_000_000.0 + i, tuple(f"f{j}" for j in range(F)),
                                          tuple(float(j) for j in range(F)))], cursor={"i": i})


def test_d2_readers_never_fail_while_streams_and_groups_are_created(tmp_path: Path) -> None:
    d = RunningDaemon(write_config(tmp_path)).start()
    errors: list[str] = []
    stop = threading.Event()

    def reader(path: str) -> None:
        for _ in range(400):  # bounded
            if stop.is_set():
                return
            code, body = http(d.url + path)
            if code != 200:
                errors.append(f"{path}: {code} {body[:200]!r}")

    try:
        threads = [threading.Thread(target=reader, args=(p,)) for p in
                   ("/api/v1/streams", "/metrics", "/api/v1/status", "/api/v1/streams", "/metrics")]
        for t in threads:
            t.start()
        for i in range(300):
            d.emit(wide_batch(i, 1 + i % 60))  # new streams and, early on, a new group per field count
        d.drain()
        stop.set()
        for t in threads:
            t.join(60)
        assert errors == []
        assert d.daemon.engine.n_streams == 300
    finally:
        d.stop()


def test_a_background_task_that_dies_is_logged_counted_and_restarted(tmp_path: Path) -> None:
    d = RunningDaemon(write_config(tmp_path)).start()
    try:
        eng = d.daemon.engine
        real = eng.state_counts
        calls = {"n": 0}

        def flaky() -> dict[str, int]:
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("dictionary changed size during iteration")
            return real()

        eng.state_counts = flaky  # type: ignore[method-assign]
        wait_for(lambda: (d.metric("sentinel_task_restarts_total", {"task": "gauges"}) or 0) >= 1, timeout=20,
                 what="the gauge task's restart counted")
        n = calls["n"]
        wait_for(lambda: calls["n"] > n + 1, timeout=20, what="the gauge task running again")
        time.sleep(0.1)
    finally:
        d.stop()
