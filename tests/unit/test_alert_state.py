"""The vectorised alert state machine: every transition, hysteresis, cooldown, flapping."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.alerts.state import FIRING, OK, PENDING, RESOLVED, AlertMachine, AlertRules
from sentinel.types import AlertState


def one(m: AlertMachine, t: float, score: float, slot: int = 0) -> list[tuple[str, float, float]]:
    return [(tr.status, tr.at, tr.starts_at) for tr in m.advance(np.array([slot]), np.array([t]), np.array([score]))]


def state(m: AlertMachine, slot: int = 0) -> int:
    return int(m.state(np.array([slot]))[0])


def test_state_constants_match_alert_state() -> None:
    assert tuple(int(s) for s in AlertState) == (OK, PENDING, FIRING, RESOLVED)


def test_full_cycle_ok_pending_firing_resolved_ok() -> None:
    m = AlertMachine(AlertRules(enter=0.5, exit=0.4, for_s=10, resolve_for_s=5, cooldown_s=100))
    assert one(m, 0, 0.1) == [] and state(m) == OK
    assert one(m, 1, 0.6) == [] and state(m) == PENDING
    assert one(m, 5, 0.7) == [] and state(m) == PENDING      # held 4 s < for
    assert one(m, 11, 0.7) == [("firing", 11.0, 11.0)]       # held 10 s
    assert state(m) == FIRING
    assert one(m, 12, 0.3) == [] and state(m) == FIRING      # below exit, not yet for resolve_for
    assert one(m, 16, 0.3) == []
    assert one(m, 17, 0.3) == [("resolved", 17.0, 11.0)]     # 5 s below exit
    assert state(m) == RESOLVED
    assert one(m, 50, 0.1) == [] and state(m) == RESOLVED    # cooldown not over
    assert one(m, 117, 0.1) == [] and state(m) == OK         # cooldown over
    assert int(m.a["fired"][0]) == 1


def test_for_zero_fires_on_the_first_crossing() -> None:
    m = AlertMachine(AlertRules(for_s=0))
    assert one(m, 3, 0.9) == [("firing", 3.0, 3.0)]


def test_pending_back_to_ok_below_exit() -> None:
    m = AlertMachine(AlertRules(enter=0.5, exit=0.4, for_s=10))
    one(m, 0, 0.6)
    assert state(m) == PENDING
    assert one(m, 2, 0.39) == [] and state(m) == OK
    # a new crossing starts a new pending period: `for` counts from it
    one(m, 3, 0.6)
    assert one(m, 12, 0.6) == [] and state(m) == PENDING
    assert one(m, 13, 0.6) == [("firing", 13.0, 13.0)]


def test_hysteresis_between_exit_and_enter() -> None:
    m = AlertMachine(AlertRules(enter=0.5, exit=0.3, for_s=5, resolve_for_s=0))
    one(m, 0, 0.45)
    assert state(m) == OK                          # below enter: not pending
    one(m, 1, 0.5)
    assert state(m) == PENDING                     # enter is inclusive
    one(m, 3, 0.35)
    assert state(m) == PENDING                     # between exit and enter: pending continues
    assert one(m, 6, 0.35) == [("firing", 6.0, 6.0)]  # and `for` still counts
    for t in range(7, 20):
        assert one(m, t, 0.31) == []               # between the levels: keeps firing
    assert state(m) == FIRING
    assert one(m, 20, 0.3) == []                   # exit is exclusive (score < exit resolves)
    assert one(m, 21, 0.29) == [("resolved", 21.0, 6.0)]


def test_resolve_for_restarts_when_the_score_comes_back() -> None:
    m = AlertMachine(AlertRules(for_s=0, resolve_for_s=10))
    one(m, 0, 0.9)
    one(m, 1, 0.1)
    one(m, 8, 0.45)   # between exit (0.4) and enter: not below exit, the clock restarts
    assert one(m, 12, 0.1) == []
    assert one(m, 21, 0.1) == []
    assert one(m, 22, 0.1) == [("resolved", 22.0, 0.0)]


def test_cooldown_reopen_keeps_starts_at_and_is_not_a_new_alert() -> None:
    m = AlertMachine(AlertRules(for_s=30, resolve_for_s=0, cooldown_s=60))
    one(m, 0, 0.9)
    assert one(m, 30, 0.9) == [("firing", 30.0, 30.0)]
    assert one(m, 40, 0.1) == [("resolved", 40.0, 30.0)]
    # within the cooldown a crossing re-opens the same alert at once (no `for`)
    assert one(m, 50, 0.9) == [("firing", 50.0, 30.0)]
    assert state(m) == FIRING
    assert int(m.a["fired"][0]) == 1
    assert one(m, 51, 0.1) == [("resolved", 51.0, 30.0)]
    # after the cooldown a crossing is a new alert that waits `for` again
    assert one(m, 200, 0.9) == [] and state(m) == PENDING
    assert one(m, 230, 0.9) == [("firing", 230.0, 230.0)]
    assert int(m.a["fired"][0]) == 2


def test_flap_suppression_requires_flap_hold_to_resolve() -> None:
    flap_max = 2
    m = AlertMachine(AlertRules(for_s=0, resolve_for_s=0, cooldown_s=0, flap_window_s=3600, flap_max=flap_max,
                                flap_hold_s=100))
    t = 0.0
    resolved_at_once = []
    for _cycle in range(flap_max + 2):
        assert one(m, t, 0.9)[0][0] == "firing"
        out = one(m, t + 1, 0.1)
        resolved_at_once.append(bool(out))
        if not out:
            break
        t += 2
    # exactly the first flap_max alerts resolve at once; the next one needs flap_hold
    assert resolved_at_once == [True] * flap_max + [False]
    assert bool(m.flapping(np.array([0]), np.array([t + 1]))[0])
    # while flapping: below exit for less than flap_hold keeps it firing; flap_hold resolves it
    assert one(m, t + 50, 0.1) == [] and state(m) == FIRING
    assert one(m, t + 101, 0.1) == [("resolved", t + 101, t)]
    # the flap count decays: much later the stream is not flapping any more
    assert not bool(m.flapping(np.array([0]), np.array([t + 5 * 3600]))[0])


def test_slots_are_independent_and_vectorised() -> None:
    m = AlertMachine(AlertRules(for_s=0), capacity=2)
    one(m, 1, 0.9, slot=0)
    m.ensure(3)  # growth keeps existing state
    assert m.capacity >= 3 and state(m, 0) == FIRING and state(m, 2) == OK
    m.reset(np.array([0]))
    out = m.advance(np.array([0, 1, 2]), np.array([5.0, 5.0, 5.0]), np.array([0.9, 0.1, 0.6]))
    assert sorted((tr.slot, tr.status) for tr in out) == [(0, "firing"), (2, "firing")]
    np.testing.assert_array_equal(m.state(np.array([0, 1, 2])), [FIRING, OK, FIRING])
    m.reset(np.array([0]))
    assert state(m, 0) == OK and int(m.a["fired"][0]) == 0 and state(m, 2) == FIRING


def test_nan_score_counts_as_zero() -> None:
    m = AlertMachine(AlertRules(for_s=0, resolve_for_s=0))
    one(m, 0, 0.9)
    assert one(m, 1, float("nan")) == [("resolved", 1.0, 0.0)]


def test_snapshot_restore_round_trip() -> None:
    m = AlertMachine(AlertRules(for_s=5))
    one(m, 0, 0.9)
    other = AlertMachine(AlertRules(for_s=5))
    other.restore(m.snapshot())
    assert one(other, 5, 0.9) == [("firing", 5.0, 5.0)]


rules_st = st.builds(
    AlertRules,
    enter=st.sampled_from([0.5, 0.7]), exit=st.sampled_from([0.3, 0.5]),
    for_s=st.sampled_from([0.0, 2.0, 5.0]), resolve_for_s=st.sampled_from([0.0, 3.0]),
    cooldown_s=st.sampled_from([0.0, 4.0, 20.0]), flap_window_s=st.just(50.0), flap_max=st.sampled_from([1, 3]),
    flap_hold_s=st.sampled_from([0.0, 6.0]),
)


@settings(max_examples=150, deadline=None)
@given(rules=rules_st,
       seq=st.lists(st.tuples(st.floats(0.1, 5.0), st.lists(st.floats(0.0, 1.0), min_size=3, max_size=3)),
                    min_size=1, max_size=80))
def test_property_firing_and_resolved_alternate(rules: AlertRules, seq: list[tuple[float, list[float]]]) -> None:
    m = AlertMachine(rules, capacity=3)
    slots = np.arange(3)
    t = 0.0
    last: dict[int, str] = {}
    new_alerts = np.zeros(3, int)
    for dt, scores in seq:
        t += dt
        for tr in m.advance(slots, np.full(3, t), np.array(scores)):
            prev = last.get(tr.slot)
            assert prev != tr.status, f"two '{tr.status}' in a row for slot {tr.slot}"
            if tr.status == "resolved":
                assert prev == "firing"
            elif tr.starts_at == tr.at:
                new_alerts[tr.slot] += 1
            last[tr.slot] = tr.status
            assert tr.starts_at <= tr.at
        st_ = m.state(slots)
        for s in slots:  # the state agrees with the last transition
            if last.get(int(s)) == "firing":
                assert st_[s] == FIRING
            elif st_[s] == FIRING:
                raise AssertionError("firing without a firing transition")
    np.testing.assert_array_equal(m.a["fired"][:3], new_alerts)


@settings(max_examples=50, deadline=None)
@given(seq=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=60))
def test_property_without_cooldown_every_firing_is_counted(seq: list[float]) -> None:
    m = AlertMachine(AlertRules(for_s=1.0, resolve_for_s=1.0, cooldown_s=0.0), capacity=1)
    firing = 0
    for i, s in enumerate(seq):
        firing += sum(tr.status == "firing" for tr in m.advance(np.array([0]), np.array([float(i)]), np.array([s])))
    assert int(m.a["fired"][0]) == firing


def test_per_stream_resolve_floor_keeps_a_short_dip_inside_one_alert() -> None:
    """set_resolve_floor (alerts.resolve_for_ticks x the stream's interval): a dip shorter than the
    floor does not resolve; a longer one does; a stream without a floor resolves at once."""
    m = AlertMachine(AlertRules(enter=0.5, exit=0.4, for_s=0, resolve_for_s=0, cooldown_s=0), capacity=2)
    m.set_resolve_floor(np.array([0]), np.array([30.0]))  # e.g. 10 ticks of a 3 s stream
    for s in (0, 1):
        assert one(m, 0, 0.9, s) == [("firing", 0.0, 0.0)]
    assert one(m, 3, 0.1, 0) == [] and one(m, 3, 0.1, 1) == [("resolved", 3.0, 0.0)]
    assert one(m, 6, 0.9, 0) == [] and state(m, 0) == FIRING  # the dip of slot 0 stayed inside the alert
    assert one(m, 9, 0.1, 0) == [] and one(m, 30, 0.1, 0) == []
    assert one(m, 39, 0.1, 0) == [("resolved", 39.0, 0.0)]  # 30 s below exit


def test_per_stream_for_floor_drops_a_one_tick_blip_and_fires_a_held_crossing() -> None:
    """set_for_floor (alerts.for_ticks of the stream's cadence, training.for_floor): a crossing that
    falls below exit at the next tick never fires; one that stays at or above exit fires once the
    floor has passed; a stream without a floor fires at once."""
    m = AlertMachine(AlertRules(enter=0.5, exit=0.4, for_s=0, resolve_for_s=0, cooldown_s=0), capacity=2)
    m.set_for_floor(np.array([0]), np.array([1.5]))  # two ticks of a 1 s stream, less half a tick
    assert one(m, 0, 0.99, 0) == [] and state(m, 0) == PENDING  # even a very rare tick waits
    assert one(m, 0, 0.99, 1) == [("firing", 0.0, 0.0)]
    assert one(m, 1, 0.1, 0) == [] and state(m, 0) == OK  # the blip is gone: no alert
    assert one(m, 10, 0.6, 0) == [] and one(m, 11, 0.45, 0) == [] and state(m, 0) == PENDING
    assert one(m, 12, 0.45, 0) == [("firing", 12.0, 12.0)]  # held at or above exit for the floor
    assert int(m.a["fired"][0]) == 1


def test_reopen_within_cooldown_waits_the_per_stream_floor_but_not_the_rules_for() -> None:
    m = AlertMachine(AlertRules(enter=0.5, exit=0.4, for_s=30, resolve_for_s=0, cooldown_s=600))
    m.set_for_floor(np.array([0]), np.array([1.5]))
    one(m, 0, 0.9)
    assert one(m, 30, 0.9) == [("firing", 30.0, 30.0)]
    assert one(m, 40, 0.1) == [("resolved", 40.0, 30.0)]
    assert one(m, 50, 0.9) == [] and state(m) == RESOLVED  # a one-tick blip after the resolve ...
    assert one(m, 51, 0.1) == [] and state(m) == RESOLVED  # ... re-opens nothing
    assert one(m, 60, 0.9) == [] and one(m, 61, 0.5) == []
    assert one(m, 62, 0.5) == [("firing", 62.0, 30.0)]  # held two ticks: the same alert re-opened
    assert int(m.a["fired"][0]) == 1


def test_a_resolved_alert_restored_with_its_pendings_since_reopens_only_on_a_new_crossing() -> None:
    """A checkpoint from before the re-open floor kept ``since`` of the pending that began the alert:
    a score between exit and enter must not re-open it."""
    m = AlertMachine(AlertRules(enter=0.5, exit=0.4, for_s=0, resolve_for_s=0, cooldown_s=600))
    m.set_for_floor(np.array([0]), np.array([1.5]))
    one(m, 0, 0.9)
    one(m, 1, 0.9)
    assert one(m, 2, 0.9) == [("firing", 2.0, 2.0)]
    assert one(m, 3, 0.1)[0][0] == "resolved"
    m.a["since"][0] = 0.0  # as an older checkpoint restores it
    assert one(m, 10, 0.45) == [] and one(m, 11, 0.45) == [] and state(m) == RESOLVED
