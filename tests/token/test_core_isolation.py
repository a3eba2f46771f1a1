"""The token core loads no web, database or CLI library (checked in a fresh interpreter)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

FORBIDDEN = ("sqlalchemy", "starlette", "httpx", "typer", "rich")
# What the core may load besides the standard library: itself, its crypto dependencies and
# their native bindings, plus the coverage tracer when the suite runs under coverage.
ALLOWED_THIRD_PARTY = {
    "coupon",
    "cryptography",
    "_openssl",
    "nacl",
    "_sodium",
    "cffi",
    "_cffi_backend",
}
# _distutils_hack: setuptools' distutils-precedence.pth, loaded at interpreter start in any
# venv that has setuptools (grpcio-tools needs it), whatever the code under test imports.
TOOLING = {
    "coverage",
    "_virtualenv",
    "__editable___coupon_authority_0_1_0_finder",
    "_distutils_hack",
}


def loaded_after_import(module: str) -> set[str]:
    """The top-level names of every module loaded by importing ``module`` in a new interpreter."""
    code = (
        "import importlib, json, sys\n"
        f"importlib.import_module({module!r})\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded: list[str] = json.loads(result.stdout)
    return set(loaded)


CORES = ["coupon.token", "coupon.token.hazmat", "coupon.errors", "coupon", "coupon.ledger"]


@pytest.fixture(scope="module", params=CORES)
def loaded(request: pytest.FixtureRequest) -> tuple[str, set[str]]:
    """The module imported and what importing it loaded."""
    module: str = request.param
    return module, loaded_after_import(module)


class TestCoreIsolation:
    """Importing the core in a fresh interpreter."""

    def test_probe_works(self, loaded: tuple[str, set[str]]) -> None:
        """The probe really imported the core (so an empty answer cannot pass)."""
        module, names = loaded
        assert module.split(".")[0] in names
        assert "json" in names

    def test_no_service_libraries(self, loaded: tuple[str, set[str]]) -> None:
        """None of sqlalchemy, starlette, httpx, typer or rich is loaded."""
        _, names = loaded
        assert names.isdisjoint(FORBIDDEN)

    def test_only_stdlib_and_crypto(self, loaded: tuple[str, set[str]]) -> None:
        """Nothing beyond the standard library and the crypto libraries is loaded."""
        _, names = loaded
        extra = names - set(sys.stdlib_module_names) - ALLOWED_THIRD_PARTY - TOOLING
        assert extra <= {"__main__"}
