"""The engine round's steps one at a time, on a bare group: validate, gaps, stuck sensor."""

from __future__ import annotations

import numpy as np

from sentinel.config import load_config_text
from sentinel.runtime.engine import STUCK_MIN, Group, steps
from sentinel.types import StreamKey

CONFIG = """
streams: {history_size: 64, max_gap_intervals: 5, rewarm_samples: 6, max_streams: 8}
model: {hidden: 4, window: 4}
"""


def group(F: int, n: int) -> Group:
    g = Group(F, load_config_text(CONFIG, source="test.yaml"), "cpu")
    for i in range(n):
        assert g.add(StreamKey.of("pump", pump=str(i)), tuple(f"f{j}" for j in range(F))) == i
    return g


def test_validate_rejects_samples_not_newer_than_the_last_and_sorts_the_rest_by_slot() -> None:
    g = group(1, 4)
    g.a["last_ts"][:4] = [10.0, 10.0, 10.0, -np.inf]
    idx = np.array([0, 1, 2, 3])
    slots = np.array([3, 0, 1, 2])
    ts = np.array([1.0, 10.0, 9.0, 11.0])
    v = np.array([[0.0], [1.0], [2.0], [3.0]])
    rejected: list[str | None] = [None] * 4
    idx, slots, ts, v = steps.validate(g, idx, slots, ts, v, rejected)
    assert rejected == [None, "duplicate", "out_of_order", None]
    assert slots.tolist() == [2, 3] and idx.tolist() == [3, 0]
    assert ts.tolist() == [11.0, 1.0] and v[:, 0].tolist() == [3.0, 0.0]


def test_gaps_track_the_cadence_and_a_long_gap_makes_a_ready_stream_rewarm() -> None:
    g = group(1, 3)
    a = g.a
    a["last_ts"][:3] = [-np.inf, 100.0, 100.0]
    a["interval"][:3] = [0.0, 2.0, 2.0]
    a["ready"][:3] = [False, True, True]
    slots = np.array([0, 1, 2])
    ready = steps.gaps(g, slots, np.array([5.0, 103.0, 111.0]), 5, 6)
    assert ready.tolist() == [False, True, True]
    assert a["last_ts"][:3].tolist() == [5.0, 103.0, 111.0]
    # first sample: no interval yet; 3 s after 2 s: smoothed; 11 s > 5 x 2 s: a gap, interval kept
    assert a["interval"][:3].tolist() == [0.0, 0.9 * 2.0 + 0.1 * 3.0, 2.0]
    assert a["rewarm"][:3].tolist() == [0, 0, 6]
    ready = steps.gaps(g, slots[:1], np.array([6.0]), 5, 6)  # the second sample sets the interval
    assert a["interval"][0] == 1.0 and not ready[0]


def test_stuck_field_scores_one_once_its_run_reaches_stuck_min_and_names_that_field() -> None:
    g = group(2, 1)
    a = g.a
    a["max_run"][0] = [1, 3]  # stuck from max(STUCK_MIN, 2 x the longest run in training)
    slots, r = np.array([0]), np.array([0])
    scores, runs = [], []
    for i in range(STUCK_MIN + 2):
        v = np.array([[5.0, float(i)]]) if i != 3 else np.array([[np.nan, float(i)]])  # a gap keeps the run
        score = np.array([0.25])
        steps.stuck(g, slots, v, r, score)
        scores.append(float(score[0]))
        runs.append(int(a["run"][0, 0]))
    assert runs == [1, 2, 3, 3, *range(4, STUCK_MIN + 2)]
    first = runs.index(STUCK_MIN)
    assert scores[:first] == [0.25] * first and scores[first:] == [1.0] * (len(scores) - first)
    assert a["share"][0].tolist() == [1.0, 0.0]
    assert a["run"][0, 1] == 1  # the moving field
    # while re-warming a stuck field is not scored; a stream that is not ready is not scored either
    a["rewarm"][0] = 1
    score = np.array([0.25])
    steps.stuck(g, slots, np.array([[5.0, 99.0]]), r, score)
    assert score[0] == 0.25
    steps.stuck(g, slots, np.array([[5.0, 98.0]]), np.array([], dtype=np.int64), score)
    assert score[0] == 0.25 and a["run"][0, 0] == STUCK_MIN + 3
