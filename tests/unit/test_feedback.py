"""Operator feedback: parsing, what it does to the engine, and that a normal pattern is learned.

The learning test is deterministic (seeded data, per-stream seeds, in-process training) and
bounded (one stream, 1,900 ticks, two trainings per branch).
"""

from __future__ import annotations

import numpy as np
import pytest

from sentinel.config import SentinelConfig
from sentinel.feedback import Feedback, FeedbackError, apply_feedback, parse_feedback
from sentinel.model.train import train
from sentinel.runtime.engine import Engine
from sentinel.types import Sample, StreamKey

KEY = StreamKey.of("pump", site="a")
PERIOD, HUMP, FIRST = 200, 12, 500  # a 12-tick plateau every 200 ticks from tick 500: the operators' normal
FEEDBACK_AT = 1150  # after the humps at 500, 700, 900 and 1100 alerted
ANOMALY = 1800  # a deep drop: another shape, between humps
N = 1900


def cfg() -> SentinelConfig:
    return SentinelConfig.model_validate({
        "model": {"hidden": 16, "window": 8},
        "train": {"min_history": 400, "min_history_span": 0, "epochs": 15, "retrain_interval": 0,
                  "drift_retrain": False},
        "alerts": {"for": 0, "for_ticks": 0, "false_alerts_per_day": None, "relearn_after": 0, "flap_max": 100},
    })


def series() -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(N, dtype=float)
    v = 10 + 2 * np.sin(2 * np.pi * t / 40) + 0.2 * rng.normal(size=N)
    for s0 in range(FIRST, N, PERIOD):
        v[s0 : s0 + HUMP] += 4.0  # a plateau: on for 12 ticks, then off
    v[ANOMALY : ANOMALY + 6] -= 10
    return v


def run(e: Engine, v: np.ndarray, lo: int, hi: int) -> list[int]:
    """Feed ticks ``lo..hi-1``; the ticks at which an alert went firing."""
    fired = []
    for i in range(lo, hi):
        out = e.process([Sample(KEY, float(i), ("pressure",), (float(v[i]),))])
        fired += [int(ev.at) for ev in out.events if ev.status == "firing"]
    return fired


def retrain(e: Engine, now: float) -> None:
    jobs = e.due_training(now)
    assert len(jobs) == 1
    assert e.apply_training(jobs[0], train(jobs[0], e.settings), now)["success"] == 1


def hump_of(t: int) -> int | None:
    k = (t - FIRST) // PERIOD
    s0 = FIRST + k * PERIOD
    return s0 if t >= FIRST and s0 <= t < s0 + HUMP + 8 else None


def copy(e: Engine) -> Engine:
    """A second engine in the same state, through a checkpoint's content."""
    c = Engine(e.cfg)
    c.restore(*e.snapshot())
    return c


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_one_normal_feedback_and_one_retrain_stop_the_alerts_on_a_recurring_pattern() -> None:
    v = series()
    e = Engine(cfg())
    run(e, v, 0, 401)
    retrain(e, 400.0)
    before = run(e, v, 401, FEEDBACK_AT)
    assert sorted({hump_of(t) for t in before}) == [500, 700, 900, 1100]  # every hump alerts
    g, slot = e.groups[1], e.index[KEY][1]

    # control: a retrain without the feedback (its alerted windows stay out of training)
    ctrl = copy(e)
    ctrl.groups[1].a["relearn"][slot] = True
    retrain(ctrl, float(FEEDBACK_AT))
    thr_ctrl = float(ctrl.groups[1].thr.threshold(np.array([slot]))[0])
    ctrl_fired = run(ctrl, v, FEEDBACK_AT, N)
    assert {hump_of(t) for t in ctrl_fired} >= {1300, 1500, 1700}  # still alerting on every hump

    # one "normal" feedback on the window that held the alerts: it joins the next training's data
    win = (490.0, 1149.0)
    ts, _v, flags = g.history(np.array([slot]))
    in_win = (ts[0] >= win[0]) & (ts[0] <= win[1])
    assert flags[0][in_win].any()
    res = apply_feedback(e, Feedback(str(KEY), *win, "normal", at=1150.0))
    assert res["retrain"] and res["samples"] == 660
    e = copy(e)  # through the checkpoint: the feedback and the unflagged window are kept
    assert [d["label"] for d in e.feedback] == ["normal"] and e.feedback[0]["from"] == win[0]
    g = e.groups[1]
    jobs = e.due_training(float(FEEDBACK_AT))
    assert len(jobs) == 1 and jobs[0].has_champion.tolist() == [False]
    mask = jobs[0].loss_mask[0]  # the job's history: the newest entries, aligned at the end
    assert mask[in_win[-len(mask):]].all()  # the window is trained on now
    assert e.apply_training(jobs[0], train(jobs[0], e.settings), float(FEEDBACK_AT))["success"] == 1
    thr_fb = float(g.thr.threshold(np.array([slot]))[0])
    assert thr_fb > thr_ctrl  # the threshold learned the window's errors as normal

    after = run(e, v, FEEDBACK_AT, N)
    assert [t for t in after if hump_of(t) is not None] == []  # humps at 1300, 1500, 1700: no alert
    assert any(ANOMALY <= t < ANOMALY + 6 for t in after)  # not blind to a drop


def test_anomaly_feedback_keeps_the_window_out_of_training() -> None:
    e = Engine(cfg())
    e.process([Sample(KEY, float(i), ("pressure",), (float(i % 7),)) for i in range(50)])
    res = apply_feedback(e, Feedback(str(KEY), 10.0, 19.0, "anomaly", at=60.0))
    assert res == {"id": res["id"], "stream": str(KEY), "label": "anomaly", "samples": 10, "retrain": False,
                   "in_flight": False, "alerted": False}
    _ts, _v, flags = e.groups[1].history(np.array([e.index[KEY][1]]))
    assert np.flatnonzero(flags[0][-50:]).tolist() == list(range(10, 20))
    with pytest.raises(KeyError):
        apply_feedback(e, Feedback("pump,site=zz", 0.0, 1.0, "normal"))


def test_old_checkpoints_without_feedback_or_band_still_restore() -> None:
    e = Engine(cfg())
    e.process([Sample(KEY, float(i), ("pressure",), (1.0 + i % 3,)) for i in range(20)])
    meta, tensors = e.snapshot()
    meta.pop("feedback")
    for k in [k for k in tensors if k.split(".")[-1] in ("exp", "lo", "hi", "ch_exp", "ch_lo", "ch_hi")]:
        del tensors[k]
    r = Engine(cfg())
    r.restore(meta, tensors)
    assert r.feedback == [] and r.n_streams == 1


@pytest.mark.parametrize(("body", "message"), [
    ([], "body: a JSON object"),
    ({"stream": "", "from": 1, "to": 2, "label": "normal"}, "stream: required"),
    ({"stream": "a", "from": 1, "to": 2, "label": "meh"}, "label: one of normal, anomaly"),
    ({"stream": "a", "from": "yesterday", "to": 2, "label": "normal"}, "from: not a time"),
    ({"stream": "a", "from": 3, "to": 2, "label": "normal"}, "to: before from"),
    ({"stream": "a", "from": 1, "to": 2, "label": "normal", "x": 1}, "x: unknown key"),
    ({"stream": "a", "to": 2, "label": "normal"}, "from: required"),
])
def test_bad_requests_name_the_key(body, message) -> None:
    with pytest.raises(FeedbackError, match=message):
        parse_feedback(body, now=0.0)


def test_parse_takes_iso_and_epoch_and_normalises_the_key() -> None:
    fb = parse_feedback({"stream": "pump,site=a,id=1", "from": "2026-01-01T00:00:00Z", "to": 1767225660,
                         "label": "anomaly", "comment": "bearing"}, now=5.0)
    assert (fb.stream, fb.start, fb.end, fb.label, fb.comment, fb.at) == (
        "pump,id=1,site=a", 1767225600.0, 1767225660.0, "anomaly", "bearing", 5.0)
    assert Feedback.from_dict(fb.as_dict()) == fb


def test_silence_matchers_follow_alertmanager_and_need_a_stream_label() -> None:
    from sentinel.feedback.silences import matches, on_stream_labels, silence_feedback

    def m(name: str, value: str, regex: bool = False, equal: bool = True) -> dict:
        return {"name": name, "value": value, "isRegex": regex, "isEqual": equal}

    labels = {"alertname": "SentinelAnomaly", "measurement": "pump", "site": "a7"}
    assert matches([m("site", "a.*", regex=True)], labels)
    assert not matches([m("site", "a", regex=True)], labels)  # anchored, as Alertmanager's
    assert matches([m("site", "b", equal=False), m("severity", "critical")], labels)  # severity ignored
    assert matches([m("zone", "")], labels) and not matches([m("zone", "x")], labels)  # missing = ""
    assert not on_stream_labels([m("alertname", "SentinelAnomaly"), m("site", ".*", regex=True)])
    assert on_stream_labels([m("measurement", "pump")])

    e = Engine(cfg())
    e.process([Sample(KEY, float(i), ("pressure",), (float(i % 3),)) for i in range(20)])
    sil = {"id": "s1", "comment": "sentinel:normal wash", "matchers": [m("site", "a")], "status": {"state": "active"},
           "startsAt": "1970-01-01T00:00:05Z", "endsAt": "1970-01-01T00:01:00Z"}
    (fb,) = silence_feedback(sil, e, now=15.0)
    assert (fb.stream, fb.start, fb.end, fb.label, fb.source) == (str(KEY), 5.0, 15.0, "normal", "silence:s1")
    assert silence_feedback({**sil, "comment": "maintenance"}, e, now=15.0) == []
    assert silence_feedback({**sil, "status": {"state": "pending"}}, e, now=15.0) == []
    assert silence_feedback(sil, e, now=4.0) == []  # not started yet


def test_anomaly_feedback_on_what_was_learned_as_normal_vetoes_it_with_a_retrain() -> None:
    """The operator's veto of a relearned shift: the window is flagged and the stream retrains without
    it; on a window that was already out of training nothing more is asked."""
    e = Engine(cfg())
    e.process([Sample(KEY, float(i), ("pressure",), (float(i % 7),)) for i in range(50)])
    g, slot = e.groups[1], e.index[KEY][1]
    g.a["ready"][slot] = True  # as if trained: the relearn of a shift took samples 10..19 as normal
    g.a["shifted"][slot] = True
    res = apply_feedback(e, Feedback(str(KEY), 10.0, 19.0, "anomaly", at=60.0))
    assert res["retrain"] and res["samples"] == 10
    assert g.a["relearn"][slot] and not g.a["shifted"][slot]  # retrained without it; its resolve claims no shift
    g.a["relearn"][slot] = False
    again = apply_feedback(e, Feedback(str(KEY), 10.0, 19.0, "anomaly", at=61.0))
    assert not again["retrain"] and not g.a["relearn"][slot]  # already out of training
