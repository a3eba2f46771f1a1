"""Fixtures for OIDC callers: a real OpenID provider process and a real ``coupon up`` on it.

:class:`ProviderProcess` runs ``tests/oidc/provider.py`` (Authlib + Flask) on a free port, and
:class:`Login` walks its flows like a real client: the authorization-code flow with PKCE for a
person (logged in automatically with ``login_as``) and ``client_credentials`` for a service.
The Authority under test is a ``coupon up`` subprocess (``tests/services/harness.py``)
configured with the provider's issuer.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Self
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from tests.oidc.provider import AUTHORITY_CLIENT, REDIRECT_URI
from tests.services.harness import AuthorityProcess, Launcher

PROVIDER_SCRIPT: Final = Path(__file__).with_name("provider.py")
_READY: Final = "OpenID provider is up on "
#: Client secrets of the provider's service clients.
SECRETS: Final = {
    "orders-svc": "orders-secret",
    "issuer-svc": "issuer-secret",
    "other-app": "other-secret",
}
ROLE_MAP: Final = {
    "coupon-issuers": ["issuer"],
    "coupon-admins": ["admin"],
    "coupon-verifiers": ["verifier"],
}


class ProviderProcess:
    """One test OpenID provider subprocess (restartable on the same port)."""

    def __init__(self, log_dir: Path, *, issuer_path: str = "", port: int = 0) -> None:
        self.log_dir = log_dir
        self.issuer_path = issuer_path
        self.port = port
        self.issuer = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._runs = 0
        self.admin = httpx.Client(timeout=10.0)

    def start(self, timeout: float = 30.0) -> Self:
        """Launch and wait for the ready line."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        out_path = self.log_dir / f"provider-{self._runs}.stdout.log"
        err_path = self.log_dir / f"provider-{self._runs}.stderr.log"
        self._runs += 1
        argv = [sys.executable, str(PROVIDER_SCRIPT), "--port", str(self.port)]
        argv += ["--issuer-path", self.issuer_path]
        with out_path.open("wb") as out, err_path.open("wb") as err:
            self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        deadline = time.monotonic() + timeout
        while True:
            text = out_path.read_text(errors="replace")
            if _READY in text:
                break
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"the OpenID provider did not start:\n{err_path.read_text(errors='replace')}"
                )
            time.sleep(0.02)
        self.issuer = text.split(_READY, 1)[1].split()[0]
        self.port = int(urlsplit(self.issuer).port or 0)
        return self

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._proc = None

    def close(self) -> None:
        """Stop the process and close the admin client."""
        self.stop()
        self.admin.close()

    def configure(self, **settings: Any) -> dict[str, Any]:
        """Change the provider's behaviour (see ``/admin/config`` in provider.py)."""
        response = self.admin.post(f"{self.issuer}/admin/config", json=settings)
        response.raise_for_status()
        answer: dict[str, Any] = response.json()
        return answer

    def reset(self) -> None:
        """Back to the default behaviour."""
        self.configure(reset=True)

    def rotate(self, alg: str = "RS256", *, keep_old: bool = False) -> str:
        """A new signing key for ``alg`` (the old one leaves the JWKS unless ``keep_old``)."""
        response = self.admin.post(
            f"{self.issuer}/admin/rotate", json={"alg": alg, "keep_old": keep_old}
        )
        response.raise_for_status()
        kid: str = response.json()["kid"]
        return kid

    def stats(self) -> dict[str, int]:
        """Requests served so far: discovery, jwks, token."""
        answer: dict[str, int] = self.admin.get(f"{self.issuer}/admin/stats").json()
        return answer

    def jwks(self) -> dict[str, Any]:
        """The published key set."""
        answer: dict[str, Any] = self.admin.get(f"{self.issuer}/jwks").json()
        return answer


@dataclass(frozen=True, slots=True)
class Tokens:
    """What the token endpoint answered."""

    access_token: str
    id_token: str | None
    raw: Mapping[str, Any]


class Login:
    """A client of the provider: the code flow with PKCE, and client credentials."""

    def __init__(self, provider: ProviderProcess) -> None:
        self.provider = provider

    def person(self, user: str, *, client_id: str = AUTHORITY_CLIENT) -> Tokens:
        """Log ``user`` in through the authorization-code flow with PKCE (S256) and a nonce."""
        verifier = secrets.token_urlsafe(48)
        challenge = (
            base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            .rstrip(b"=")
            .decode()
        )
        state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
        with httpx.Client(timeout=10.0) as http:
            issuer = self.provider.issuer
            redirect = http.get(
                f"{issuer}/authorize",
                params={
                    "response_type": "code",
                    "client_id": client_id,
                    "redirect_uri": REDIRECT_URI,
                    "scope": "openid profile",
                    "state": state,
                    "nonce": nonce,
                    "code_challenge": challenge,
                    "code_challenge_method": "S256",
                    "login_as": user,
                },
            )
            assert redirect.status_code == 302, redirect.text
            query = parse_qs(urlsplit(redirect.headers["location"]).query)
            assert query["state"] == [state]
            answer = http.post(
                f"{issuer}/token",
                data={
                    "grant_type": "authorization_code",
                    "code": query["code"][0],
                    "redirect_uri": REDIRECT_URI,
                    "client_id": client_id,
                    "code_verifier": verifier,
                },
            )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        claims = json.loads(base64.urlsafe_b64decode(body["id_token"].split(".")[1] + "=="))
        assert claims.get("nonce") == nonce
        return Tokens(body["access_token"], body["id_token"], body)

    def service(self, client_id: str, *, scope: str = "coupon") -> Tokens:
        """A service's access token through ``client_credentials``."""
        with httpx.Client(timeout=10.0) as http:
            answer = http.post(
                f"{self.provider.issuer}/token",
                data={"grant_type": "client_credentials", "scope": scope},
                auth=(client_id, SECRETS[client_id]),
            )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        return Tokens(body["access_token"], None, body)


def authority_env(
    provider: ProviderProcess, *, more: list[dict[str, Any]] | None = None, **extra: str
) -> dict[str, str]:
    """The ``COUPON_OIDC_*`` settings that trust ``provider`` (and ``more`` providers)."""
    env = {
        "COUPON_OIDC_ISSUER": provider.issuer,
        "COUPON_OIDC_AUDIENCE": AUTHORITY_CLIENT,
        "COUPON_OIDC_ROLES_CLAIM": "groups",
        "COUPON_OIDC_ROLE_MAP": json.dumps(ROLE_MAP),
        "COUPON_OIDC_TENANT_CLAIM": "tenant",
        "COUPON_OIDC_JWKS_REFRESH_INTERVAL": "0.5",
        "COUPON_OIDC_HTTP_TIMEOUT": "2",
    }
    if more:
        env["COUPON_OIDC_PROVIDERS"] = json.dumps(more)
    env.update(extra)
    return env


def bearer(token: str) -> dict[str, str]:
    """The ``Authorization`` field for ``token``."""
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def closed_port() -> int:
    """A local TCP port with nothing listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProviderProcess]:
    """A running provider for one test module (its issuer has a path, like Keycloak's)."""
    proc = ProviderProcess(tmp_path_factory.mktemp("provider"), issuer_path="/realms/test")
    proc.start()
    yield proc
    proc.close()


@pytest.fixture
def fresh_provider(provider: ProviderProcess) -> ProviderProcess:
    """The module's provider with its default behaviour (knobs reset before the test)."""
    provider.reset()
    return provider


@pytest.fixture
def login(provider: ProviderProcess) -> Login:
    """Flows against the module's provider."""
    return Login(provider)


@pytest.fixture(scope="module")
def authority(provider: ProviderProcess, module_launcher: Launcher) -> Iterator[AuthorityProcess]:
    """A ``coupon up`` (embedded) that trusts the module's provider."""
    proc = module_launcher.start("embedded", name="oidc", extra=authority_env(provider))
    yield proc
    proc.close()
