"""``--role router|scorer`` on a real nats-server (JetStream): the same scores and alerts as one process.

* one router + two scorers score the crafted fleet with the same per-stream scores (float
  tolerance) and the same alerts as ``--role all`` on the same input;
* ``kill -9`` of a scorer mid-stream, restarted: every alert of the reference delivered at least
  once, the final per-stream scores equal to the reference;
* scale 2 -> 3 scorers while data flows: only the partitions the new scorer wins change owner,
  they continue warm, and no sample is scored twice or skipped;
* a three-node JetStream cluster (R3) with one node killed mid-stream: no sample lost;
* ``sentinel train --publish``: every scorer on the new model version within 10 s of the
  announcement, and no alert burst after the swap.

The reference (``--role all``) runs once per module.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sentinel.cluster.partitions import owner_of, partition_of
from tests.cluster_helpers import (
    AFTER,
    PARTITIONS,
    SPIKES,
    STREAMS,
    T0,
    WARM,
    Proc,
    all_streams,
    config,
    histories,
    key,
    post,
    wait_last,
    wait_trained,
)
from tests.daemon_helpers import http
from tests.faults.test_crash_consistency import Hook
from tests.servers._proc import free_port, sentinel_exe, wait_until
from tests.servers.nats import nats_cluster, nats_server

pytestmark = [pytest.mark.nats, pytest.mark.timeout(240)]

END = WARM + AFTER
LAST_TS = float(T0 + END - 1)


class Reference:
    def __init__(self, scores: dict[str, dict[float, float]], events: set, final: dict[str, dict] | None = None):
        self.scores = scores
        self.events = events
        self.final = final or {}


def final_state(rows: list[dict]) -> dict[str, dict]:
    """Per stream, what ``/api/v1/streams`` says of it at the end: state, alerts, score, threshold."""
    return {r["stream"]: {k: r[k] for k in ("state", "alerts_total", "last_ts", "score", "threshold", "error")}
            for r in rows}


def assert_same_final_state(got: list[dict], ref: Reference) -> None:
    g = final_state(got)
    assert set(g) == set(ref.final)
    for stream, want in ref.final.items():
        have = g[stream]
        for k in ("state", "alerts_total", "last_ts"):
            assert have[k] == want[k], f"{stream}: {k} {have[k]!r} != {want[k]!r}"
        for k in ("score", "threshold", "error"):
            assert have[k] == pytest.approx(want[k], rel=1e-4, abs=1e-5), f"{stream}: {k}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reference]:
    tmp = tmp_path_factory.mktemp("reference")
    hook = Hook()
    p = Proc(config(tmp, free_port(), hook.url), "all")
    try:
        p.wait_ready()
        for i in range(WARM):
            post(p.base, i)
        wait_trained([p])
        for i in range(WARM, END):
            post(p.base, i)
        wait_last([p], LAST_TS)
        wait_until(lambda: sum(1 for e in hook.events() if e[2] == "firing") >= len(SPIKES), timeout=30,
                   what="reference alerts delivered")
        time.sleep(1.0)  # a resolved one may follow
        ref = Reference(histories([p]), hook.events(), final_state(p.streams()))
        assert len(ref.scores) == STREAMS
    finally:
        p.close()
        hook.close()
    yield ref


def assert_same_scores(got: dict[str, dict[float, float]], ref: Reference, since: float = T0 + WARM) -> None:
    assert set(got) == set(ref.scores)
    for stream, want in ref.scores.items():
        w = {t: s for t, s in want.items() if t >= since}
        g = {t: s for t, s in got[stream].items() if t >= since}
        assert sorted(g) == sorted(w), f"{stream}: scored timestamps differ"
        for t in w:
            assert g[t] == pytest.approx(w[t], rel=1e-4, abs=1e-5), f"{stream} at {t}"


class Cluster:
    """A router and scorers against NATS ``urls``, all webhooks to one receiver."""

    def __init__(self, tmp: Path, urls: list[str], extra: dict | None = None):
        self.tmp, self.urls, self.extra = tmp, urls, extra or {}
        self.hook = Hook()
        self.router = Proc(config(tmp / "router", free_port(), self.hook.url, nats=urls, extra_cluster=self.extra),
                           "router")
        self.scorers: dict[int, Proc] = {}

    def scorer(self, i: int, n: int | None) -> Proc:
        extra = {**self.extra, "index": i, **({"scorers": n} if n is not None else {})}
        p = Proc(config(self.tmp / f"scorer{i}", free_port(), self.hook.url, nats=self.urls, extra_cluster=extra),
                 "scorer")
        self.scorers[i] = p
        return p

    @property
    def procs(self) -> list[Proc]:
        return list(self.scorers.values())

    def close(self) -> None:
        for p in [self.router, *self.scorers.values()]:
            p.close()
        self.hook.close()


@pytest.fixture
def nats_url() -> Iterator[str]:
    with nats_server() as n:
        yield n.url


def test_router_and_two_scorers_score_like_one_process(reference: Reference, nats_url: str, tmp_path: Path) -> None:
    c = Cluster(tmp_path, [nats_url])
    try:
        start_trained(c)
        for i in range(WARM, END):
            post(c.router.base, i)
        wait_last(c.procs, LAST_TS)
        per = [len(p.streams()) for p in c.procs]
        assert all(0 < n < STREAMS for n in per), per  # both scorers own some streams
        assert_same_scores(histories(c.procs), reference)
        assert_same_final_state(all_streams(c.procs), reference)
        wait_until(lambda: c.hook.events() >= reference.events, timeout=30, what="every reference alert delivered")
        assert c.hook.events() == reference.events
        assert sum(p.metric("sentinel_partitions_owned") for p in c.procs) == PARTITIONS
        assert c.router.metric("sentinel_router_published_total") == STREAMS * END
        publish_and_pick_up(c)
    finally:
        c.close()


def start_trained(c: Cluster, scorers: int = 2) -> None:
    """``scorers`` scorers of ``scorers`` and the router ready, the fleet's first WARM ticks posted and trained on."""
    for i in range(scorers):
        c.scorer(i, scorers)
    for p in [c.router, *c.procs]:
        p.wait_ready()
    for i in range(WARM):
        post(c.router.base, i)
    wait_trained(c.procs)


def publish_and_pick_up(c: Cluster) -> None:
    """``sentinel train --publish``: every scorer on the new version within 10 s, no alert burst after."""
    before = c.hook.events()
    r = subprocess.run([str(sentinel_exe()), "train", "--publish", "--config", str(c.router.cfg)],
                       capture_output=True, text=True, timeout=120, cwd=c.router.cfg.parent, env=c.router.env)
    announced = time.monotonic()  # the announcement is the trainer's last act
    assert r.returncode == 0, r.stderr[-3000:]
    assert "model version 1 announced" in r.stderr, r.stderr[-3000:]

    def picked_up() -> bool:
        return all(p.metric("sentinel_partition_model_version", {"partition": str(q)}) == 1
                   for i, p in c.scorers.items() for q in range(PARTITIONS) if owner_of(q, 2) == i)
    wait_until(picked_up, timeout=10, interval=0.1, what="every scorer on model version 1")
    assert time.monotonic() - announced <= 10
    for i in range(END, END + 10):  # normal data after the swap
        post(c.router.base, i)
    wait_last(c.procs, float(T0 + END + 9))
    assert all(r["state"] == "ok" for r in all_streams(c.procs))
    assert not {e for e in c.hook.events() - before if e[2] == "firing"}  # no alert burst


def test_a_scorer_killed_and_restarted_loses_no_alert_and_ends_in_the_reference_state(
        reference: Reference, nats_url: str, tmp_path: Path) -> None:
    c = Cluster(tmp_path, [nats_url])
    try:
        start_trained(c)
        trained = time.time()
        wait_until(lambda: all(p.metric("sentinel_checkpoint_last_success_timestamp_seconds") > trained
                               for p in c.procs), timeout=30, what="a checkpoint after training")
        victim = c.scorers[1]
        kill_at = WARM + 25
        for i in range(WARM, END):
            if i == kill_at:
                victim.kill9()  # whatever it had scored since its last checkpoint is scored again
            post(c.router.base, i)
        lag = _cluster(c.router)["lag"]  # the dead scorer's partitions wait in the stream
        dead = {partition_of(key(s), PARTITIONS) for s in range(STREAMS)} & {
            p for p in range(PARTITIONS) if owner_of(p, 2) == 1}
        assert dead and all(lag[str(p)]["messages"] > 0 and lag[str(p)]["seconds"] >= 0 for p in dead), lag
        again = Proc(victim.cfg, "scorer", log_name="scorer-restarted.log")
        c.scorers[1] = again
        again.wait_ready()
        assert not [r for r in again.streams() if r["state"] == "warming"]  # resumed warm
        wait_last(c.procs, LAST_TS)
        assert_same_scores(histories(c.procs), reference)
        assert_same_final_state(all_streams(c.procs), reference)  # alert states, counts, thresholds too
        wait_until(lambda: c.hook.events() >= reference.events, timeout=30,
                   what="every reference alert delivered at least once")
    finally:
        c.close()


def _cluster(router: Proc) -> dict:
    st, b = http(router.base + "/api/v1/cluster")
    assert st == 200, b
    return json.loads(b)["data"]


def _owners(router: Proc) -> dict[int, int | None]:
    return {int(p): o for p, o in _cluster(router)["owners"].items()}


def test_scaling_from_two_to_three_scorers_moves_only_the_new_ones_partitions_warm(
        reference: Reference, nats_url: str, tmp_path: Path) -> None:
    c = Cluster(tmp_path, [nats_url])
    try:
        c.router.wait_ready()
        for i in range(2):  # N from the registered members: 1 + the highest index
            c.scorer(i, None).wait_ready()
        wait_until(lambda: set(_owners(c.router).values()) == {0, 1}, timeout=30, what="two owners")
        for i in range(WARM):
            post(c.router.base, i)
        wait_trained(c.procs)
        before = _owners(c.router)
        assert before == {p: owner_of(p, 2) for p in range(PARTITIONS)}
        mid = WARM + 20
        for i in range(WARM, mid):
            post(c.router.base, i)
        errors: list[BaseException] = []

        def feed() -> None:
            try:
                for i in range(mid, END):
                    post(c.router.base, i)
                    time.sleep(0.05)
            except BaseException as e:
                errors.append(e)

        t = threading.Thread(target=feed, daemon=True)
        t.start()  # data flows while the third scorer joins
        c.scorer(2, None).wait_ready()
        t.join(120)
        assert not t.is_alive() and not errors, errors
        wait_last(c.procs, LAST_TS)
        after = _owners(c.router)
        moved = {p for p in range(PARTITIONS) if after[p] != before[p]}
        assert moved == {p for p in range(PARTITIONS) if owner_of(p, 3) == 2} and moved
        assert all(after[p] == 2 for p in moved)
        rows = c.scorers[2].streams()
        assert rows and all(r["state"] != "warming" for r in rows)  # continued warm
        # no sample scored twice or skipped: every (stream, timestamp) once, scored as the reference did
        assert_same_scores(histories(c.procs), reference)
        assert sum(p.metric("sentinel_samples_ingested_total") for p in c.procs) == STREAMS * END
        assert sum(p.metric("sentinel_samples_rejected_total") for p in c.procs) == 0
    finally:
        c.close()


def test_a_three_node_jetstream_cluster_losing_a_node_loses_no_sample(tmp_path: Path) -> None:
    ticks = 30
    with nats_cluster(3) as nodes:
        c = Cluster(tmp_path, [n.url for n in nodes], extra={"replicas": 3, "partitions": 4})  # fewer raft groups
        try:
            c.scorer(0, 1)
            for p in [c.router, *c.procs]:
                p.wait_ready(timeout=120)
            for i in range(ticks // 2):
                post(c.router.base, i)
            nodes[0].kill()  # one of three: the R3 stream, KV and object store keep a quorum
            for i in range(ticks // 2, ticks):
                post(c.router.base, i, timeout=60)
            wait_last(c.procs, float(T0 + ticks - 1), timeout=120)
            wait_until(lambda: c.scorers[0].metric("sentinel_samples_ingested_total") == STREAMS * ticks,
                       timeout=60, what="every sample scored")
            assert c.scorers[0].metric("sentinel_samples_rejected_total") == 0
        finally:
            c.close()

