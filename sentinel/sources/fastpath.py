"""The selector's fast path: one C-level regex validates and splits a line's numeric fields.

Both regexes are unambiguous on purpose (see ``_NUM``): any digit run can be matched one
way only, so a line that fails late fails in linear time.
"""

from __future__ import annotations

import re
from typing import Any

from ..lineprotocol import _U64_MAX

_RX_CACHE: dict[tuple[tuple[str, str], ...], re.Pattern[str]] = {}
_RX_KIND = {
    "f": r"(-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?)",  # unambiguous: see _NUM
    "i": r"(-?[0-9]{1,18})i",
    "u": r"([0-9]{1,19})u",
}


def _learn_layout(h: Any, text: str) -> None:
    """Remember a selected head's field layout (keys in written order and their kinds) as a regex.

    Only for heads whose stream is known (tagset mode) and layouts whose every value is
    numeric; the regex accepts a subset of what the full grammar accepts, so a line it
    does not match simply takes the general path.
    """
    if h.rx is not None or h.order is None:
        return
    layout = []
    for kv in text.split(","):
        k, _, v = kv.partition("=")
        c = v[-1:]
        layout.append((k, c if c in ("i", "u") else "f"))
    if len({k for k, _ in layout}) != len(layout):
        return
    lt = tuple(layout)
    rx = _RX_CACHE.get(lt)
    if rx is None:
        if len(_RX_CACHE) > 10_000:
            _RX_CACHE.clear()
        rx = _RX_CACHE[lt] = re.compile(",".join(re.escape(k) + "=" + _RX_KIND[kind] for k, kind in lt))
    keys = [k for k, _ in lt]
    perm = tuple(keys.index(f) if f in keys else -1 for f in h.order)
    if all(i < 0 for i in perm):
        return
    h.perm = None if perm == tuple(range(len(keys))) else perm
    h.rx = rx


_KEY = r'[^,=\s"\\]+'
# Unambiguous on purpose: ``[0-9]+\.?[0-9]*`` could split a digit run two ways, so a failing
# line of many fields backtracked 2^fields times (found by benchmarks/fuzz.py: one 80-field line hung).
_NUM = r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
_INT = r"(?:-?[0-9]{1,18}i|[0-9]{1,19}u)"
_KV = rf"{_KEY}=(?:{_NUM}|{_INT})"
_FIELDS_FAST = re.compile(rf"{_KV}(?:,{_KV})*", re.ASCII)


def _fast_fields(text: str) -> dict[str, float] | None:
    """``k=v,k=v`` with float/integer/unsigned values, as floats; None when the full scanner must decide
    (booleans, anything odd). One C-level regex validates the syntax; callers ensure no quotes or backslashes."""
    if _FIELDS_FAST.fullmatch(text) is None:
        return None
    fv: dict[str, float] = {}
    for kv in text.split(","):
        k, _, v = kv.partition("=")
        c = v[-1]
        if c == "i" or c == "u":
            f = float(int(v[:-1]))
            if c == "u" and int(v[:-1]) > _U64_MAX:
                return None
        else:
            f = float(v)
            if f - f != 0.0:
                return None
        fv[k] = f
    return fv


