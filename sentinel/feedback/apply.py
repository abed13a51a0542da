"""What a feedback does to the engine. Runs on the engine thread (it writes the stream's arrays).

*normal*: the window's history entries are no longer flagged (flagged entries, those that fell
in an alert, are left out of training and of the threshold's calibration), and the stream is
marked for a retrain — the same path as a relearned baseline shift: the next training round
retrains it on its history, the window included, the new model is accepted (the operator's word
replaces the champion/challenger check), and its threshold is recalibrated on errors that now
include the window. *anomaly*: the window is flagged, so it is never learned as normal; where
some of it had been taken as normal (a baseline shift relearned after ``alerts.relearn_after``,
or an incident no alert caught) the stream retrains without it, accepted the same way: the
operator's veto of a relearn. The record is what the quality report counts as a missed incident.

Every feedback is appended to ``Engine.feedback`` (plain dicts, bounded), which the checkpoint
keeps.
"""

from __future__ import annotations

from typing import Any

from .record import MAX_KEEP, Feedback


def apply_feedback(engine: Any, fb: Feedback) -> dict[str, Any]:
    """Apply ``fb`` to ``engine`` and record it. Returns ``{"id", "stream", "label", "samples",
    "retrain"}`` (``samples``: history entries in the window). Raises KeyError for an unknown stream."""
    loc = engine.index.get(fb.key)
    if loc is None:
        raise KeyError(fb.stream)
    g, slot = engine.groups[loc[0]], loc[1]
    a = g.a
    ts = g.times(slot)  # ring entries never written are NaN: the comparisons leave them out
    in_win = (ts >= fb.start) & (ts <= fb.end)
    samples = int(in_win.sum())
    retrain = False
    in_flight = bool(a["training"][slot])  # a job made before the feedback: it clears the request on return
    if fb.label == "normal":
        a["hist_flag"][slot, in_win] = False
        if a["ready"][slot]:
            a["relearn"][slot] = True  # picked up by the next due_training round
            retrain = True
    else:
        learned = in_win & ~a["hist_flag"][slot]  # taken as normal so far: a relearned shift, a missed incident
        a["hist_flag"][slot, in_win] = True
        if learned.any() and a["ready"][slot]:
            a["relearn"][slot] = True  # the veto: retrain without the window, accepted as the operator says
            a["shifted"][slot] = False
            retrain = True
    log: list[dict] = engine.feedback
    log.append(fb.as_dict())
    del log[:-MAX_KEEP]
    return {"id": fb.id, "stream": fb.stream, "label": fb.label, "samples": samples, "retrain": retrain,
            "in_flight": in_flight}


def request_retrain(engine: Any, stream: str) -> bool | None:
    """Ask again for a stream's retrain once no job of it is in flight: True when asked, False while
    a job is still out, None when the stream is gone or not ready."""
    from ..types import StreamKey

    loc = engine.index.get(StreamKey.parse(stream))
    if loc is None:
        return None
    a = engine.groups[loc[0]].a
    if a["training"][loc[1]]:
        return False
    if not a["ready"][loc[1]]:
        return None
    a["relearn"][loc[1]] = True
    return True


def feedback_ids(engine: Any) -> set[str]:
    return {str(d.get("id")) for d in engine.feedback}
