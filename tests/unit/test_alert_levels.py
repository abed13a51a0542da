"""Per-stream alert levels and floors set at training from each stream's cadence
(sentinel.runtime.engine.training.alert_levels)."""

from __future__ import annotations

import numpy as np
import pytest

from sentinel.config import load_config_text
from sentinel.runtime.engine.group import Group
from sentinel.runtime.engine.training import alert_levels


def group(alerts: str, intervals: list[float]) -> tuple[Group, np.ndarray]:
    cfg = load_config_text(f"model: {{hidden: 4, window: 2}}\nalerts: {alerts}\n", source="test.yaml")
    g = Group(1, cfg, "cpu")
    g.reserve(len(intervals))
    slots = np.arange(len(intervals))
    g.a["interval"][slots] = intervals
    alert_levels(cfg, g, slots)
    return g, slots


def test_for_ticks_wait_that_many_of_a_fast_streams_ticks_and_none_on_a_slow_one() -> None:
    # 1 Hz, 40 s, 5 min, hourly, unknown cadence
    g, slots = group("{for_ticks: 2, for_ticks_within: 60, resolve_for_ticks: 10}", [1.0, 40.0, 300.0, 3600.0, 0.0])
    assert g.alerts.a["for_s"][slots].tolist() == [1.5, 20.0, 0.0, 0.0, 0.0]
    assert g.alerts.a["resolve_s"][slots].tolist() == [10.0, 400.0, 3000.0, 36000.0, 0.0]


def test_for_ticks_within_widens_what_counts_as_fast() -> None:
    g, slots = group("{for_ticks: 2, for_ticks_within: 600}", [1.0, 60.0, 300.0, 3600.0])
    assert g.alerts.a["for_s"][slots].tolist() == [1.5, 90.0, 450.0, 0.0]


def test_the_budget_sets_enter_from_cadence_never_below_enter() -> None:
    g, slots = group("{false_alerts_per_day: 0.1, enter: 0.5}", [1.0, 3600.0])
    enter = g.alerts.a["enter"][slots]
    assert enter[0] == pytest.approx(-np.log10(0.1 / 86400.0) / 8.0)  # 0.742 at 1 Hz
    assert enter[1] == 0.5  # the hourly stream's budget asks less than `enter`: `enter` holds
