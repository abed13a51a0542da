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

A sample a few noise widths off is common, so a moderate shift that persists (SKAB's flow faults: one
white-noise field of eight down 3-4 widths for 400 ticks) scored nothing sample by sample. The tail
therefore reads the larger of that statistic and the *sustained level* (:func:`sustained_statistic`):
per field a moving average of the normalised samples (half-life ``detect.level_halflife``, each sample
clipped to ``AVERAGE_CLIP``) against one ``SLOW_RATIO`` times slower (held while the stream alerts, so a
fault is not averaged away), scaled by one over that difference's root mean square over the training
history (:func:`average_gain`). A drift slower than the slow average cancels; a shift adds up.
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

#: The sustained level reads a fast moving average of the normalised samples against a slow one, this
#: many times slower (held while the stream alerts), so a drift slower than that cancels out.
SLOW_RATIO = 16.0

#: Normalised samples enter the moving averages clipped to this many noise widths: the averages
#: measure how long a level persists, and one spike of a thousand widths (the sample's own tail
#: scores it) must not hold them up for a hundred ticks.
AVERAGE_CLIP = 5.0


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


def average_alpha(halflife: float) -> float:
    """The per-tick weight of a moving average with this half-life in ticks (0: none)."""
    return 1.0 - 0.5 ** (1.0 / halflife) if halflife > 0 else 0.0


def advance_average(avg: np.ndarray, lx: np.ndarray, alpha: float) -> np.ndarray:
    """One tick of the moving average ``avg`` ``[..., F]`` of normalised samples ``lx``, each clipped to
    ``+-AVERAGE_CLIP`` (a missing field leaves its average).

    >>> advance_average(np.zeros(2), np.array([1000.0, np.nan]), 0.5).tolist()  # one spike moves it little
    [2.5, 0.0]
    """
    x = np.clip(np.nan_to_num(lx), -AVERAGE_CLIP, AVERAGE_CLIP)
    return np.where(np.isnan(lx), avg, avg + alpha * (x - avg))


def advance_averages(fast: np.ndarray, slow: np.ndarray, lx: np.ndarray, alpha: float,
                     hold: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One tick of the fast and the slow (``alpha / SLOW_RATIO``) moving averages ``[n, F]`` of
    :func:`advance_average`; the slow one stays where ``hold`` ``[n]`` (the stream alerts)."""
    ns = advance_average(slow, lx, alpha / SLOW_RATIO)
    return advance_average(fast, lx, alpha), ns if hold is None else np.where(hold[:, None], slow, ns)


def average_run(lx: np.ndarray, alpha: float, hold: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fast and slow moving averages of :func:`advance_average` along a run ``lx`` ``[n, L, F]``
    from 0 (the slow one held where ``hold`` ``[n, L]``): ``(fast - slow [n, L, F], fast [n, F], slow
    [n, F])``, the difference after each tick and both averages after the last."""
    n, L, F = lx.shape
    fast, slow = np.zeros((n, F)), np.zeros((n, F))
    out = np.empty((n, L, F))
    for t in range(L):
        fast, slow = advance_averages(fast, slow, lx[:, t], alpha, None if hold is None else hold[:, t])
        out[:, t] = fast - slow
    return out, fast, slow


def average_gain(avg: np.ndarray, ok: np.ndarray, alpha: float) -> np.ndarray:
    """Per stream and field ``[n, F]``, what scales the moving average to unit spread: one over its root
    mean square over the usable ticks ``ok`` ``[n, L]`` of a training run ``avg`` ``[n, L, F]``. The root
    mean square is floored at half what white noise of unit variance would give (``sqrt(a / (2 - a))``),
    so a field that barely moved in training is not read with an unbounded gain.

    >>> a = average_alpha(8.0)
    >>> rng = np.random.default_rng(0)
    >>> run = average_run(rng.standard_normal((1, 4000, 1)), a)[0]
    >>> g = average_gain(run, np.ones((1, 4000), bool), a)
    >>> bool(abs(g[0, 0] * np.sqrt(a / (2 - a)) - 1) < 0.15)  # white noise: about the theoretical gain
    True
    """
    sq = np.where(ok[..., None], np.nan_to_num(avg) ** 2, 0.0).sum(1)
    cnt = np.maximum(ok.sum(1), 1)[:, None]
    floor = 0.5 * np.sqrt(alpha / (2.0 - alpha))
    return 1.0 / np.maximum(np.sqrt(sq / cnt), floor)


def sustained_statistic(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(sum_j u_j^2, per-field u_j^2)`` of the scaled difference of the moving averages ``u`` ``[..., F]``
    (:func:`average_run`, :func:`average_gain`), each field alone. A sample three noise widths off is
    common; a hundred ticks averaging three widths off are not, and the difference's own spread in
    training says how rare its level is. The level tail reads the larger of this and the sample's
    statistic (:func:`larger`).

    >>> sustained_statistic(np.array([[3.0, np.nan]]))[0].tolist()
    [9.0]
    """
    su = np.nan_to_num(np.asarray(u, dtype=np.float64)) ** 2
    return su.sum(-1), su


def larger(stat: np.ndarray, shares: np.ndarray, stat2: np.ndarray, shares2: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray]:
    """Per row the larger of two ``(statistic [...], shares [..., F])``: one tail reads both, fitted to
    the larger of the two on the training history.

    >>> s, sh = larger(np.array([4.0, 1.0]), np.array([[4.0], [1.0]]), np.array([2.0, 9.0]), np.array([[2.0], [9.0]]))
    >>> s.tolist(), sh[:, 0].tolist()
    ([4.0, 9.0], [4.0, 9.0])
    """
    pick = stat2 > stat
    return np.where(pick, stat2, stat), np.where(pick[..., None], shares2, shares)


def combine(p_dynamics: np.ndarray, p_level: np.ndarray) -> np.ndarray:
    """The tail probability of a tick from its two tails: ``min(1, TAILS * min(p1, p2))``.

    >>> combine(np.array([1e-3, 1.0, 0.4]), np.array([1.0, 1e-6, 0.9])).tolist()
    [0.001, 1e-06, 0.4]
    """
    return np.minimum(1.0, TAILS * np.minimum(p_dynamics, p_level))
