"""``sentinel train --publish``: one model version per partition in the object store (see :mod:`.models`)."""

from __future__ import annotations

from typing import Any


def apply_published(engine: Any, data: bytes, now: float) -> int:
    """On the engine thread: apply one partition's published model; returns the streams updated."""
    raise NotImplementedError
