"""sentinel.runtime.memory: the mmap-threshold pin is set on glibc, and the environment can turn it off."""

from __future__ import annotations

import pytest

from sentinel.runtime import memory


def test_the_pin_is_set_where_glibc_is_and_off_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert memory.pin_mmap_threshold() is (memory._libc() is not None)
    monkeypatch.setenv("SENTINEL_MALLOC_PIN", "0")
    assert memory.pin_mmap_threshold() is False
