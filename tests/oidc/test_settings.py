"""The OIDC settings are validated when they are read: a bad value stops the start."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from pydantic import ValidationError

from coupon.settings import Settings

FLAT = {"oidc_issuer": "https://login.example.com/realms/acme", "oidc_audience": "coupon"}


def _settings(**values: Any) -> Settings:
    """Settings from ``values`` alone (validated as at start-up, without the environment)."""
    return Settings.model_validate(values)


class TestFlat:
    def test_off_by_default(self) -> None:
        """No issuer: no provider, OIDC is off."""
        assert _settings().oidc_provider_list == ()

    def test_one_provider(self) -> None:
        """The flat settings make the first provider, with the shared defaults."""
        (provider,) = _settings(**FLAT, oidc_role_map={"ops": ["admin"]}).oidc_provider_list
        assert provider.issuer == FLAT["oidc_issuer"]
        assert provider.algorithms == ("RS256", "ES256", "EdDSA")
        assert provider.role_map == {"ops": ("admin",)}

    @pytest.mark.parametrize(
        ("changes", "message"),
        [
            ({"oidc_audience": ""}, "COUPON_OIDC_AUDIENCE is required"),
            ({"oidc_issuer": "", "oidc_audience": "x"}, "COUPON_OIDC_ISSUER is not"),
            ({"oidc_issuer": "http://login.example.com"}, "must use https"),
            ({"oidc_issuer": "https://login.example.com?x=1"}, "no query"),
            ({"oidc_issuer": "ftp://login.example.com"}, "https URL"),
            ({"oidc_algorithms": ["none"]}, "oidc_algorithms"),
            ({"oidc_algorithms": ["HS256"]}, "oidc_algorithms"),
            ({"oidc_algorithms": []}, "oidc_algorithms"),
            ({"oidc_role_map": {"ops": ["root"]}}, "oidc_role_map"),
            ({"oidc_role_map": {"ops": []}}, "needs a value and a role"),
            ({"oidc_roles_claim": "has space"}, "claim path"),
            ({"oidc_leeway": 301}, "oidc_leeway"),
            ({"oidc_jwks_max_age": 30}, "oidc_jwks_max_age"),
        ],
    )
    def test_refused(self, changes: dict[str, object], message: str) -> None:
        """Each bad value is refused with a message naming it."""
        with pytest.raises(ValidationError, match=message):
            _settings(**{**FLAT, **changes})

    @pytest.mark.parametrize(
        "issuer", ["http://127.0.0.1:9000/x", "http://localhost", "http://[::1]:1"]
    )
    def test_http_on_loopback(self, issuer: str) -> None:
        """Plain http is allowed on loopback hosts only (tests, local development)."""
        assert (
            Settings(oidc_issuer=issuer, oidc_audience="a").oidc_provider_list[0].issuer == issuer
        )


class TestMore:
    def test_providers_from_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """COUPON_OIDC_PROVIDERS takes JSON objects; they follow the flat provider."""
        more = [{"issuer": "https://accounts.example.org", "audience": "a2", "tenant_claim": "org"}]
        monkeypatch.setenv("COUPON_OIDC_ISSUER", FLAT["oidc_issuer"])
        monkeypatch.setenv("COUPON_OIDC_AUDIENCE", "coupon")
        monkeypatch.setenv("COUPON_OIDC_PROVIDERS", json.dumps(more))
        monkeypatch.setenv("COUPON_OIDC_ROLE_MAP", '{"g": ["issuer"]}')
        issuers = [p.issuer for p in Settings().oidc_provider_list]
        assert issuers == [FLAT["oidc_issuer"], "https://accounts.example.org"]

    def test_duplicate_issuers(self) -> None:
        """Two providers with one issuer are refused."""
        with pytest.raises(ValidationError, match="share an issuer"):
            _settings(**FLAT, oidc_providers=[{"issuer": FLAT["oidc_issuer"], "audience": "b"}])

    def test_unknown_key(self) -> None:
        """A misspelt key in a provider object is refused, not ignored."""
        with pytest.raises(ValidationError, match="role_mapping"):
            _settings(
                oidc_providers=[
                    {"issuer": "https://a.example", "audience": "b", "role_mapping": {}}
                ]
            )


def test_coupon_up_help_lists_the_settings() -> None:
    """`coupon up --help` documents every OIDC setting (from the field descriptions)."""
    run = subprocess.run(
        [sys.executable, "-m", "coupon.cli", "up", "--help"],
        capture_output=True,
        text=True,
        check=True,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )
    for name in Settings.model_fields:
        if name.startswith("oidc_"):
            assert f"COUPON_{name.upper()}" in run.stdout
