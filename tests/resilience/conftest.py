"""Shared helpers for the resilience tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from coupon.resilience import set_testing


@pytest.fixture
def testing_mode() -> Iterator[None]:
    """Turn stamina-style testing mode on for one test."""
    set_testing(True)
    yield
    set_testing(False)
