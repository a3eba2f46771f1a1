"""The public names of each package are exactly its sorted ``__all__`` (httpx style)."""

from __future__ import annotations
import __future__

import re
from types import ModuleType

import pytest

import coupon
import coupon.errors
import coupon.gateway
import coupon.grpc_api
import coupon.idempotency
import coupon.keys
import coupon.ledger
import coupon.ledger_service
import coupon.middleware
import coupon.observability
import coupon.ratelimit
import coupon.resilience
import coupon.sdk
import coupon.token
import coupon.token.hazmat

MODULES = [
    coupon,
    coupon.token,
    coupon.token.hazmat,
    coupon.errors,
    coupon.gateway,
    coupon.grpc_api,
    coupon.idempotency,
    coupon.keys,
    coupon.ledger,
    coupon.ledger_service,
    coupon.middleware,
    coupon.observability,
    coupon.ratelimit,
    coupon.resilience,
    coupon.sdk,
]
# Dunder names that are part of the public API even though they start with "_".
INCLUDED_PRIVATE_MEMBERS = {"__version__"}
_SCREAMING = re.compile(r"[A-Z0-9_]+")


def is_imported_helper(module: ModuleType, value: object) -> bool:
    """Whether ``value`` is a name the module merely uses, not one it offers.

    Submodules, ``from __future__`` features and classes or functions defined outside the
    module's own tree (``typing.Any``, a sibling's ``ErrorCode``) are helpers. Everything
    defined in the module or in its private submodules, and every plain value (constants,
    type aliases), is public.
    """
    if isinstance(value, ModuleType | type(__future__.annotations)):
        return True
    if not hasattr(value, "__qualname__"):
        return False
    origin = getattr(value, "__module__", None)
    if not isinstance(origin, str):
        return False
    return origin != module.__name__ and not origin.startswith(module.__name__ + ".")


def public_names(module: ModuleType) -> set[str]:
    """The names a user of ``module`` may rely on."""
    return {
        name
        for name, value in vars(module).items()
        if (not name.startswith("_") or name in INCLUDED_PRIVATE_MEMBERS)
        and not is_imported_helper(module, value)
    }


def isort_key(name: str) -> tuple[int, str]:
    """Ruff's RUF022 "isort-style" order: CONSTANTS, then Classes, then everything else."""
    if _SCREAMING.fullmatch(name) and not name.startswith("_"):
        return (0, name)
    if name[:1].isupper():
        return (1, name)
    return (2, name)


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
class TestExportedMembers:
    """``__all__`` of every public package."""

    def test_all_is_the_public_names(self, module: ModuleType) -> None:
        """``__all__`` names every public name and nothing else."""
        assert set(module.__all__) == public_names(module)

    def test_all_is_sorted(self, module: ModuleType) -> None:
        """``__all__`` is sorted (constants, classes, then functions) and has no duplicates."""
        assert module.__all__ == sorted(set(module.__all__), key=isort_key)

    def test_every_name_resolves(self, module: ModuleType) -> None:
        """Every name in ``__all__`` exists in the module."""
        missing = [name for name in module.__all__ if not hasattr(module, name)]
        assert missing == []


class TestReExports:
    """The top-level package re-exports the token API unchanged."""

    def test_same_objects(self) -> None:
        """A name exported by both ``coupon`` and ``coupon.token`` is the very same object."""
        shared = set(coupon.__all__) & set(coupon.token.__all__)
        assert shared
        assert all(getattr(coupon, n) is getattr(coupon.token, n) for n in shared)

    def test_root_error(self) -> None:
        """``coupon.CouponError`` is the root of ``coupon.errors``."""
        assert coupon.CouponError is coupon.errors.CouponError
