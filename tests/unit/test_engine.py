"""The engine: rejection, gaps and re-warm, warm-up, first training, alert events, stream limits."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
import torch

from sentinel.alerts.sinks.webhook import alert_annotations
from sentinel.config import load_config_text
from sentinel.model.bank import Bank
from sentinel.model.train import train
from sentinel.runtime.engine import Engine, stream_seed
from sentinel.types import AlertEvent, Sample, StreamKey

MIN_HISTORY = 64
REWARM = 6

CONFIG = f"""
streams: {{history_size: 64, max_gap_intervals: 5, rewarm_samples: {REWARM}, max_streams: 8}}
model: {{hidden: 8, window: 4}}
train: {{min_history: {MIN_HISTORY}, min_history_span: 0, epochs: 2, bptt: 16, segments: 2, retrain_interval: 0, drift_retrain: false}}
detect: {{threshold: {{method: spot}}}}
alerts: {{for: 0, for_ticks: 0, resolve_for: 0, resolve_for_ticks: 0}}
"""

A = StreamKey.of("pump", site="s1", pump="a")
B = StreamKey.of("pump", site="s1", pump="b")
FIELDS = ("temp", "vib", "cur")


def engine(extra: str = "") -> Engine:
    return Engine(load_config_text(CONFIG + extra, source="test.yaml"))


def value(key: StreamKey, i: int, F: int) -> tuple[float, ...]:
    hk = zlib.crc32(str(key).encode())  # stable across processes (str hashes are salted)
    ph = 0.7 * (hk % 5)
    rng = np.random.default_rng(i * 7919 + hk % 1000)
    return tuple(float(np.sin(2 * np.pi * i / 16 + ph + j) * (j + 1) + 0.05 * rng.standard_normal())
                 for j in range(F))


def feed(e: Engine, keys: list[StreamKey], start: int, n: int, F: int = 1, fields: tuple[str, ...] | None = None
         ) -> list:
    """One sample per key per second for ticks ``start..start+n-1``; trains inline like replay."""
    fields = fields or tuple(FIELDS[:F]) if F > 1 else ("value",)
    outs = []
    for i in range(start, start + n):
        outs.append(e.process([Sample(k, float(i), fields, value(k, i, F)) for k in keys]))
        for job in e.due_training(float(i)):
            e.apply_training(job, train(job, e.settings), float(i))
    return outs


def snapshot(e: Engine) -> dict[str, np.ndarray]:
    snap: dict[str, np.ndarray] = {}
    for F, g in e.groups.items():
        snap.update({f"{F}.a.{k}": v.copy() for k, v in g.a.items()})
        snap.update({f"{F}.bank.{k}": v.float().numpy() for k, v in g.bank.t.items()})  # bf16 W: exact in float32
        snap.update({f"{F}.thr.{k}": v.copy() for k, v in g.thr.a.items()})
        snap.update({f"{F}.alerts.{k}": v.copy() for k, v in g.alerts.a.items()})
    return snap


def assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_first_training_happens_at_min_history_and_warming_never_alerts() -> None:
    e = engine()
    for i in range(MIN_HISTORY - 1):
        spike = 1000.0 if i % 10 == 9 else 0.0  # wild values while warming: never an alert
        out = e.process([Sample(A, float(i), ("value",), (value(A, i, 1)[0] + spike,))])
        assert out.score[0] == 0 and not out.firing[0] and not out.ready[0] and out.events == []
        assert e.due_training(float(i)) == []
    assert e.state_counts()["warming"] == 1
    e.process([Sample(A, float(MIN_HISTORY - 1), ("value",), value(A, MIN_HISTORY - 1, 1))])
    jobs = e.due_training(float(MIN_HISTORY - 1))
    assert len(jobs) == 1 and jobs[0].values.shape == (1, 64, 1)
    assert jobs[0].seeds == [stream_seed(A, 0)]
    assert e.due_training(float(MIN_HISTORY - 1)) == []  # already handed out
    counts = e.apply_training(jobs[0], train(jobs[0], e.settings), float(MIN_HISTORY - 1))
    assert counts == {"success": 1, "rejected": 0}
    assert e.state_counts()["ready"] == 1 and e.model_version == 1
    (view,) = e.stream_views()  # the API shows the calibrated threshold before the stream's next tick
    assert view.ready and math.isfinite(view.threshold) and view.threshold > 0
    out = e.process([Sample(A, float(MIN_HISTORY), ("value",), value(A, MIN_HISTORY, 1))])
    assert out.ready[0] and np.isfinite(out.error[0]) and np.isfinite(out.threshold[0])


@pytest.fixture(scope="module")
def ready_engine_state() -> Engine:
    e = engine()
    feed(e, [A, B], 0, MIN_HISTORY + 8)
    assert e.state_counts()["ready"] == 2
    return e


def fresh_ready() -> Engine:
    e = engine()
    feed(e, [A, B], 0, MIN_HISTORY + 8)
    return e


@pytest.mark.parametrize(("ts", "val", "reason"), [
    (MIN_HISTORY + 3.0, 0.0, "out_of_order"),
    (MIN_HISTORY + 7.0, 0.0, "duplicate"),
    (1e9, float("inf"), "non_finite"),
    (1e9, float("-inf"), "non_finite"),
    (1e9, float("nan"), "no_values"),
])
def test_rejected_samples_are_counted_and_change_nothing(ts: float, val: float, reason: str) -> None:
    e = fresh_ready()
    before = snapshot(e)
    out = e.process([Sample(A, ts, ("value",), (val,))])
    assert out.rejected == [reason]
    assert out.score[0] == 0 and not out.firing[0]
    assert e.rejected[reason] == 1 and sum(e.rejected.values()) == 1
    assert_same(before, snapshot(e))


def test_rejects_in_a_mixed_batch_leave_the_good_samples_scored_as_without_them() -> None:
    e1, e2 = fresh_ready(), fresh_ready()
    t = float(MIN_HISTORY + 8)
    good = [Sample(A, t, ("value",), value(A, int(t), 1)), Sample(B, t, ("value",), value(B, int(t), 1))]
    bad = [Sample(A, 3.0, ("value",), (1.0,)), Sample(B, t + 1, ("value",), (float("inf"),)),
           Sample(A, t, ("value",), (2.0,)), Sample(B, t + 2, ("other",), (1.0,))]
    out1 = e1.process(good)
    out2 = e2.process([bad[0], good[0], bad[1], good[1], bad[2], bad[3]])
    assert out2.rejected == ["out_of_order", None, "non_finite", None, "duplicate", "bad_fields"]
    np.testing.assert_array_equal(out2.score[[1, 3]], out1.score)
    np.testing.assert_array_equal(out2.error[[1, 3]], out1.error)
    assert e2.rejected["out_of_order"] == e2.rejected["non_finite"] == e2.rejected["duplicate"] == 1
    assert e2.rejected["bad_fields"] == 1
    assert_same(snapshot(e1), snapshot(e2))


def test_field_order_is_normalised_to_the_streams_first_order() -> None:
    e1, e2 = engine(), engine()
    for i in range(5):
        v = value(A, i, 3)
        e1.process([Sample(A, float(i), FIELDS, v)])
        e2.process([Sample(A, float(i), FIELDS[::-1], v[::-1]) if i else Sample(A, float(i), FIELDS, v)])
    assert_same(snapshot(e1), snapshot(e2))


def test_gap_resets_state_and_rewarms() -> None:
    e = fresh_ready()
    g = e.groups[1]
    _F, slot = e.index[A]
    t_gap = float(MIN_HISTORY + 8 + 100)  # interval 1 s, max_gap 5 intervals
    # reference error: the same weights stepped from a zero state
    p = g.bank.params(np.array([slot]))
    solo = Bank(g.bank.dims, prediction_weight=g.bank.prediction_weight, capacity=1, weight_dtype=g.bank.weight_dtype)
    s0 = solo.add()
    solo.load(np.array([s0]), {k: p[k] for k in ("W", "b", "D", "d")}, p["mean"], p["std"])
    scores = []
    for j in range(REWARM):
        t = t_gap + j
        x = value(A, int(t), 1)
        if j == 1:
            x = (x[0] + 1e4,)  # a spike while re-warming: no score, no alert
        out = e.process([Sample(A, t, ("value",), x)])
        _, e_ref = solo.step(np.array([s0]), np.array([x], dtype=np.float32))
        assert out.error[0] == pytest.approx(float(e_ref[0]), rel=1e-5, abs=1e-6)
        assert not out.firing[0] and out.events == []
        scores.append(out.score[0])
    assert scores[:REWARM] == [0.0] * REWARM
    assert int(g.a["rewarm"][slot]) == 0
    out = e.process([Sample(A, t_gap + REWARM, ("value",), (1e4,))])  # re-warmed: scores and alerts again
    assert out.score[0] > 0.5 and out.firing[0]


def test_no_gap_keeps_state() -> None:
    e = fresh_ready()
    g = e.groups[1]
    slot = e.index[A][1]
    h_before = g.bank.state(np.array([slot]))["h"].clone()
    e.process([Sample(A, float(MIN_HISTORY + 8 + 3), ("value",), value(A, MIN_HISTORY + 11, 1))])  # 4 s < 5 s
    assert int(g.a["rewarm"][slot]) == 0
    assert not torch.equal(g.bank.state(np.array([slot]))["h"], torch.zeros_like(h_before))


def test_alert_event_carries_labels_and_top_fields() -> None:
    e = engine()
    feed(e, [A], 0, MIN_HISTORY + 8, F=3)
    assert e.state_counts() == {"warming": 0, "ready": 1, "ok": 1, "pending": 0, "firing": 0}
    t = float(MIN_HISTORY + 8)
    v = list(value(A, int(t), 3))
    v[1] += 500.0  # "vib" drives the error
    out = e.process([Sample(A, t, FIELDS, tuple(v))])
    assert out.firing[0] and out.score[0] >= 0.5
    assert len(out.events) == 1
    ev = out.events[0]
    assert isinstance(ev, AlertEvent)
    assert ev.status == "firing" and ev.key == A and ev.starts_at == t and ev.ends_at is None
    assert ev.labels == {"alertname": "SentinelAnomaly", "measurement": "pump", "pump": "a", "site": "s1",
                         "severity": ev.severity}
    assert ev.top_fields[0][0] == "vib" and ev.top_fields[0][1] > 0.9
    assert sum(s for _, s in ev.top_fields) == pytest.approx(1.0, abs=1e-3)
    assert ev.score == out.score[0] and ev.error == pytest.approx(out.error[0])
    # back to normal (once the spike has left the reconstruction window): resolved, with ends_at
    outs = feed(e, [A], int(t) + 1, 10, F=3)
    resolved = [ev for o in outs for ev in o.events]
    assert [r.status for r in resolved] == ["resolved"]
    assert resolved[0].starts_at == t and resolved[0].ends_at == resolved[0].at
    assert e.groups[3].alerts.a["fired"][e.index[A][1]] == 1


def test_max_streams_refuses_and_counts() -> None:
    e = engine().__class__(load_config_text(CONFIG.replace("max_streams: 8", "max_streams: 2"), source="t.yaml"))
    keys = [StreamKey.of("m", i=str(i)) for i in range(3)]
    out = e.process([Sample(k, 1.0, ("value",), (1.0,)) for k in keys])
    assert out.rejected == [None, None, "max_streams"]
    assert e.n_streams == 2 and e.rejected["max_streams"] == 1
    e.remove_stream(keys[0])
    out = e.process([Sample(keys[2], 2.0, ("value",), (1.0,))])
    assert out.rejected == [None] and e.n_streams == 2


def test_scores_of_a_stream_do_not_depend_on_other_streams() -> None:
    e_ab, e_a = engine(), engine()
    outs_ab = feed(e_ab, [A, B], 0, MIN_HISTORY + 30)
    outs_a = feed(e_a, [A], 0, MIN_HISTORY + 30)
    err_ab = np.array([o.error[0] for o in outs_ab])
    err_a = np.array([o.error[0] for o in outs_a])
    np.testing.assert_allclose(err_ab, err_a, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.array([o.ready[0] for o in outs_ab]), np.array([o.ready[0] for o in outs_a]))
    np.testing.assert_allclose([o.score[0] for o in outs_ab], [o.score[0] for o in outs_a], atol=1e-6)


def test_a_stuck_field_scores_one_and_is_named_while_the_others_keep_moving() -> None:
    from sentinel.runtime.engine import STUCK_MIN

    e = engine()
    feed(e, [A], 0, MIN_HISTORY + 10, F=3)
    g = e.groups[3]
    slot = e.index[A][1]
    assert g.a["ready"][slot] and g.a["max_run"][slot].tolist() == [1, 1, 1]  # noisy history: no repeats
    start = MIN_HISTORY + 10
    frozen = value(A, start - 1, 3)[1]  # "vib" freezes at its last value
    scores, shares, events = [], [], []
    for i in range(start, start + STUCK_MIN + 3):
        vals = list(value(A, i, 3))
        vals[1] = frozen
        out = e.process([Sample(A, float(i), FIELDS, tuple(vals))])
        scores.append(float(out.score[0]))
        shares.append(g.a["share"][slot].tolist())
        events += out.events
    # run length reaches STUCK_MIN at the (STUCK_MIN-1)-th frozen tick (the value before counts too)
    k = STUCK_MIN - 2
    assert all(sh != [0.0, 1.0, 0.0] for sh in shares[:k])  # until then: the model's own error shares
    assert scores[k:] == [1.0] * len(scores[k:])
    assert shares[k:] == [[0.0, 1.0, 0.0]] * len(shares[k:])
    assert g.a["run"][slot].tolist()[1] == STUCK_MIN + 4
    assert any(ev.status == "firing" for ev in events)
    # the next training does not learn the alerted run as a normal one: the same fault flags again
    end = start + STUCK_MIN + 3
    for i in range(end, end + 12):
        e.process([Sample(A, float(i), FIELDS, value(A, i, 3))])
    g.a["relearn"][slot] = True  # ask for a retrain now (its history holds the stuck run, flagged)
    (job,) = e.due_training(float(end + 12))
    e.apply_training(job, train(job, e.settings), float(end + 12))
    assert g.a["max_run"][slot].tolist()[1] < STUCK_MIN  # the unflagged head of the run at most


def test_history_fetched_for_a_stream_first_seen_live_goes_before_its_samples_and_trains_it() -> None:
    e = engine()
    live = [Sample(A, float(i), ("value",), value(A, i, 1)) for i in range(100, 105)]
    for smp in live:
        e.process([smp])
    assert e.created == [A]
    g, slot = e.groups[1], e.index[A][1]
    assert not e.due_training(104.0)  # 5 live samples: far from min_history
    older = [Sample(A, float(i), ("value",), value(A, i, 1)) for i in range(100 - MIN_HISTORY, 102)]
    bad = [Sample(A, 5.0, ("value",), (float("inf"),)), Sample(B, 1.0, ("value",), (1.0,))]  # inf; unknown key
    assert e.load_history(older + bad, create=False) == MIN_HISTORY  # timestamps it holds are skipped
    ts, v, _fl = g.history(np.array([slot]))
    kept = ts[0][~np.isnan(ts[0])]
    assert kept.tolist() == [float(t) for t in range(105 - 64, 105)]  # the newest history_size (64)
    # the live samples stay last (values kept as float16 residuals from the stream's centre)
    assert v[0, -1, 0] == pytest.approx(value(A, 104, 1)[0], abs=2e-3)
    assert g.a["last_ts"][slot] == 104.0 and B not in e.index
    jobs = e.due_training(105.0)
    assert len(jobs) == 1 and jobs[0].tag["slots"] == [slot]


def test_a_sustained_shift_is_relearned_as_the_new_normal() -> None:
    """An alert that keeps firing on a shifted level for relearn_after (and 512 ticks) turns its samples
    into training data, retrains the stream, and resolves; before that it keeps firing (not absorbed)."""
    e = Engine(load_config_text(CONFIG.replace("history_size: 64", "history_size: 1024").replace(
        "alerts: {for: 0, for_ticks: 0, resolve_for: 0, resolve_for_ticks: 0}", "alerts: {for: 0, for_ticks: 0, resolve_for: 0, relearn_after: 600, "
        "false_alerts_per_day: null}").replace("model: {hidden: 8, window: 4}",
                                               "model: {hidden: 8, window: 4, baseline_halflife: 64}"), source="t.yaml"))
    key = StreamKey.of("pump", pump="shift")
    rng = np.random.default_rng(3)

    events = []

    def tick(i: int, level: float):
        out = e.process([Sample(key, float(i), ("value",), (level + np.sin(i / 8) + 0.1 * rng.standard_normal(),))])
        events.extend(out.events)
        for job in e.due_training(float(i)):
            e.apply_training(job, train(job, e.settings), float(i))
        return out

    for i in range(300):
        tick(i, 0.0)
    states = [int(tick(i, 25.0).state[0]) for i in range(300, 1400)]
    fired = states.index(2)
    assert fired < 10  # the shift alerts at once
    g, slot = e.groups[1], e.index[key][1]
    assert int(g.a["version"][slot]) >= 2  # retrained on the shifted level
    # it fired for at least relearn_after (600 ticks) before that, then resolved and stays ok
    assert all(s == 2 for s in states[fired : fired + 590])
    assert states[-1] in (0, 3)
    # one alert, and its resolve says why in words (the firing says nothing of the kind)
    assert [ev.status for ev in events] == ["firing", "resolved"]
    assert events[0].note == ""
    assert events[1].note.startswith("baseline shifted: the level held for ") and "relearned" in events[1].note
    assert alert_annotations(events[1])["note"] == events[1].note
    assert not g.a["shifted"][slot]  # said once


def test_state_counts_while_a_group_grows() -> None:
    """The gauge loop reads the counts from another thread: a group caught half-grown (its per-slot
    arrays replaced, its alert machine's not yet) still counts its streams, and does not raise."""
    e = engine()
    feed(e, [A, B], 0, 3, F=1)
    before = e.state_counts()
    g = e.groups[1]
    g.slots.limit = 1024
    g.slots.ensure(4 * len(g.alerts.a["state"]))  # what Group._ensure does first; the alert machine grows after
    assert len(g.a["alive"]) > len(g.alerts.a["state"])
    assert e.state_counts() == before == {"warming": 2, "ready": 0, "ok": 0, "pending": 0, "firing": 0}
