"""The history ring's compact layout: what a stream's recent samples cost to keep.

Per slot, ``cap`` entries of (timestamp, values ``[F]``, flag) in the group's per-slot arrays:

- ``hist_t`` ``[cap]`` uint32: the timestamp as a count of ``1 / hist_res`` seconds after the
  slot's ``hist_base`` (float64 seconds, a whole second). ``hist_res`` starts at 1000 (1 ms);
  a stream whose history spans more than the 49.7 days that 2^32 ms hold is re-encoded at 1 s
  (then 1000 s). When a new timestamp would not fit, the slot is rebased on its oldest entry.
- ``hist_v`` ``[cap, F]``: float32 values, or (``streams.history_dtype: float16``) float16
  residuals ``(v - hist_ref) * 2**-hist_exp`` per field. ``hist_ref`` (float64) starts as the
  field's first value and is re-centred on the median of the ring where the residuals' running
  mean (``hist_m1, hist_m2, hist_cnt``) has moved more than RECENTRE of their spreads off it,
  checked at every wrap and at 2, 4, 8, ... entries before the first: a residual stays about the
  span of the stream's recent history, so its float16 rounding (2^-11 of it) is a small fraction
  of the spread training normalises by. ``hist_exp`` (a power of two per field) grows when a
  residual would leave float16's range.
- ``hist_flag`` ``[cap]`` bool (the entry fell in an alert), ``hist_n`` the entries ever written.

Entry bytes at F = 1: 4 + 2 + 1 = 7 (float16 values) or 9, where they were 8 + 4 + 1 = 13.
:func:`encode_rows` writes whole rows from float64 times and values (a warm-up from a source's
history, a checkpoint of the older layout); :func:`decode` reads entries back.
"""

from __future__ import annotations

import warnings

import numpy as np

from ...slots import Spec

U32 = float(2**32 - 1)
RESOLUTIONS = (1000.0, 1.0, 0.001)  # counts per second of hist_t, finest first
F16_LIMIT = 16384.0  # residuals are kept below this (float16's largest finite is 65504)
RECENTRE = 4.0  # float16: re-centre at a wrap when the residuals' mean is this many of their spreads off


def spec(cap: int, F: int, values: str) -> Spec:
    vdt = np.float16 if values == "float16" else np.float32
    return {
        "hist_t": ((cap,), np.uint32, 0), "hist_base": ((), np.float64, np.nan), "hist_res": ((), np.float64, 1000.0),
        "hist_v": ((cap, F), vdt, np.nan), "hist_ref": ((F,), np.float64, np.nan), "hist_exp": ((F,), np.int8, 0),
        "hist_flag": ((cap,), np.bool_, False),
        **({"hist_m1": ((F,), np.float64, 0.0), "hist_m2": ((F,), np.float64, 0.0), "hist_cnt": ((F,), np.int32, 0)}
           if values == "float16" else {}),
    }


def _f16(a: dict[str, np.ndarray]) -> bool:
    return bool(a["hist_v"].dtype == np.float16)


def decode(a: dict[str, np.ndarray], slots: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Timestamps (float64 s) and values (float32) at ring positions ``idx`` ``[n, L]`` of ``slots`` ``[n]``."""
    s2 = slots[:, None]
    ts = a["hist_base"][slots][:, None] + a["hist_t"][s2, idx] / a["hist_res"][slots][:, None]
    raw = a["hist_v"][s2, idx]
    if not _f16(a):
        return ts, raw
    scale = np.ldexp(1.0, a["hist_exp"][slots].astype(np.int64))[:, None, :]
    return ts, (raw.astype(np.float64) * scale + a["hist_ref"][slots][:, None, :]).astype(np.float32)


def _res_for(span: np.ndarray) -> np.ndarray:
    """The finest resolution at which ``span`` seconds fit in hist_t."""
    res = np.full(span.shape, RESOLUTIONS[-1])
    for r in reversed(RESOLUTIONS):
        res = np.where(span * r <= U32 - 1, r, res)
    return res


def _need(r: np.ndarray) -> np.ndarray:
    """Per row and field of residuals ``r`` ``[n, L, F]``: the power of two that keeps them below F16_LIMIT
    (and tiny ones above float16's subnormals); 0 where a row holds none."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        big = np.nanmax(np.abs(r), axis=1, initial=0.0)
    return np.where(big > 0, np.clip(np.ceil(np.log2(np.maximum(big, 1e-300) / F16_LIMIT)), -100, 100), 0).astype(np.int64)


def _residuals(a: dict[str, np.ndarray], slots: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Float16 residuals of ``v`` ``[n, L, F]`` against ``slots``' references at their present scale."""
    r = v - a["hist_ref"][slots][:, None, :]
    return (r * np.ldexp(1.0, -a["hist_exp"][slots].astype(np.int64))[:, None, :]).astype(np.float16)


def _rows(a: dict[str, np.ndarray], slots: np.ndarray, v: np.ndarray, L: int) -> None:
    """Encode whole rows ``v`` ``[n, L, F]`` (float64) of ``slots`` at a fresh scale."""
    a["hist_exp"][slots] = _need(v - a["hist_ref"][slots][:, None, :])
    a["hist_v"][slots, :L] = _residuals(a, slots, v)


def write(a: dict[str, np.ndarray], cap: int, slots: np.ndarray, pos: np.ndarray, ts: np.ndarray,
          v: np.ndarray) -> None:
    """Write one entry per slot (``slots`` unique) at ring position ``pos``; ``v`` ``[n, F]`` float."""
    base = a["hist_base"][slots]
    fresh = np.isnan(base)
    if fresh.any():
        a["hist_base"][slots[fresh]] = np.floor(ts[fresh])
        a["hist_res"][slots[fresh]] = RESOLUTIONS[0]
    off = (ts - a["hist_base"][slots]) * a["hist_res"][slots]
    out = ~(off <= U32 - 1)
    if out.any():
        rebase(a, cap, slots[out], ts[out])
        off = (ts - a["hist_base"][slots]) * a["hist_res"][slots]
    a["hist_t"][slots, pos] = np.rint(np.clip(off, 0, U32 - 1)).astype(np.uint32)
    if not _f16(a):
        a["hist_v"][slots, pos] = v
        return
    v = np.asarray(v, dtype=np.float64)
    ref = a["hist_ref"][slots]
    first = np.isnan(ref) & ~np.isnan(v)
    if first.any():
        ref = np.where(first, v, ref)
        a["hist_ref"][slots] = ref
    need = _need(v[:, None, :] - ref[:, None, :])
    exp = a["hist_exp"][slots].astype(np.int64)
    up = (need > exp).any(1)
    if up.any():  # a residual beyond float16's range: the row's entries rescaled by a power of two
        su, k = slots[up], np.maximum(need[up], exp[up])
        a["hist_v"][su] = (a["hist_v"][su].astype(np.float64) * np.ldexp(1.0, exp[up] - k)[:, None, :]
                           ).astype(np.float16)
        a["hist_exp"][su] = k
    a["hist_v"][slots, pos] = _residuals(a, slots, v[:, None, :])[:, 0]
    r = np.nan_to_num(v - a["hist_ref"][slots])  # residual moments since the last wrap (see wrapped)
    a["hist_m1"][slots] += r
    a["hist_m2"][slots] += r * r
    a["hist_cnt"][slots] += ~np.isnan(v)


def wrapped(a: dict[str, np.ndarray], cap: int, slots: np.ndarray, ts: np.ndarray) -> None:
    """At a wrap of ``slots``' rings (and at each power of two of entries before the first, so a stream
    whose first value lies far from the rest is re-centred within a few samples): a ring coarsened to
    seconds by a long gap goes back to milliseconds when its span allows; float16 residuals whose
    mean lies more than RECENTRE spreads off their reference are re-centred. Both are rare, so a
    fleet whose rings all wrap in one round pays for a few rows, not for every ring."""
    coarse = a["hist_res"][slots] < RESOLUTIONS[0]
    if coarse.any():
        rebase(a, cap, slots[coarse], ts[coarse])
    if not _f16(a):
        return
    cnt = np.maximum(a["hist_cnt"][slots], 1)
    m1, m2 = a["hist_m1"][slots] / cnt, a["hist_m2"][slots] / cnt
    off = m1 * m1 > RECENTRE**2 * np.maximum(m2 - m1 * m1, 0.0)
    a["hist_m1"][slots] = a["hist_m2"][slots] = 0.0
    a["hist_cnt"][slots] = 0
    if off.any():
        recentre(a, cap, slots[off.any(1)])


def recentre(a: dict[str, np.ndarray], cap: int, slots: np.ndarray) -> None:
    """Float16 values: re-centre ``slots``' residuals on the median of their ring (an early outlier, a
    stream's first value far from the rest, does not pull it)."""
    if not _f16(a) or len(slots) == 0:
        return
    scale = np.ldexp(1.0, a["hist_exp"][slots].astype(np.int64))[:, None, :]
    v64 = a["hist_v"][slots].astype(np.float64) * scale + a["hist_ref"][slots][:, None, :]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mid = np.nanmedian(v64, axis=1)
    a["hist_ref"][slots] = np.where(np.isnan(mid), a["hist_ref"][slots], mid)
    _rows(a, slots, v64, cap)


def rebase(a: dict[str, np.ndarray], cap: int, slots: np.ndarray, newest: np.ndarray) -> None:
    """Move ``slots``' base to their oldest entry (coarsening the resolution if the span needs it)."""
    idx = np.broadcast_to(np.arange(cap), (len(slots), cap))
    ts, _v = decode(a, slots, idx)
    n = np.minimum(a["hist_n"][slots], cap)
    valid = np.arange(cap)[None, :] < n[:, None]
    oldest = np.where(valid, ts, np.inf).min(1)
    oldest = np.floor(np.fmin(oldest, newest))
    res = _res_for(newest - oldest)
    a["hist_base"][slots], a["hist_res"][slots] = oldest, res
    a["hist_t"][slots] = np.rint(np.clip((np.where(valid, ts, oldest[:, None]) - oldest[:, None]) * res[:, None],
                                         0, U32 - 1)).astype(np.uint32)


def encode_rows(a: dict[str, np.ndarray], slots: np.ndarray, ts: np.ndarray, v: np.ndarray) -> None:
    """Write whole rows: ``ts`` ``[n, L]`` float64 (NaN = no entry), ``v`` ``[n, L, F]``, into positions 0..L-1."""
    L = ts.shape[1]
    lo = np.nanmin(np.where(np.isnan(ts), np.inf, ts), axis=1) if L else np.zeros(len(slots))
    hi = np.nanmax(np.where(np.isnan(ts), -np.inf, ts), axis=1) if L else np.zeros(len(slots))
    empty = ~np.isfinite(lo)
    base = np.where(empty, np.nan, np.floor(np.where(empty, 0.0, lo)))
    res = _res_for(np.where(empty, 0.0, hi - np.where(empty, 0.0, base)))
    a["hist_base"][slots], a["hist_res"][slots] = base, res
    off = np.nan_to_num((ts - np.nan_to_num(base)[:, None]) * res[:, None])
    a["hist_t"][slots, :L] = np.rint(np.clip(off, 0, U32 - 1)).astype(np.uint32)
    if not _f16(a):
        a["hist_v"][slots, :L] = v
        return
    v64 = np.asarray(v, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mid = np.nanmedian(v64, axis=1) if L else np.full((len(slots), v.shape[-1]), np.nan)
    a["hist_ref"][slots] = mid
    _rows(a, slots, v64, L)
    a["hist_m1"][slots] = a["hist_m2"][slots] = 0.0
    a["hist_cnt"][slots] = 0
