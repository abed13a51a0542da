"""The expected value and its band, in the sensor's own units (pure numpy, no torch, no I/O).

The score is a tail probability of a tick's error ``err``, the mean over the observed fields
of each field's error (:func:`sentinel.model.cells.tick_errors`)::

    field_err = pw * (x_n - pred)^2 + rest

where ``x_n = (x - base) / scale`` is the sample normalised against the stream's baseline,
``pred`` the one-step prediction the model made from its previous state, ``pw`` the model's
``prediction_weight`` and ``rest`` everything else (the window's reconstruction error and the
level term). Each field's share of the threshold ``thr`` (on that mean) is ``thr`` itself:
if every field's error is at most ``thr`` their mean is too, so a tick whose every value lies
inside its band is below the threshold.

The **expected value** is the prediction in sensor units, ``base + scale * pred``; the **band**
is the set of values whose field error stays within the share, holding ``rest`` at its value
for this tick::

    half = scale * sqrt(max(thr - rest, 0) / pw)       lower, upper = expected -/+ half

so for the observed value, *outside the band* ⇔ *its field error is above its share of the
threshold* (:func:`outside` states it; ``tests/unit/test_band.py`` pins it). When ``rest``
alone exceeds the share (a level never seen in training, a reconstruction far off) the band
shrinks to the expected value. No band (NaN) where there is no threshold yet or the score
has no prediction term (``pw = 0``).

This module is the one place that inverts the error: when the error's formula changes, this
changes with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Band:
    """Per row and field (``[n, F]`` float64): expected value, lower and upper edge of its band."""

    expected: np.ndarray
    lower: np.ndarray
    upper: np.ndarray


def scale_of(std: np.ndarray, spread: np.ndarray, baseline_alpha: float) -> np.ndarray:
    """The normalisation scale of a tick, as the bank uses it: the training std, or with a moving
    baseline the larger of it and the recent spread's root (``spread`` is a mean square)."""
    std = np.asarray(std, dtype=np.float64)
    if baseline_alpha <= 0:
        return std
    return np.maximum(std, np.sqrt(np.maximum(np.asarray(spread, dtype=np.float64), 0.0)))


def expected_band(values: np.ndarray, pred: np.ndarray, base: np.ndarray, scale: np.ndarray,
                  field_err: np.ndarray, threshold: np.ndarray, prediction_weight: float) -> Band:
    """The band of one tick of ``n`` streams (see the module docstring).

    ``values`` ``[n, F]`` raw samples (NaN = missing), ``pred`` the normalised one-step prediction
    made before them, ``base`` and ``scale`` the normalisation they were scored with, ``field_err``
    the per-field error the score used, ``threshold`` ``[n]`` the threshold on the mean error.

    >>> b = expected_band(np.array([[12.0]]), np.array([[0.5]]), np.array([[10.0]]), np.array([[2.0]]),
    ...                   np.array([[1.25]]), np.array([2.0]), 1.0)
    >>> [float(b.expected[0, 0]), float(b.lower[0, 0]), float(b.upper[0, 0])]
    [11.0, 9.0, 13.0]
    """
    v = np.asarray(values, dtype=np.float64)
    p = np.asarray(pred, dtype=np.float64)
    b = np.asarray(base, dtype=np.float64)
    s = np.asarray(scale, dtype=np.float64)
    fe = np.asarray(field_err, dtype=np.float64)
    thr = np.asarray(threshold, dtype=np.float64)[:, None]
    expected = b + s * p
    if prediction_weight <= 0:
        nan = np.full_like(expected, np.nan)
        return Band(expected, nan, nan.copy())
    xn = (v - b) / s
    pe = np.where(np.isnan(v), 0.0, (xn - p) ** 2)
    rest = np.maximum(fe - prediction_weight * pe, 0.0)
    with np.errstate(invalid="ignore"):
        half = s * np.sqrt(np.maximum(thr - rest, 0.0) / prediction_weight)
    half = np.where(np.isfinite(thr), half, np.nan)
    return Band(expected, expected - half, expected + half)


def outside(values: np.ndarray, band: Band) -> np.ndarray:
    """Where a value lies outside its band (False where missing or without a band)."""
    v = np.asarray(values, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return (v < band.lower) | (v > band.upper)


def describe(name: str, value: float, lower: float, upper: float) -> str:
    """``Pressure 2.13 (expected 0.05–0.09)``: a value against its band, in words.

    >>> describe("Pressure", 2.1312, 0.0504, 0.0897)
    'Pressure 2.13 (expected 0.05–0.09)'
    >>> describe("temp", 21.5, float("nan"), float("nan"))
    'temp 21.5'
    """
    text = f"{name} {_num(value)}"
    if np.isfinite(lower) and np.isfinite(upper):
        text += f" (expected {_num(lower)}–{_num(upper)})"
    return text


def _num(x: float) -> str:
    """Three significant digits, but never fewer decimals than two for small numbers."""
    if not np.isfinite(x):
        return "nan"
    a = abs(x)
    if a >= 100:
        return f"{x:.0f}" if a >= 1000 else f"{x:.1f}"
    if a >= 10:
        return f"{x:.3g}"
    return f"{x:.2f}" if a >= 0.01 or a == 0 else f"{x:.2g}"
