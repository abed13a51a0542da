"""What a feedback does to the engine. Runs on the engine thread (it writes the stream's arrays).

*normal*: the window's history entries are no longer flagged (flagged entries, those that fell
in an alert, are left out of training and of the threshold's calibration), and the stream is
marked for a retrain — the same path as a relearned baseline shift: the next training round
retrains it on its history, the window included, the new model is accepted (the operator's word
replaces the champion/challenger check), and its threshold is recalibrated on errors that now
include the window. *anomaly*: the window is flagged, so it is never learned as normal; where
some of it had been taken as normal (a baseline shift relearned after ``alerts.relearn_after``,
or an incident no alert caught) the stream retrains without it, accepted the same way: the
operator's veto of a relearn. Each record also says whether an alert covered the window when the
feedback came (``alerted``: any of its samples fell in an alert), so :func:`feedback_report`
(``GET /api/v1/feedback/report``) counts the operator's verdicts: alerts marked false, incidents
confirmed, incidents no alert caught.

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
    alerted = bool(a["hist_flag"][slot, in_win].any())  # before this feedback changes the flags
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
    log.append({**fb.as_dict(), "alerted": alerted})
    del log[:-MAX_KEEP]
    return {"id": fb.id, "stream": fb.stream, "label": fb.label, "samples": samples, "retrain": retrain,
            "in_flight": in_flight, "alerted": alerted}


def feedback_report(entries: list[dict[str, Any]]) -> dict[str, int]:
    """The operator's verdicts on the detector, counted from the feedback records: ``false_alerts``
    ("normal" on a window an alert covered), ``normal_windows`` (every "normal"), ``incidents``
    (every "anomaly"), ``caught`` / ``missed`` (an "anomaly" whose window an alert covered / did not).
    A record from before ``alerted`` was kept counts in the totals only.

    >>> feedback_report([{"label": "normal", "alerted": True}, {"label": "anomaly", "alerted": False},
    ...                  {"label": "anomaly", "alerted": True}, {"label": "anomaly"}])
    {'false_alerts': 1, 'normal_windows': 1, 'incidents': 3, 'caught': 1, 'missed': 1}
    """
    out = {"false_alerts": 0, "normal_windows": 0, "incidents": 0, "caught": 0, "missed": 0}
    for d in entries:
        alerted = d.get("alerted")
        if d.get("label") == "normal":
            out["normal_windows"] += 1
            out["false_alerts"] += alerted is True
        elif d.get("label") == "anomaly":
            out["incidents"] += 1
            out["caught"] += alerted is True
            out["missed"] += alerted is False
    return out


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
