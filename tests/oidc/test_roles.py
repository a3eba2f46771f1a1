"""Roles and tenants come from the token's claims through the configured role map.

A token whose claims map to no role still authenticates, but every endpoint that needs a
caller refuses it with 403. The routes are read from the app (every route that runs the
authenticator list), so a new endpoint is covered the day it is added.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Final

import httpx
import pytest
from fastapi.routing import APIRoute
from tests.oidc.conftest import Login, bearer
from tests.services.harness import AuthorityProcess, Holder, issue_body

from coupon.authority import create_app
from coupon.settings import Settings

pytestmark = pytest.mark.usefixtures("fresh_provider")

_EVENT: Final = {"event": "{}", "signature": "A" * 86, "kid": "emitter-1"}
_POLICY: Final = {"bundle": "e30", "signature": "A" * 86, "signer": "k"}
#: A body that passes validation for each route that takes one (role checks come after it).
BODIES: Final[dict[tuple[str, str], dict[str, Any]]] = {
    ("POST", "/v1/coupons"): issue_body(Holder(), subject="bob", tenant="acme"),
    ("POST", "/v1/coupons/verify"): {"coupon": "e30.e30.x", "audience": "orders"},
    ("POST", "/v1/revocations"): {"kind": "jti", "value": "x", "reason": "test"},
    ("POST", "/v1/admin/policies"): _POLICY,
    ("POST", "/v1/admin/api-keys"): {"name": "svc", "roles": ["verifier"]},
    ("POST", "/v1/ledger/entries"): {"entries": [_EVENT]},
    ("POST", "/v1/sessions"): {
        "subject": "bob",
        "tenant": "acme",
        "audience": ["orders"],
        "resource": "orders/**",
        "actions": ["read"],
        "purpose": "billing",
        "jkt": Holder().jkt,
    },
}
#: Form bodies, and paths that need a concrete value.
FORMS: Final = {("POST", "/v1/coupons/introspect"): {"token": "e30.e30.x"}}
SAMPLES: Final = {"{version}": "v1", "{subject}": "someone"}


def _uses_authenticators(route: APIRoute) -> bool:
    stack = list(route.dependant.dependencies)
    while stack:
        dependency = stack.pop()
        if getattr(dependency.call, "__name__", "") == "_caller":
            return True
        stack.extend(dependency.dependencies)
    return False


def _caller_routes() -> list[tuple[str, str]]:
    """(method, path) of every route whose caller comes from the authenticator list."""
    found: set[tuple[str, str]] = set()

    def walk(routes: list[Any], prefix: str) -> None:
        for route in routes:
            included = getattr(route, "original_router", None)
            if included is not None:
                context = getattr(route, "include_context", None)
                walk(list(included.routes), prefix + str(getattr(context, "prefix", "")))
            elif isinstance(route, APIRoute) and _uses_authenticators(route):
                found.update((m, prefix + route.path) for m in route.methods or () if m != "HEAD")

    walk(list(create_app(Settings()).router.routes), "")
    return sorted(found)


ROUTES: Final = _caller_routes()


def _call(client: httpx.Client, method: str, template: str, token: str) -> httpx.Response:
    path = template
    for placeholder, value in SAMPLES.items():
        path = path.replace(placeholder, value)
    key = (method, template)
    if key in FORMS:
        return client.request(method, path, data=FORMS[key], headers=bearer(token))
    return client.request(method, path, json=BODIES.get(key), headers=bearer(token))


class TestNoRole:
    def test_routes_were_found(self) -> None:
        """The walk finds the caller routes (issue, verify, admin, ledger, ...)."""
        assert ("POST", "/v1/coupons") in ROUTES
        assert ("GET", "/v1/ledger/entries") in ROUTES
        assert len(ROUTES) >= 18, ROUTES

    def test_every_caller_route_refuses_a_token_without_roles(
        self, authority: AuthorityProcess, login: Login
    ) -> None:
        """Bob's groups map to no role: he is authenticated, and every route answers 403."""
        token = login.person("bob").access_token
        not_refused = []
        for method, template in ROUTES:
            response = _call(authority.anon, method, template, token)
            if response.status_code != 403:
                not_refused.append((method, template, response.status_code, response.text[:160]))
        assert not not_refused, not_refused

    def test_every_caller_route_refuses_forged_tokens(
        self, authority: AuthorityProcess, login: Login
    ) -> None:
        """Bob's token rewritten to claim the admin group, unsigned (alg none) or with its
        original signature, is a 401 on every route: no route takes a bearer token unchecked."""
        token = login.person("bob").access_token
        head, payload, signature = token.split(".")
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        claims["groups"] = ["coupon-admins"]
        forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
        none_head = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=")
        forgeries = [
            f"{head}.{forged_payload.decode()}.{signature}",
            f"{none_head.decode()}.{forged_payload.decode()}.",
        ]
        let_through = []
        for forged in forgeries:
            for method, template in ROUTES:
                response = _call(authority.anon, method, template, forged)
                if response.status_code != 401:
                    let_through.append((method, template, response.status_code))
        assert not let_through, let_through

    def test_the_refusal_is_a_role_refusal(self, authority: AuthorityProcess, login: Login) -> None:
        """The 403 is CPN-AUTH-003 (lacks the role), not an authentication failure."""
        token = login.person("bob").access_token
        response = _call(authority.anon, "POST", "/v1/coupons", token)
        assert response.json()["code"] == "CPN-AUTH-003"


class TestMapping:
    def test_mapped_roles_open_their_endpoints(
        self, authority: AuthorityProcess, login: Login
    ) -> None:
        """Carol (coupon-admins -> admin) reads the keyring; Alice (issuer) may not."""
        carol = login.person("carol").access_token
        alice = login.person("alice").access_token
        assert authority.anon.get("/v1/admin/keys", headers=bearer(carol)).status_code == 200
        refused = authority.anon.get("/v1/admin/keys", headers=bearer(alice))
        assert refused.status_code == 403

    def test_service_roles_from_client_claims(
        self, authority: AuthorityProcess, login: Login
    ) -> None:
        """orders-svc (coupon-verifiers -> verifier) reads the revocation feed."""
        token = login.service("orders-svc").access_token
        response = authority.anon.get("/v1/revocations", headers=bearer(token))
        assert response.status_code == 200, response.text

    def test_tenant_claim_is_required(
        self, authority: AuthorityProcess, login: Login, fresh_provider: Any
    ) -> None:
        """With COUPON_OIDC_TENANT_CLAIM set, a token without that claim is CPN-OIDC-010."""
        fresh_provider.configure(omit_claims=["tenant"])
        tokens = login.person("alice")
        assert tokens.id_token is not None
        body = issue_body(Holder(), subject="alice", tenant="acme")
        response = authority.anon.post("/v1/coupons", json=body, headers=bearer(tokens.id_token))
        assert response.status_code == 401
        assert response.json()["code"] == "CPN-OIDC-010"
