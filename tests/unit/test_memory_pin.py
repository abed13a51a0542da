"""sentinel.runtime.memory: the mmap-threshold pin is off unless the environment asks, then set on glibc."""

from __future__ import annotations

import pytest

from sentinel.runtime import memory


def test_the_pin_is_off_unless_asked_and_set_where_glibc_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SENTINEL_MALLOC_PIN", raising=False)
    assert memory.pin_mmap_threshold() is False
    monkeypatch.setenv("SENTINEL_MALLOC_PIN", "1")
    assert memory.pin_mmap_threshold() is (memory._libc() is not None)
