"""People and services authenticate to a real ``coupon up`` with tokens of a real OpenID provider.

The provider (``provider.py``, Authlib + Flask) runs as its own process; a person completes the
authorization-code flow with PKCE, a service uses ``client_credentials``; the tokens go to the
Authority as ``Authorization: Bearer``.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from tests.oidc.conftest import Login, ProviderProcess, authority_env, bearer
from tests.services.harness import AuthorityProcess, Holder, Launcher, issue_body, verify_body

pytestmark = pytest.mark.usefixtures("fresh_provider")


def _post(
    authority: AuthorityProcess, path: str, token: str, body: dict[str, Any]
) -> httpx.Response:
    return authority.anon.post(path, json=body, headers=bearer(token))


class TestPerson:
    def test_code_flow_id_token_gets_a_dpop_bound_coupon_that_verifies(
        self, authority: AuthorityProcess, login: Login
    ) -> None:
        """Alice logs in (code flow, PKCE), gets a coupon bound to her key, and it verifies."""
        tokens = login.person("alice")
        assert tokens.id_token is not None
        holder = Holder()
        answer = _post(
            authority,
            "/v1/coupons",
            tokens.id_token,
            issue_body(holder, subject="alice", tenant="acme"),
        )
        assert answer.status_code == 201, answer.text
        coupon = answer.json()
        assert coupon["token_type"] == "DPoP"
        assert coupon["claims"]["cnf"] == {"jkt": holder.jkt}
        assert coupon["claims"]["sub"] == "alice"
        decision = authority.client.post(
            "/v1/coupons/verify", json=verify_body(coupon["coupon"], holder)
        )
        assert decision.status_code == 200
        assert decision.json()["allow"] is True, decision.json()

    def test_access_token_works_too(self, authority: AuthorityProcess, login: Login) -> None:
        """The RFC 9068 access token (typ at+jwt) of the same login is accepted as well."""
        tokens = login.person("alice")
        answer = _post(
            authority,
            "/v1/coupons",
            tokens.access_token,
            issue_body(Holder(), subject="alice", tenant="acme"),
        )
        assert answer.status_code == 201, answer.text

    def test_issue_is_audited_as_the_oidc_caller(
        self, authority: AuthorityProcess, login: Login, provider: ProviderProcess
    ) -> None:
        """The coupon record names the caller oidc:<issuer host and path>:<sub>."""
        tokens = login.person("alice")
        answer = _post(
            authority,
            "/v1/coupons",
            tokens.access_token,
            issue_body(Holder(), subject="alice", tenant="acme"),
        )
        assert answer.status_code == 201, answer.text
        events = authority.client.get("/v1/audit/events", params={"limit": 1000}).json()["events"]
        assert any(
            f'"oidc:127.0.0.1:{provider.port}/realms/test:alice"' in e["event"] for e in events
        )

    def test_a_person_issues_only_for_their_own_subject(
        self, authority: AuthorityProcess, login: Login
    ) -> None:
        """An OIDC issuer asking for another subject is refused with CPN-OIDC-012 (403)."""
        tokens = login.person("alice")
        answer = _post(
            authority,
            "/v1/coupons",
            tokens.access_token,
            issue_body(Holder(), subject="mallory", tenant="acme"),
        )
        assert answer.status_code == 403
        assert answer.json()["code"] == "CPN-OIDC-012"

    def test_a_person_starts_sessions_only_for_themself(
        self, authority: AuthorityProcess, login: Login
    ) -> None:
        """The own-subject rule holds for sessions too: another user's is CPN-OIDC-012."""
        tokens = login.person("alice")
        body = {
            "tenant": "acme",
            "audience": ["orders"],
            "resource": "orders/**",
            "actions": ["read"],
            "purpose": "billing",
            "jkt": Holder().jkt,
        }
        other = _post(authority, "/v1/sessions", tokens.access_token, {**body, "subject": "bob"})
        assert other.status_code == 403
        assert other.json()["code"] == "CPN-OIDC-012"
        own = _post(authority, "/v1/sessions", tokens.access_token, {**body, "subject": "alice"})
        assert own.status_code == 201, own.text

    def test_a_person_stays_in_their_tenant(
        self, authority: AuthorityProcess, login: Login
    ) -> None:
        """The tenant comes from the token's tenant claim: another tenant is CPN-AUTH-004."""
        tokens = login.person("alice")
        answer = _post(
            authority,
            "/v1/coupons",
            tokens.access_token,
            issue_body(Holder(), subject="alice", tenant="globex"),
        )
        assert answer.status_code == 403
        assert answer.json()["code"] == "CPN-AUTH-004"

    def test_an_admin_may_issue_for_others(self, authority: AuthorityProcess, login: Login) -> None:
        """Carol maps to admin: she may name another subject (in her tenant)."""
        tokens = login.person("carol")
        answer = _post(
            authority,
            "/v1/coupons",
            tokens.access_token,
            issue_body(Holder(), subject="svc-x", tenant="acme"),
        )
        assert answer.status_code == 201, answer.text

    def test_es256_tokens(
        self, authority: AuthorityProcess, login: Login, provider: ProviderProcess
    ) -> None:
        """When the provider signs with its ES256 key, tokens are accepted the same way."""
        provider.configure(signing_alg="ES256")
        tokens = login.person("alice")
        assert tokens.id_token is not None
        answer = _post(
            authority,
            "/v1/coupons",
            tokens.id_token,
            issue_body(Holder(), subject="alice", tenant="acme"),
        )
        assert answer.status_code == 201, answer.text


class TestService:
    def test_client_credentials_verifier(self, authority: AuthorityProcess, login: Login) -> None:
        """orders-svc (client_credentials, role verifier) verifies a coupon; it may not issue."""
        holder = Holder()
        coupon = authority.client.post(
            "/v1/coupons", json=issue_body(holder, subject="alice", tenant="acme")
        ).json()["coupon"]
        token = login.service("orders-svc").access_token
        decision = _post(authority, "/v1/coupons/verify", token, verify_body(coupon, holder))
        assert decision.status_code == 200, decision.text
        assert decision.json()["allow"] is True
        refused = _post(
            authority,
            "/v1/coupons",
            token,
            issue_body(Holder(), subject="orders-svc", tenant="acme"),
        )
        assert refused.status_code == 403
        assert refused.json()["code"] == "CPN-AUTH-003"

    def test_client_credentials_issuer_for_itself(
        self, authority: AuthorityProcess, login: Login
    ) -> None:
        """issuer-svc gets coupons whose subject is its own client id (its sub)."""
        token = login.service("issuer-svc").access_token
        answer = _post(
            authority,
            "/v1/coupons",
            token,
            issue_body(Holder(), subject="issuer-svc", tenant="acme"),
        )
        assert answer.status_code == 201, answer.text
        other = _post(
            authority, "/v1/coupons", token, issue_body(Holder(), subject="alice", tenant="acme")
        )
        assert other.json()["code"] == "CPN-OIDC-012"

    def test_api_keys_still_work_beside_oidc(self, authority: AuthorityProcess) -> None:
        """Turning OIDC on changes nothing for X-API-Key callers."""
        answer = authority.client.post(
            "/v1/coupons", json=issue_body(Holder(), subject="bob", tenant="x")
        )
        assert answer.status_code == 201, answer.text


class TestSeveralProviders:
    def test_two_providers_each_with_its_own_mapping(
        self,
        provider: ProviderProcess,
        launcher: Launcher,
        tmp_path_factory: pytest.TempPathFactory,
    ) -> None:
        """A second provider in COUPON_OIDC_PROVIDERS: its tokens work with its own role map
        (here its issuers are auditors only) and its own principal ids."""
        second = ProviderProcess(tmp_path_factory.mktemp("second")).start()
        try:
            more = [
                {
                    "issuer": second.issuer,
                    "audience": "coupon-authority",
                    "roles_claim": "groups",
                    "role_map": {"coupon-issuers": ["auditor"]},
                }
            ]
            authority = launcher.start(
                "embedded", name="two", extra=authority_env(provider, more=more)
            )
            first_token = Login(provider).person("alice").access_token
            second_token = Login(second).person("alice").access_token
            body = issue_body(Holder(), subject="alice", tenant="acme")
            assert _post(authority, "/v1/coupons", first_token, body).status_code == 201
            refused = _post(authority, "/v1/coupons", second_token, body)
            assert refused.json()["code"] == "CPN-AUTH-003"
            events = authority.anon.get("/v1/audit/events", headers=bearer(second_token))
            assert events.status_code == 200, events.text
            assert "OIDC        " + second.issuer in authority.stdout_path.read_text()
        finally:
            second.close()
