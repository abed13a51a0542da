"""Shared building blocks of the config schema: strict models and duration parsing."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, None: 1.0}


def parse_duration(v: Any) -> float:
    """``"90s"``, ``"5m"``, ``"6h"``, ``"1d"``, ``"250ms"`` or a number of seconds -> seconds.

    >>> parse_duration("5m"), parse_duration(2), parse_duration("250ms")
    (300.0, 2.0, 0.25)
    """
    if isinstance(v, bool):
        raise ValueError("expected a duration like 30s, 5m, 6h")
    if isinstance(v, int | float):
        if v < 0:
            raise ValueError("duration must not be negative")
        return float(v)
    if isinstance(v, str):
        m = _DURATION.match(v)
        if m:
            return float(m.group(1)) * _UNIT[m.group(2)]
    raise ValueError(f"expected a duration like 30s, 5m, 6h, got {v!r}")


Duration = Annotated[float, BeforeValidator(parse_duration)]


class Strict(BaseModel):
    """Base of every config section: unknown keys are errors, and a loaded config is frozen.

    Change a copy instead (``cfg.model_copy(update={...})``); the running config changes
    only through a reload (:mod:`sentinel.runtime.reload`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
