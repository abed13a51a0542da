"""The engine: one synchronous code path from samples to scores and alert transitions.

``sentinel run`` and ``sentinel replay`` both drive an :class:`Engine`; only the
clock differs (wall time vs the file's timestamps). The engine owns, per group of
streams with the same field count: a :class:`~sentinel.model.bank.Bank`, a
threshold object, an :class:`~sentinel.alerts.state.AlertMachine` and bounded
per-stream history buffers, all indexed by the same slot. It does no I/O: training
is handed out as :class:`~sentinel.model.train.TrainJob` objects
(:meth:`Engine.due_training`) and results come back through
:meth:`Engine.apply_training`, so the daemon can train in another process and
replay can train inline.

One job per file::

    group.py     Group: every per-slot store of the streams with F fields (bank, thresholds,
                 alert machine, per-slot arrays, history ring)
    ring.py      the history ring's compact layout (uint32 ms offsets, float32 or float16 values)
    backfill.py  load_history: a source's history merged into warming streams, batched
    steps.py     the round's named steps: validate, gaps, history, model, score, stuck, alert, record
    training.py  due_training, make_job, apply_training, calibration_errors, alert levels
    snapshot.py  snapshot / restore
    fuzzy.py     FuzzySnapshot: the same snapshot copied in slot chunks between rounds (checkpoints)
    core.py      Engine: streams, process (the round), load_history, the read API
"""

from .core import REJECT_REASONS, SKIPPED, Engine, TickOutput
from .group import Group
from .steps import RELEARN_TICKS, STUCK_MIN
from .training import BURN_IN, MAX_INFLATE, calibration_errors, longest_runs, stream_seed, train_settings

__all__ = [
    "BURN_IN", "MAX_INFLATE", "REJECT_REASONS", "RELEARN_TICKS", "SKIPPED", "STUCK_MIN", "Engine", "Group", "TickOutput",
    "calibration_errors", "longest_runs", "stream_seed", "train_settings",
]
