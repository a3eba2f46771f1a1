"""SoftHSM2 fixtures: a real PKCS#11 token per test, in a private SoftHSM2 installation.

SoftHSM2 comes from Debian's ``softhsm2`` package (module ``/usr/lib/softhsm/libsofthsm2.so``,
or ``COUPON_TEST_PKCS11_MODULE``). Without it the tests that need it skip, except under
``CI=true``, where they fail. Nothing touches the system's token directory: each
:class:`SoftHsm` is a config file and a token directory of its own, named by
``SOFTHSM2_CONF`` (set for this process by the ``softhsm`` fixture, passed to subprocesses
through :meth:`SoftHsm.env`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest
from tests.redis_fixtures import unavailable

MODULE: Final = os.environ.get("COUPON_TEST_PKCS11_MODULE", "/usr/lib/softhsm/libsofthsm2.so")
SO_PIN: Final = "so-pin-0000"


@dataclass(frozen=True, slots=True)
class Token:
    """An initialised token: its label and user PIN."""

    label: str
    pin: str


class SoftHsm:
    """A SoftHSM2 installation of its own under ``root``: a config file and a token directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tokens = root / "tokens"
        self.conf = root / "softhsm2.conf"
        self.tokens.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(
            f"directories.tokendir = {self.tokens}\n"
            "objectstore.backend = file\n"
            "log.level = ERROR\n"
            "slots.removable = false\n"
        )

    def env(self) -> dict[str, str]:
        """What a subprocess needs to see these tokens."""
        return {"SOFTHSM2_CONF": str(self.conf)}

    def init_token(self, label: str | None = None, *, pin: str | None = None) -> Token:
        """Initialise a new token in a free slot (``softhsm2-util --init-token --free``)."""
        token = Token(label or f"t-{secrets.token_hex(4)}", pin or secrets.token_hex(8))
        subprocess.run(
            [
                "softhsm2-util",
                "--init-token",
                "--free",
                "--label",
                token.label,
                "--pin",
                token.pin,
                "--so-pin",
                SO_PIN,
            ],
            env={**os.environ, **self.env()},
            check=True,
            capture_output=True,
            timeout=30,
        )
        return token

    @contextlib.contextmanager
    def removed(self) -> Iterator[None]:
        """The tokens disappear (their directory moves away) until the block ends."""
        away = self.root / "tokens.removed"
        self.tokens.rename(away)
        self.tokens.mkdir()
        try:
            yield
        finally:
            shutil.rmtree(self.tokens)
            away.rename(self.tokens)


def require_softhsm() -> None:
    """Skip (fail under ``CI=true``) without the SoftHSM2 module and ``softhsm2-util``."""
    if not Path(MODULE).exists() or shutil.which("softhsm2-util") is None:
        unavailable(
            f"SoftHSM2 is not installed ({MODULE} and softhsm2-util): "
            "apt-get install softhsm2 (under CI=true this fails)"
        )


def refresh_module() -> None:
    """Make this process's PKCS#11 module see tokens created since it was initialised."""
    from coupon.keys._pkcs11 import _module

    module = _module(MODULE)
    if module._lib is not None:
        with module.lock:
            module.reinitialize()


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHsm]:
    """This process's SoftHSM2 installation (``SOFTHSM2_CONF`` points at it)."""
    require_softhsm()
    hsm = SoftHsm(tmp_path_factory.mktemp("softhsm"))
    previous = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(hsm.conf)
    yield hsm
    if previous is None:
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = previous


@pytest.fixture
def hsm_token(softhsm: SoftHsm) -> Token:
    """A fresh token in this process's installation, visible to its PKCS#11 module."""
    token = softhsm.init_token()
    refresh_module()
    return token
