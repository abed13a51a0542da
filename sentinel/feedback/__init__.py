"""Operator feedback (DESIGN §6, issue 14): "this window of this stream was normal" or "this was a
missed anomaly".

- :mod:`.record` — :class:`Feedback`, parsed and validated from the API's JSON (no I/O);
- :mod:`.apply` — what a feedback does to the engine (on the engine thread): a *normal* window's
  history is no longer left out of training and the stream's retrain is scheduled, so its model
  and threshold learn it; an *anomaly* window is left out of training and recorded for the
  quality report. Every feedback is kept in ``Engine.feedback`` and so in the checkpoint;
- :mod:`.service` — the daemon's part: ``POST``/``GET /api/v1/feedback``, the counter;
- :mod:`.silences` — Alertmanager silences whose comment starts ``sentinel:normal`` read as
  normal feedback (``sinks.alertmanagers[].read_silences``).
"""

from .apply import apply_feedback
from .record import LABELS, Feedback, FeedbackError, parse_feedback

__all__ = ["LABELS", "Feedback", "FeedbackError", "apply_feedback", "parse_feedback"]
