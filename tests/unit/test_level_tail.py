"""The level statistic's own tail (sentinel.detect.level): a smooth glide far outside the training
range alerts and names its field, where the error's drifting threshold alone absorbs it."""

from __future__ import annotations

import numpy as np

from sentinel.config import load_config_text
from sentinel.detect.level import combine, level_statistic
from sentinel.model.train import train
from sentinel.runtime.engine import Engine
from sentinel.types import Sample, StreamKey

TRAIN = 320
GLIDE = 480
KEY = StreamKey.of("pump", site="s1")
FIELDS = ("temp", "flow")


def config(level_tail: bool) -> str:
    return f"""
streams: {{history_size: 512, max_gap_intervals: 5, rewarm_samples: 4}}
model: {{hidden: 8, window: 4}}
train: {{min_history: {TRAIN}, min_history_span: 0, epochs: 4, bptt: 16, segments: 2, retrain_interval: 0, drift_retrain: false}}
detect: {{level_tail: {str(level_tail).lower()}}}
alerts: {{for: 0, for_ticks: 0, resolve_for: 0, false_alerts_per_day: null}}
"""


def value(i: int, rng: np.random.Generator) -> tuple[float, float]:
    glide = 0.0 if i < TRAIN + 40 else 0.008 * (i - TRAIN - 40)  # temp: +3.5 over 440 ticks (~5 sd)
    return (float(np.sin(2 * np.pi * i / 32) + glide + 0.1 * rng.standard_normal()),
            float(np.cos(2 * np.pi * i / 32) + 0.1 * rng.standard_normal()))


def run(level_tail: bool, ticks: int = TRAIN + GLIDE, e: Engine | None = None
        ) -> tuple[list[float], list[bool], list[np.ndarray]]:
    e = e or Engine(load_config_text(config(level_tail), source="test.yaml"))
    rng = np.random.default_rng(7)
    scores, firing, shares = [], [], []
    for i in range(ticks):
        out = e.process([Sample(KEY, float(i), FIELDS, value(i, rng))])
        for job in e.due_training(float(i)):
            e.apply_training(job, train(job, e.settings), float(i))
        scores.append(float(out.score[0]))
        firing.append(bool(out.firing[0]))
        g = next(iter(e.groups.values()))
        shares.append(g.a["share"][0].copy())
    return scores, firing, shares


def test_a_smooth_glide_far_outside_training_alerts_on_the_level_tail_and_names_its_field() -> None:
    on_scores, on_firing, on_shares = run(True)
    off_scores, off_firing, _ = run(False)
    start = TRAIN + 40
    # before the glide neither fires
    assert not any(on_firing[TRAIN:start]) and not any(off_firing[TRAIN:start])
    first = start + on_firing[start:].index(True)
    assert on_shares[first].argmax() == 0  # temp drove it
    # the error's threshold alone follows the glide: it never alerts
    assert not any(off_firing) and max(off_scores[start:]) < 0.5 < max(on_scores[start:])


def test_level_statistic_and_combination() -> None:
    stat, shares = level_statistic(np.array([[3.0, 0.0], [np.nan, 1.0]]), None)
    assert stat.tolist() == [9.0, 1.0] and shares.tolist() == [[9.0, 0.0], [0.0, 1.0]]
    assert combine(np.array([0.5]), np.array([1e-5])).tolist() == [1e-5]


def test_the_level_tail_is_checkpointed_and_an_older_checkpoint_restores_without_it() -> None:
    cfg = load_config_text(config(True), source="test.yaml")
    e = Engine(cfg)
    run(True, TRAIN + 5, e)
    g = next(iter(e.groups.values()))
    assert g.lthr is not None and g.lthr.a["ready"][0] and np.isfinite(g.lthr.a["z"][0])
    meta, tensors = e.snapshot()
    back = Engine(cfg)
    back.restore(meta, {k: v.clone() for k, v in tensors.items()})
    gb = next(iter(back.groups.values()))
    assert gb.lthr is not None
    for k, v in g.lthr.a.items():
        np.testing.assert_array_equal(gb.lthr.a[k][:1], v[:1], err_msg=k)
    old = Engine(cfg)  # a checkpoint from before the level tail: the error's tail alone until retrained
    old.restore(meta, {k: v for k, v in tensors.items() if ".lthr." not in k})
    go = next(iter(old.groups.values()))
    assert go.lthr is not None and not go.lthr.a["ready"][0]


def test_a_field_that_never_moved_in_training_does_not_make_the_next_small_change_impossible() -> None:
    from sentinel.detect.level import SIGMA_FLOOR
    from sentinel.detect.thresholds import SpotThresholds

    slots = np.array([0])
    flat = [np.zeros(400)]  # a status flag held all training: its level statistic is 0 throughout
    bare, floored = SpotThresholds(1e-4, 0.98, 0, capacity=1), SpotThresholds(1e-4, 0.98, 0, capacity=1,
                                                                             sigma_floor=SIGMA_FLOOR)
    bare.calibrate(slots, flat)
    floored.calibrate(slots, flat)
    small, large = np.array([1.0]), np.array([40.0])  # one normalisation unit squared; a real move
    assert bare.tail_probability(slots, small)[0] < 1e-100  # without the floor: "impossible"
    assert floored.tail_probability(slots, small)[0] > 1e-4  # rarer than the risk only further out
    assert floored.tail_probability(slots, large)[0] < 1e-12


def sustained_run(halflife: float, shift: float, drift: float = 0.0, ticks: int = TRAIN + 400
                  ) -> tuple[list[bool], list[np.ndarray]]:
    """Two white-noise fields; from TRAIN + 40 on, ``flow`` moves by ``shift`` noise widths at once, or
    glides by ``drift`` widths per tick."""
    cfg = config(True).replace("detect: {level_tail: true}", f"detect: {{level_tail: true, level_halflife: {halflife}}}")
    e = Engine(load_config_text(cfg, source="test.yaml"))
    rng = np.random.default_rng(3)
    firing, shares = [], []
    for i in range(ticks):
        k = max(0, i - TRAIN - 40)
        off = (shift if k else 0.0) + drift * k
        out = e.process([Sample(KEY, float(i), FIELDS, (float(rng.standard_normal()), float(rng.standard_normal() + off)))])
        for job in e.due_training(float(i)):
            e.apply_training(job, train(job, e.settings), float(i))
        firing.append(bool(out.firing[0]))
        shares.append(next(iter(e.groups.values())).a["share"][0].copy())
    return firing, shares


def test_a_moderate_shift_that_persists_adds_up_on_the_sustained_level_and_names_its_field() -> None:
    start = TRAIN + 40
    on, on_shares = sustained_run(16.0, 2.0)
    off, _ = sustained_run(0.0, 2.0)
    assert not any(on[TRAIN:start])
    assert sum(on[start:]) > 300  # found within its first hundred ticks, and held
    assert on_shares[start + on[start:].index(True)].argmax() == 1  # flow drove it
    assert sum(off[start:]) < 50  # each sample alone: two noise widths are common


def test_a_drift_slower_than_the_slow_average_cancels_out() -> None:
    firing, _ = sustained_run(16.0, 0.0, drift=0.002)  # 0.8 noise widths over 400 ticks
    assert not any(firing[TRAIN:])
