"""The public surface of ``coupon.policy``: a sorted ``__all__`` and a clean import."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from types import ModuleType

import coupon.policy

_SCREAMING = re.compile(r"[A-Z0-9_]+")


def isort_key(name: str) -> tuple[int, str]:
    """Ruff's RUF022 order: CONSTANTS, then Classes, then everything else."""
    if _SCREAMING.fullmatch(name):
        return (0, name)
    return (1, name) if name[:1].isupper() else (2, name)


def public_names(module: ModuleType) -> set[str]:
    """Names defined by the package or its private modules (not imported helpers)."""
    names = set()
    for name, value in vars(module).items():
        if name.startswith("_") or isinstance(value, ModuleType):
            continue
        is_definition = isinstance(value, type) or inspect.isfunction(value)
        if is_definition and not value.__module__.startswith(module.__name__):
            continue  # an imported helper class or function
        names.add(name)
    return names


class TestExports:
    def test_all_is_the_public_names(self) -> None:
        """``__all__`` names every public name and nothing else."""
        assert set(coupon.policy.__all__) == public_names(coupon.policy)

    def test_all_is_sorted(self) -> None:
        """``__all__`` is sorted isort-style and has no duplicates."""
        names = coupon.policy.__all__
        assert names == sorted(set(names), key=isort_key)

    def test_import_stays_in_its_layer(self) -> None:
        """Importing the policy layer loads no storage, service or HTTP code."""
        code = (
            "import sys, coupon.policy\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('sqlalchemy', 'starlette', 'fastapi', 'httpx', 'redis')\n"
            "       or m.startswith(('coupon.storage', 'coupon.authority', 'coupon.cli'))]\n"
            "print(bad)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        assert out.stdout.strip() == "[]"
