"""How unlikely a sample's *level* is, on its own tail (pure numpy, no torch, no I/O).

The tick error (:func:`sentinel.model.cells.tick_errors`) measures surprise in the dynamics,
plus a level term. Its threshold is DSPOT's: a tail over the error's moving average of the
last ``depth`` normal ticks. That moving average follows whatever the error does while no
alert fires, so a stream that glides to a level far outside its training, slowly enough, is
absorbed: measured on SKAB (``other/1.csv``: the temperature slides 6 training sd in 300
ticks) the threshold climbed from 4 to 32 with the error and nothing alerted.

The level statistic has a distribution that does not drift under normal operation: the
sample is normalised against the stream's slow baseline and scale (which do follow a drift
of normal operation, at ``model.baseline_halflife``), so on normal data it is a sum of
squares of order one per field. Its tail is fitted once, at training, to the statistic on
the stream's training history (SPOT without a moving average: :class:`~.thresholds.SpotThresholds`
with ``depth=0``), and then held until the next training: learning new peaks as SPOT does would
follow a glide just as the moving average does. The engine scores each tick on the
rarer of the two tails (:func:`combine`).

The statistic is Hotelling's distance split into one share per field, each never less than the
field's own square (:func:`sentinel.model.cells.level_input`): ``sum_j max(x_j^2, x_j (P x)_j)``,
``P`` the precision of the stream's normalised training inputs. The shares say which field drove it.
"""

from __future__ import annotations

import numpy as np

#: Factor on the combined tail probability ``min(p1, p2)``. 1, not the Bonferroni 2: halving every
#: dynamics-only score's rarity cost the simulator's frequency-change and correlation-break events
#: (event recall 6/6 -> 4/6 and 5/6, NAB 84.6 -> 78.5; ``benchmarks/quality.py --no-real``) while
#: the score's measured miscalibration on real data is far larger than 2x either way.
TAILS = 1.0

#: The level statistic's tail is fitted to the rows that also fitted the stream's normalisers and
#: precision, so those rows flatter it; their statistic is scaled by this before the fit. Measured
#: with the tail fixed at training (``benchmarks/quality.py --no-real``; ``benchmarks/skab.py``, 3
#: seeds; without the level tail: simulator NAB 84.6, public NAB 91.9, SKAB F1 0.601 / FAR 5.5 %):
#: at 2, NAB 87.8 / 91.9 and SKAB 0.680 / 14.6 %; at 3, NAB 87.4 / 91.9 and SKAB 0.672 / 8.0 %.
#: (With its peaks learned as SPOT does, it followed a glide too: at 1 the simulator's false
#: alarms went 2 -> 5 and the public NAB to 86.3; at 4 SKAB gained nothing.)
CALIBRATION_INFLATE = 3.0

#: The least scale of the level tail, in the statistic's units (squared normalised distances). A
#: field that never moved in training (a status flag, a quantised sensor that held its value) fits a
#: tail of no width, and the smallest later change would score as impossible; with this floor a level
#: must move by several of its normalisation units before the level tail alone can alert.
SIGMA_FLOOR = 1.0


def level_shares(lx: np.ndarray, prec: np.ndarray | None) -> np.ndarray:
    """Per field ``max(x_j^2, x_j (P x)_j)`` of normalised samples ``lx`` ``[..., F]`` (NaN = missing:
    0, and at the baseline for the other fields) with precisions ``prec`` ``[..., F, F]`` (None: the
    fields alone).

    >>> p = np.array([[[1.0, -0.9], [-0.9, 1.0]]]) / 0.19  # two fields that move together
    >>> s = level_shares(np.array([[0.9, -0.9]]), p)  # each within range, the relation broken
    >>> bool(s.min() > 9 * 0.81)  # each share 8.1, ten times its own square
    True
    >>> level_shares(np.array([[2.0, np.nan]]), None).tolist()
    [[4.0, 0.0]]
    """
    x = np.nan_to_num(np.asarray(lx, dtype=np.float64))
    own = x * x
    if prec is None:
        return own
    share = x * (np.asarray(prec, dtype=np.float64) @ x[..., None])[..., 0]
    return np.maximum(own, share)


def level_statistic(lx: np.ndarray, prec: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``(statistic [...], per-field shares [..., F])`` of :func:`level_shares` (see the module)."""
    s = level_shares(lx, prec)
    return s.sum(-1), s


def combine(p_dynamics: np.ndarray, p_level: np.ndarray) -> np.ndarray:
    """The tail probability of a tick from its two tails: ``min(1, TAILS * min(p1, p2))``.

    >>> combine(np.array([1e-3, 1.0, 0.4]), np.array([1.0, 1e-6, 0.9])).tolist()
    [0.001, 1e-06, 0.4]
    """
    return np.minimum(1.0, TAILS * np.minimum(p_dynamics, p_level))
