"""The provider is down, or wrong: fail closed with 503, never a 401 and never an allow.

Each test starts its own ``coupon up`` so that its key cache starts cold (or is warmed on
purpose), then stops, breaks or restarts the real provider process.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator

import pytest
from tests.oidc.conftest import Login, ProviderProcess, authority_env, bearer
from tests.services.harness import AuthorityProcess, Holder, Launcher, issue_body


@pytest.fixture
def own_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProviderProcess]:
    """A provider this test may stop and restart."""
    proc = ProviderProcess(tmp_path_factory.mktemp("own-provider"), issuer_path="/realms/test")
    proc.start()
    yield proc
    proc.close()


def _issue(authority: AuthorityProcess, token: str) -> tuple[int, str, dict[str, str]]:
    body = issue_body(Holder(), subject="alice", tenant="acme")
    response = authority.anon.post("/v1/coupons", json=body, headers=bearer(token))
    return response.status_code, response.json().get("code", ""), dict(response.headers)


def _start(launcher: Launcher, provider: ProviderProcess, name: str) -> AuthorityProcess:
    return launcher.start("embedded", name=name, extra=authority_env(provider))


class TestProviderDown:
    def test_cold_cache_is_503(self, own_provider: ProviderProcess, launcher: Launcher) -> None:
        """The provider is down before the Authority ever fetched its keys: a valid token is
        answered 503 CPN-OIDC-013 with Retry-After; API keys and readiness are unaffected."""
        token = Login(own_provider).person("alice").access_token
        own_provider.stop()
        authority = _start(launcher, own_provider, "cold")
        for _ in range(3):
            status, code, headers = _issue(authority, token)
            assert (status, code) == (503, "CPN-OIDC-013")
            assert headers["retry-after"] == "1"
        assert authority.anon.get("/readyz").status_code == 200
        body = issue_body(Holder(), subject="bob", tenant="acme")
        assert authority.client.post("/v1/coupons", json=body).status_code == 201

    def test_cached_keys_keep_working(
        self, own_provider: ProviderProcess, launcher: Launcher
    ) -> None:
        """Once the keys are cached, tokens keep working while the provider is down; a kid
        the cache does not know is a 503 then, not a 401."""
        login = Login(own_provider)
        token = login.person("alice").access_token
        authority = _start(launcher, own_provider, "warm")
        assert _issue(authority, token)[0] == 201
        own_provider.stop()
        assert _issue(authority, token)[0] == 201
        head, rest = token.split(".", 1)
        header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
        header["kid"] = "rotated-while-down"
        forged = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
        time.sleep(0.6)
        status, code, _ = _issue(authority, f"{forged}.{rest}")
        assert (status, code) == (503, "CPN-OIDC-013")

    def test_recovery_after_restart(
        self, own_provider: ProviderProcess, launcher: Launcher
    ) -> None:
        """The provider comes back (same issuer, new keys): its new tokens work again."""
        token = Login(own_provider).person("alice").access_token
        own_provider.stop()
        authority = _start(launcher, own_provider, "recovering")
        assert _issue(authority, token)[:2] == (503, "CPN-OIDC-013")
        own_provider.start()
        fresh = Login(own_provider).person("alice").access_token
        time.sleep(0.6)  # failed fetches are retried once per refresh interval (0.5 s here)
        assert _issue(authority, fresh)[0] == 201
        # The old token's key left with the old process: refused, not accepted.
        time.sleep(0.6)
        assert _issue(authority, token)[:2] == (401, "CPN-OIDC-004")


class TestProviderWrong:
    def test_discovery_names_another_issuer(
        self, own_provider: ProviderProcess, launcher: Launcher
    ) -> None:
        """Discovery whose issuer is not exactly the configured one: 503 CPN-OIDC-014."""
        token = Login(own_provider).person("alice").access_token
        own_provider.configure(discovery_issuer=own_provider.issuer + "/")
        authority = _start(launcher, own_provider, "mismatch")
        assert _issue(authority, token)[:2] == (503, "CPN-OIDC-014")

    def test_jwks_failing(self, own_provider: ProviderProcess, launcher: Launcher) -> None:
        """A JWKS answering 500 with no cached keys: 503 CPN-OIDC-013."""
        token = Login(own_provider).person("alice").access_token
        own_provider.configure(jwks_status=500)
        authority = _start(launcher, own_provider, "jwks-500")
        assert _issue(authority, token)[:2] == (503, "CPN-OIDC-013")

    def test_metrics(self, own_provider: ProviderProcess, launcher: Launcher) -> None:
        """Authentications and fetches are counted per provider on /metrics."""
        authority = _start(launcher, own_provider, "metrics")
        assert _issue(authority, Login(own_provider).person("alice").access_token)[0] == 201
        text = authority.anon.get("/metrics").text
        assert (
            f'coupon_oidc_authentications_total{{code="",issuer="{own_provider.issuer}",result="allow"}}'
            in text
        )
        assert (
            f'coupon_oidc_fetches_total{{document="jwks",issuer="{own_provider.issuer}",result="ok"}}'
            in text
        )
        assert f'coupon_oidc_keys{{issuer="{own_provider.issuer}"}} 2.0' in text
