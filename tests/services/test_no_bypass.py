"""No authentication bypass: every protected endpoint refuses an unauthenticated call, in
every runtime mode (seed 004 WS1).

The routes come from the app object itself, not from a hand-kept list, so a new endpoint is
covered the day it is added: it either refuses anonymous callers or must be named in
``PUBLIC`` below, where a reviewer sees it. Each call goes to a real ``coupon up``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Final

import httpx
import pytest
from fastapi.routing import APIRoute
from starlette.routing import Mount, Route
from tests.mtls_pki import Pki, client_context
from tests.services.harness import AuthorityProcess, Launcher

from coupon.authority import create_app
from coupon.settings import Settings

#: Endpoints anyone may call, each for a reason (method, path template).
PUBLIC: Final = {
    ("GET", "/.well-known/jwks.json"): "public keys, by definition",
    ("GET", "/v1/time"): "the authorised time source (DPoP iat, nonces)",
    ("GET", "/v1/audit/key"): "the audit events' verifying key: public by definition",
    ("GET", "/healthz"): "liveness for the orchestrator",
    ("GET", "/readyz"): "readiness for the orchestrator; says which engine is down, no data",
    ("GET", "/metrics"): "Prometheus scrape; bounded labels, no tenant or subject ids",
    ("GET", "/v1/openapi.json"): "the API's own description",
    ("GET", "/v1/docs"): "the API's own description",
    ("GET", "/docs/oauth2-redirect"): "part of the API docs page",
    ("GET", "/v1/ledger/checkpoint"): "transparency: anyone may audit the log",
    ("GET", "/v1/ledger/checkpoints"): "transparency",
    ("GET", "/v1/ledger/key"): "transparency: the log's verifier key",
    ("GET", "/v1/ledger/proof/inclusion"): "transparency",
    ("GET", "/v1/ledger/proof/consistency"): "transparency",
    ("GET", "/v1/ledger/tile/{path:path}"): "transparency (hash tiles; entry tiles refuse, below)",
}
#: Paths under a public template that are protected after all.
PROTECTED_UNDER_PUBLIC: Final = [("GET", "/v1/ledger/tile/entries/000")]
_PARAM: Final = re.compile(r"\{([^}:]+)(?::[^}]+)?\}")
_SAMPLE: Final = {"path": "0/000", "version": "1", "subject": "someone"}
#: A well-formed body where the credential is checked after parsing it (attenuate's is the
#: parent coupon in ``Authorization: DPoP``); elsewhere ``{}`` meets authentication first.
_BODIES: Final = {
    "/v1/coupons/attenuate": {"subject": "x", "binding": {"jkt": "A" * 43}},
    # A session's refresh and logout take the refresh token (+ a DPoP proof) as credential.
    "/v1/sessions/refresh": {"refresh_token": "cpr_" + "A" * 43},
    "/v1/sessions/logout": {"refresh_token": "cpr_" + "A" * 43},
}


def _routes() -> list[tuple[str, str]]:
    """Every (method, path template) the Authority serves, read from the app."""
    app = create_app(Settings())
    found: set[tuple[str, str]] = set()

    def walk(routes: list[object], prefix: str) -> None:
        for route in routes:
            included = getattr(route, "original_router", None)  # FastAPI's included router
            if included is not None:
                context = getattr(route, "include_context", None)
                walk(list(included.routes), prefix + str(getattr(context, "prefix", "")))
            elif isinstance(route, Mount):
                walk(list(route.routes), prefix + route.path)
            elif isinstance(route, APIRoute | Route):
                for method in route.methods or ():
                    if method != "HEAD":
                        found.add((method, prefix + route.path))

    walk(list(app.router.routes), "")
    return sorted(found)


ROUTES: Final = _routes()
PROTECTED: Final = [r for r in ROUTES if r not in PUBLIC]


def _concrete(path: str) -> str:
    return _PARAM.sub(lambda m: _SAMPLE.get(m.group(1), "x"), path)


def test_the_route_table_is_classified() -> None:
    """Every public entry exists (no stale allowance), and protected routes were found."""
    assert set(PUBLIC) <= set(ROUTES), sorted(set(PUBLIC) - set(ROUTES))
    assert len(PROTECTED) >= 20, PROTECTED
    for method, path in PROTECTED:
        assert path.startswith("/v1/"), (method, path)


#: An OpenID provider nobody runs: its tokens could never be checked, so none may pass.
_OIDC: Final = {
    "COUPON_OIDC_ISSUER": "http://127.0.0.1:9/realms/none",
    "COUPON_OIDC_AUDIENCE": "coupon-authority",
    "COUPON_OIDC_ROLES_CLAIM": "groups",
    "COUPON_OIDC_ROLE_MAP": json.dumps({"admins": ["admin"]}),
}
MODES: Final = ("embedded", "production", "no-ledger", "oidc", "mtls-optional")


@pytest.fixture(scope="module", params=MODES)
def authority(
    request: pytest.FixtureRequest,
    module_launcher: Launcher,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[AuthorityProcess]:
    """One real Authority per runtime mode."""
    mode: str = request.param
    name = f"bypass-{mode}"
    if mode == "production":  # PostgreSQL and Redis
        proc = module_launcher.start("production", name=name)
    elif mode == "no-ledger":
        proc = module_launcher.start(
            "embedded", name=name, extra={"COUPON_LEDGER_ENABLED": "false"}
        )
    elif mode == "oidc":
        proc = module_launcher.start("embedded", name=name, extra=_OIDC)
    elif mode == "mtls-optional":  # HTTPS; a client certificate authenticates when mapped
        pki = Pki(tmp_path_factory.mktemp("pki"))
        identities = {"uri:spiffe://example.org/orders": {"roles": ["admin"]}}
        tls = {
            "COUPON_TLS_CERT": str(pki.server.cert),
            "COUPON_TLS_KEY": str(pki.server.key),
            "COUPON_TLS_CLIENT_CA": str(pki.ca.cert),
            "COUPON_TLS_CLIENT_AUTH": "optional",
            "COUPON_MTLS_IDENTITIES": json.dumps(identities),
        }
        # The stranger's certificate is valid but maps to nobody: it must not pass either.
        proc = module_launcher.start(
            "embedded", name=name, extra=tls, tls=client_context(pki, "stranger")
        )
    else:
        proc = module_launcher.start("embedded", name=name)
    yield proc
    proc.close()


_ANONYMOUS: Final = {
    "none": {},
    "garbage api key": {"X-API-Key": "not-a-key"},
    "unknown api key": {"X-API-Key": "cpk_0123456789abcdef_" + "A" * 43},
    "bearer garbage": {"Authorization": "Bearer e30.e30.x"},
    "dpop without proof": {"Authorization": "DPoP e30.e30.x"},
}


@pytest.mark.parametrize("who", sorted(_ANONYMOUS))
def test_every_protected_endpoint_refuses_anonymous_callers(
    authority: AuthorityProcess, who: str
) -> None:
    let_through = []
    with _client(authority) as client:
        for method, template in [*PROTECTED, *PROTECTED_UNDER_PUBLIC]:
            path = _concrete(template)
            body = _BODIES.get(template, {})
            response = client.request(method, path, headers=_ANONYMOUS[who], json=body)
            if response.status_code == 404 and "ledger" in path and not _ledger_on(authority):
                continue  # no ledger in this mode: nothing there to protect
            if response.status_code not in (401, 403):
                let_through.append((method, path, response.status_code, response.text[:120]))
    assert not let_through, let_through


def _client(authority: AuthorityProcess) -> httpx.Client:
    verify = authority.tls if authority.tls is not None else True
    return httpx.Client(base_url=authority.base_url, timeout=10, verify=verify)


def _ledger_on(authority: AuthorityProcess) -> bool:
    return authority.env.get("COUPON_LEDGER_ENABLED", "true") != "false"


def test_public_endpoints_answer_without_credentials(authority: AuthorityProcess) -> None:
    """The allowance is real: these work anonymously (so the list above means something)."""
    with _client(authority) as client:
        for method, template in PUBLIC:
            if "/ledger/" in template and not _ledger_on(authority):
                continue
            if "{" in template or "proof" in template:
                continue  # need real indexes; covered by the Ledger's own tests
            response = client.request(method, template)
            assert response.status_code in (200, 503), (method, template, response.status_code)
