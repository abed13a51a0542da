"""Stop (what SIGTERM does) and restart: the daemon resumes from its checkpoint exactly.

* In process, deterministic: the same crafted batches go to daemon A (uninterrupted)
  and to daemon B, which is stopped halfway and re-created from its checkpoint.
  B resumes with A's model version, no stream warming, the source cursor of the
  last scored batch, and scores every later sample exactly as A does.
* Alerts queued while the receiver is down survive a restart and all arrive once
  it is back.
* ``sentinel run`` as a process: SIGTERM -> exit 0 with a checkpoint written;
  restarted, it is ready at once with no stream warming.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from pathlib import Path

import numpy as np
import pytest

from sentinel.state import checkpoint as ckpt
from tests.daemon_helpers import (
    MIN_HISTORY,
    SOURCE,
    RunningDaemon,
    SentinelProcess,
    http,
    keys,
    streams_api,
    wait_for,
    write_config,
)
from tests.servers._proc import free_port
from tests.servers.alertmanager import WebhookReceiver

T0 = 1_900_000_000.0
AFTER = 60  # ticks scored after training, split in two halves for B


def _scores(d: RunningDaemon, start: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores and errors of the recorded samples with tick >= start, as [ticks, streams] arrays."""
    sc, er = [], []
    for samples, out in d.records:
        if samples and samples[0].ts >= T0 + start:
            sc.append(out.score.copy())
            er.append(out.error.copy())
    return np.stack(sc), np.stack(er)


def test_restart_from_checkpoint_scores_exactly_like_an_uninterrupted_run(tmp_path: Path) -> None:
    ks = keys(6)
    spikes = {MIN_HISTORY + 10: {ks[1]: 25.0}, MIN_HISTORY + 45: {ks[2]: -25.0}}
    half = MIN_HISTORY + AFTER // 2
    end = MIN_HISTORY + AFTER

    a = RunningDaemon(write_config(tmp_path / "a")).start()
    try:
        a.feed(ks, 0, MIN_HISTORY, T0)
        a.wait_trained()
        a.record_scores()
        a.feed(ks, MIN_HISTORY, end, T0, spikes)
        version_a = a.daemon.engine.model_version
        fired_a = a.metric("sentinel_alert_transitions_total", {"status": "firing"})
    finally:
        a.stop()

    b_cfg = write_config(tmp_path / "b")
    b = RunningDaemon(b_cfg).start()
    try:
        b.feed(ks, 0, MIN_HISTORY, T0)
        b.wait_trained()
        b.record_scores()
        b.feed(ks, MIN_HISTORY, half, T0, spikes)
        version_b = b.daemon.engine.model_version
    finally:
        b.stop()  # SIGTERM's path: drain, final checkpoint
    files = ckpt.list_checkpoints(tmp_path / "b" / "state")
    assert len(files) == 1
    assert ckpt.load(files[0]).meta["cursors"] == {SOURCE: {"i": half}}

    b2 = RunningDaemon(b_cfg).start()
    try:
        eng = b2.daemon.engine
        assert b2.daemon.checkpoint_loaded
        assert eng.model_version == version_b == version_a
        assert b2.counts()["warming"] == 0 and eng.n_streams == len(ks)
        assert b2.daemon.tick is not None and b2.daemon.tick.cursors == {SOURCE: {"i": half}}
        assert b2.metric("sentinel_model_version") == version_a
        assert [s["state"] for s in streams_api(b2.url)] == ["ok"] * len(ks)
        b2.records = b.records
        b2.record_scores()
        b2.feed(ks, half, end, T0, spikes)
        fired_b = b.metric("sentinel_alert_transitions_total", {"status": "firing"}) or 0.0
        fired_b += b2.metric("sentinel_alert_transitions_total", {"status": "firing"}) or 0.0
    finally:
        b2.stop()

    sa, ea = _scores(a, MIN_HISTORY)
    sb, eb = _scores(b2, MIN_HISTORY)
    assert sa.shape == sb.shape == (AFTER, len(ks))
    np.testing.assert_array_equal(sb, sa)
    np.testing.assert_array_equal(eb, ea)
    assert sa[10, 1] > 0.99 and sa[45, 2] > 0.99  # the spikes were seen, in both halves
    assert fired_a == fired_b == 2


def test_alerts_queued_while_the_receiver_is_down_arrive_after_a_restart(tmp_path: Path) -> None:
    port = free_port()
    hook = f"http://127.0.0.1:{port}/hook"
    cfg = write_config(tmp_path, extra={"sinks": {"webhooks": [{"name": "ops", "url": hook, "hmac_secret": "s3",
                                                                "timeout": 1}]}})
    ks = keys(4)
    d = RunningDaemon(cfg).start()
    try:
        d.feed(ks, 0, MIN_HISTORY, T0)
        d.wait_trained()
        d.feed(ks, MIN_HISTORY, MIN_HISTORY + 30, T0,
               {MIN_HISTORY + 5: {ks[0]: 30.0}, MIN_HISTORY + 12: {ks[3]: 30.0}})
        assert d.metric("sentinel_alert_transitions_total", {"status": "firing"}) == 2
        assert d.metric("sentinel_alert_transitions_total", {"status": "resolved"}) == 2
        wait_for(lambda: (d.metric("sentinel_notifications_total", {"sink": "ops", "result": "failure"}) or 0) >= 1,
                 10, "a failed delivery to the dead receiver")
        assert d.daemon.notifier is not None and d.daemon.notifier.pending("ops") == 4
    finally:
        d.stop()

    async def receive() -> WebhookReceiver:
        rx = await WebhookReceiver(port=port).start()
        try:
            d2 = await asyncio.to_thread(RunningDaemon(cfg).start)
            try:
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and sum(len(b["alerts"]) for b in rx.bodies()) < 4:
                    await asyncio.sleep(0.05)
                await asyncio.to_thread(wait_for, lambda: d2.daemon.notifier.pending("ops") == 0, 10, "acks")
            finally:
                await asyncio.to_thread(d2.stop)
        finally:
            await rx.stop()
        return rx

    rx = asyncio.run(receive())
    got = [(a["labels"]["machine"], a["status"]) for b in rx.bodies() for a in b["alerts"]]
    assert sorted(got) == [("m00", "firing"), ("m00", "resolved"), ("m03", "firing"), ("m03", "resolved")]
    for headers, body in rx.received:
        assert headers["X-Sentinel-Signature"] == "sha256=" + hmac.new(b"s3", body, hashlib.sha256).hexdigest()
        assert json.loads(body)["version"] == "4"


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_sentinel_run_sigterm_checkpoints_and_restarts_ready_without_warming(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, source="simulator", streams=6)
    state = tmp_path / "state"
    p = SentinelProcess(cfg, tmp_path / "run1.log")
    try:
        p.wait_ready()
        wait_for(lambda: len(streams_api(p.base)) == 6 and all(s["state"] != "warming" for s in streams_api(p.base)),
                 120, "every simulated stream trained")
        rc = p.terminate(timeout=60)
        assert rc == 0, p.log()
    finally:
        p.close()
    files = ckpt.list_checkpoints(state)
    assert files, p.log()
    c = ckpt.load(files[-1])
    assert c.meta["model_version"] >= 1 and "t" in c.meta["cursors"]["sim"]
    assert not list(state.glob(".*tmp*"))

    p2 = SentinelProcess(cfg, tmp_path / "run2.log")
    try:
        p2.wait_ready()
        status, _ = http(p2.base + "/-/ready")
        assert status == 200
        first = streams_api(p2.base)
        assert len(first) == 6 and [s["state"] for s in first if s["state"] == "warming"] == []
        assert all(s["model_version"] >= 1 for s in first)
        assert p2.terminate(timeout=60) == 0, p2.log()
    finally:
        p2.close()
    assert "resumed from checkpoint" in p2.log()
