"""Dual-auth migration against real ``coupon up`` processes, embedded and production.

A legacy HS256 issuer (shared secret) and an RS256/ES256 issuer (JWKS served over HTTP from a
thread here) are configured through ``COUPON_LEGACY_ISSUERS``; ``orders`` is migrating and
``billing`` is off. A legacy token works on ``orders`` beside coupons, is refused on
``billing``, and is refused on ``orders`` too once an operator turns legacy off there and
restarts. The adoption counters are read from ``/metrics``.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from tests.legacy_support import HS_SECRET, JwksServer, LegacyKey, claims, jwks_server, sign
from tests.services.harness import (
    AuthorityProcess,
    Holder,
    Launcher,
    issue,
    revoke,
    unique,
    verify,
    verify_body,
)

SCOPES = {
    "orders:read": {"resource": "orders/**", "actions": ["read"]},
    "orders:write": {"resource": "orders/**", "actions": ["write"]},
}


@pytest.fixture(scope="module")
def idp() -> Iterator[tuple[JwksServer, LegacyKey]]:
    """The asymmetric legacy issuer: an RS256 key behind a JWKS URL."""
    key = LegacyKey.generate("RS256")
    with jwks_server(key) as server:
        yield server, key


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def legacy_env(jwks_url: str, audiences: dict[str, str]) -> dict[str, str]:
    issuers = [
        {
            "issuer": "https://legacy.example",
            "algorithms": ["HS256"],
            "secret": HS_SECRET,
            "scopes": SCOPES,
        },
        {
            "issuer": "https://idp.example",
            "algorithms": ["RS256", "ES256"],
            "jwks_url": jwks_url,
            "scopes": SCOPES,
            "tenant_claim": "org",
        },
        {
            "issuer": "https://down.example",
            "algorithms": ["RS256"],
            "jwks_url": f"http://127.0.0.1:{_closed_port()}/jwks.json",
            "scopes": SCOPES,
        },
    ]
    return {
        "COUPON_LEGACY_ISSUERS": json.dumps(issuers),
        "COUPON_LEGACY_AUDIENCES": json.dumps(audiences),
    }


@pytest.fixture(scope="module")
def authority(
    engine: str, module_launcher: Launcher, idp: tuple[JwksServer, LegacyKey]
) -> Iterator[AuthorityProcess]:
    """An Authority with legacy on for orders (migrating) and off for billing."""
    extra = legacy_env(idp[0].url, {"orders": "migrating", "billing": "off"})
    proc = module_launcher.start(engine, name=f"legacy-{engine}", extra=extra)
    yield proc
    proc.close()


def legacy_body(token: str, **fields: Any) -> dict[str, Any]:
    body = {
        "legacy_token": token,
        "audience": "orders",
        "resource": "orders/123/items",
        "action": "read",
    }
    body.update(fields)
    return body


def counter(proc: AuthorityProcess, audience: str, kind: str, allow: str) -> float:
    """coupon_verify_decisions_total{audience, kind, allow} from /metrics (0 if absent)."""
    text = proc.anon.get("/metrics").text
    pattern = (
        rf'^coupon_verify_decisions_total\{{allow="{allow}",audience="{audience}",'
        rf'kind="{kind}"\}} (\S+)$'
    )
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


class TestMigrating:
    def test_hs256_token_allowed_as_legacy(self, authority: AuthorityProcess) -> None:
        """An HS256 legacy token gets a coupon-equivalent decision flagged legacy."""
        answer = verify(authority, legacy_body(sign(claims(scope="orders:read orders:write"))))
        assert (answer["allow"], answer["legacy"]) == (True, True)
        assert answer["claims"]["res"] == "orders/**"
        assert answer["claims"]["act"] == ["read"]
        assert answer["claims"]["iss"] == "https://legacy.example"

    def test_rs256_token_by_jwks(
        self, authority: AuthorityProcess, idp: tuple[JwksServer, LegacyKey]
    ) -> None:
        """An RS256 token verifies with the issuer's JWKS; its tenant comes from a claim."""
        _server, key = idp
        token = key.sign(claims(iss="https://idp.example", org="acme"))
        answer = verify(authority, legacy_body(token, tenant="acme"))
        assert (answer["allow"], answer["claims"]["tid"]) == (True, "acme")
        wrong = verify(authority, legacy_body(token, tenant="other"))
        assert (wrong["allow"], wrong["code"]) == (False, "CPN-LEG-008")

    def test_denials_are_decisions(self, authority: AuthorityProcess) -> None:
        """Scope, signature and audience failures answer allow false with the LEG code."""
        token = sign(claims(scope="orders:read"))
        cases = [
            (legacy_body(token, action="delete"), "CPN-LEG-008"),
            (legacy_body(sign(claims(), secret="x" * 40)), "CPN-LEG-005"),
            (legacy_body(sign(claims(aud="billing"))), "CPN-LEG-007"),
            (legacy_body(token, audience="billing"), "CPN-LEG-001"),
            (legacy_body(token, audience="unlisted"), "CPN-LEG-001"),
        ]
        for body, code in cases:
            answer = verify(authority, body)
            assert (answer["allow"], answer["legacy"], answer["code"]) == (False, True, code)

    def test_issuer_keys_unavailable_is_503(self, authority: AuthorityProcess) -> None:
        """An issuer whose JWKS cannot be fetched fails closed: 503, CPN-LEG-009."""
        token = LegacyKey.generate("RS256").sign(claims(iss="https://down.example"))
        response = authority.client.post("/v1/coupons/verify", json=legacy_body(token))
        assert (response.status_code, response.json()["code"]) == (503, "CPN-LEG-009")

    def test_subject_revocation_applies(self, authority: AuthorityProcess) -> None:
        """Revoking a subject at the Authority refuses that subject's legacy tokens too."""
        subject = unique("person")
        token = sign(claims(sub=subject))
        assert verify(authority, legacy_body(token))["allow"] is True
        revoke(authority, "subject", subject)
        answer = verify(authority, legacy_body(token))
        assert (answer["allow"], answer["code"]) == (False, "CPN-REV-001")

    def test_bad_bodies(self, authority: AuthorityProcess) -> None:
        """Both or neither of coupon and legacy_token is a 422."""
        both = {**legacy_body("a.b.c"), "coupon": "a.b.c"}
        neither = {"audience": "orders"}
        for body in (both, neither):
            response = authority.client.post("/v1/coupons/verify", json=body)
            assert (response.status_code, response.json()["code"]) == (422, "CPN-REQ-009")

    def test_adoption_metrics(self, authority: AuthorityProcess) -> None:
        """coupon_verify_decisions_total counts coupon and legacy decisions per audience."""
        before = {
            (kind, allow): counter(authority, "orders", kind, allow)
            for kind in ("coupon", "legacy")
            for allow in ("true", "false")
        }
        holder = Holder()
        coupon = issue(authority, holder)["coupon"]
        for _ in range(3):
            assert verify(authority, verify_body(coupon, holder))["allow"] is True
        token = sign(claims())
        assert verify(authority, legacy_body(token))["allow"] is True
        assert verify(authority, legacy_body(token, action="write"))["allow"] is False
        assert verify(authority, verify_body("x.y.z", holder))["allow"] is False
        after = {key: counter(authority, "orders", *key) for key in before}
        assert after[("coupon", "true")] - before[("coupon", "true")] == 3
        assert after[("coupon", "false")] - before[("coupon", "false")] == 1
        assert after[("legacy", "true")] - before[("legacy", "true")] == 1
        assert after[("legacy", "false")] - before[("legacy", "false")] == 1
        text = authority.anon.get("/metrics").text
        assert 'coupon_verify_denials_total{code="CPN-LEG-008",kind="legacy"}' in text
        assert re.search(r"^coupon_revocation_newest_age_seconds \S+$", text, re.MULTILINE)


def test_turning_legacy_off(
    engine: str, launcher: Launcher, idp: tuple[JwksServer, LegacyKey]
) -> None:
    """Legacy works on an audience in migration and is refused once it is turned off there;
    coupons keep working throughout."""
    proc = launcher.start(engine, extra=legacy_env(idp[0].url, {"orders": "migrating"}))
    holder = Holder()
    coupon = issue(proc, holder, ttl=600)["coupon"]
    token = sign(claims(ttl=600))
    assert verify(proc, legacy_body(token))["allow"] is True
    proc.env.update(legacy_env(idp[0].url, {"orders": "off"}))
    proc.restart()
    answer = verify(proc, legacy_body(token))
    assert (answer["allow"], answer["code"]) == (False, "CPN-LEG-001")
    assert verify(proc, verify_body(coupon, holder))["allow"] is True
    assert counter(proc, "orders", "legacy", "false") == 1
    assert counter(proc, "orders", "coupon", "true") == 1
