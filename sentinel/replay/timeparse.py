"""Timestamps as files carry them: ISO 8601 (with or without zone), epoch numbers, or a strptime format.

Naive times are UTC. Epoch numbers are seconds, milliseconds, microseconds or
nanoseconds, told apart by magnitude once per column (:func:`epoch_unit`), so a
column never mixes units.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

# Largest plausible epoch value per unit: 1e11 s is the year 5138, so anything larger is ms, ...
EPOCH_UNITS: tuple[tuple[str, float, float], ...] = (
    ("s", 1e11, 1.0), ("ms", 1e14, 1e-3), ("us", 1e17, 1e-6), ("ns", math.inf, 1e-9),
)
_FRACTION = re.compile(r"(\.\d{6})\d+")  # Python parses at most 6 fractional digits (InfluxDB writes 9)


def epoch_unit(values: Iterable[float]) -> tuple[str, float]:
    """``(unit, seconds per unit)`` from the magnitude of a column's first numbers (their median)."""
    xs = sorted(abs(x) for x in values if math.isfinite(x))
    if not xs:
        return "s", 1.0
    mid = xs[len(xs) // 2]
    for name, top, scale in EPOCH_UNITS:
        if mid < top:
            return name, scale
    return "ns", 1e-9  # pragma: no cover - the last bound is infinite


def parse_iso(text: str) -> float:
    """ISO 8601 (``Z``, offsets, a space separator, up to 9 fractional digits; naive = UTC) -> epoch s."""
    t = _FRACTION.sub(r"\1", text.strip())
    dt = datetime.fromisoformat(t)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def parse_timestamp(text: str, scale: float = 1.0) -> float:
    """ISO 8601 or an epoch number (times ``scale`` seconds) -> epoch seconds. Raises ValueError."""
    t = text.strip()
    if not t:
        raise ValueError("empty timestamp")
    try:
        x = float(t)
    except ValueError:
        pass
    else:
        if not math.isfinite(x):
            raise ValueError("non-finite timestamp")
        return x * scale
    return parse_iso(t)


def make_parser(samples: list[str], time_format: str | None = None, unit: str | None = None
                ) -> tuple[Callable[[str], float], str]:
    """A parser for one time column and a description of what it reads (for messages).

    ``samples`` are the column's first values: when they are numbers, the epoch unit is
    taken from their magnitude (or ``unit``: s, ms, us, ns).
    """
    if time_format:
        def strp(text: str) -> float:
            dt = datetime.strptime(text.strip(), time_format)
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=UTC)
            return dt.timestamp()
        return strp, f"format {time_format!r}"
    nums = []
    for s in samples:
        try:
            nums.append(float(s))
        except ValueError:
            continue
    if unit is not None:
        scales = {name: scale for name, _top, scale in EPOCH_UNITS}
        if unit not in scales:
            raise ValueError(f"unknown epoch unit {unit!r} (s, ms, us, ns)")
        name, scale = unit, scales[unit]
    else:
        name, scale = epoch_unit(nums)
    if nums and len(nums) * 2 >= len(samples):
        return (lambda text: parse_timestamp(text, scale)), f"epoch {name}"
    return (lambda text: parse_timestamp(text, scale)), "ISO 8601"
