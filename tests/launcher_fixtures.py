"""Fixtures that start real ``coupon up`` processes (a pytest plugin, loaded by tests/conftest.py).

Shared by every suite that runs the Authority as a process (services, OIDC...), so the
launch and clean-up rules are written once; see :class:`tests.services.harness.Launcher`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.services.harness import Launcher


@pytest.fixture
def launcher(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Launcher]:
    """Start Authority processes that live for one test."""
    launch = Launcher(request, tmp_path)
    yield launch
    launch.close()


@pytest.fixture(scope="module")
def module_launcher(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Launcher]:
    """Start Authority processes that live for one test module."""
    launch = Launcher(request, tmp_path_factory.mktemp("authorities"))
    yield launch
    launch.close()
