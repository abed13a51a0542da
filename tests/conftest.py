"""Shared fixtures. Integration tests carry a marker per real server they need (DESIGN §12)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry


@pytest.fixture
def registry() -> CollectorRegistry:
    """A fresh metrics registry per test, so values are asserted exactly."""
    return CollectorRegistry()
