"""Counter-based randomness: every value is a hash of ``(seed, salt, parts...)``, never a generator's state."""

from __future__ import annotations

import math

import numpy as np

_TWO_PI = 2.0 * math.pi

_M1, _M2, _GOLD = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(0x9E3779B97F4A7C15)
_MASK = (1 << 64) - 1


def _as_u64(x: object) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype == np.uint64:
        return a
    return a.astype(np.int64).astype(np.uint64)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a bijective avalanche of 64-bit words (wrap-around arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def _hash(seed: int, salt: int, *parts: object) -> np.ndarray:
    """uint64 hash of ``(seed, salt, *parts)``; parts broadcast like numpy arrays."""
    with np.errstate(over="ignore"):
        h = _mix(np.asarray((seed & _MASK) ^ (salt * 0x632BE59BD9B4E019 & _MASK), dtype=np.uint64))
        for p in parts:
            h = _mix(h + _as_u64(p) * _GOLD + _GOLD)
    return np.asarray(h)


def _uniform(seed: int, salt: int, *parts: object) -> np.ndarray:
    """Uniform in [0, 1), float64, one per broadcast element."""
    return (_hash(seed, salt, *parts) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _normal(seed: int, salt: int, *parts: object) -> np.ndarray:
    """Standard normal by Box-Muller from two independent hashes."""
    h = _hash(seed, salt, *parts)
    with np.errstate(over="ignore"):
        h2 = _mix(h + _GOLD)
    u1, u2 = ((x >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53)) for x in (h, h2))
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(_TWO_PI * u2)
