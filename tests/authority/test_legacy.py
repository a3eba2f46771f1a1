"""Legacy bearer JWTs: every check of ``LegacyVerifier``, with HS256 and RS256/ES256 by JWKS.

Tokens are signed by PyJWT with keys made by the test; the JWKS is served over HTTP from a
thread (tests/legacy_support.py). The revocation view is the Authority's own.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from tests.legacy_support import HS_SECRET, JwksServer, LegacyKey, claims, jwks_server, sign

from coupon import codes
from coupon._settings_migration import LegacyIssuer
from coupon.authority._legacy import LegacyRequest, LegacyVerifier
from coupon.authority._legacy_jwks import JwksCache
from coupon.authority._revocation import RevocationView
from coupon.errors import CouponError, DependencyUnavailable
from coupon.observability import AuthorityMetrics
from coupon.storage.base import RevocationRecord

HS_ISS = "https://legacy.example"
RS_ISS = "https://idp.example"
SCOPES: dict[str, Any] = {
    "orders:read": {"resource": "orders/**", "actions": ["read"]},
    "orders:write": {"resource": "orders/**", "actions": ["write"], "purpose": "fulfilment"},
}
READ = LegacyRequest(audience="orders", resource="orders/123/items", action="read")


def hs_issuer(**fields: Any) -> LegacyIssuer:
    return LegacyIssuer.model_validate(
        {"issuer": HS_ISS, "algorithms": ["HS256"], "secret": HS_SECRET, "scopes": SCOPES} | fields
    )


def rs_issuer(url: str, **fields: Any) -> LegacyIssuer:
    return LegacyIssuer.model_validate(
        {
            "issuer": RS_ISS,
            "algorithms": ["RS256", "ES256"],
            "jwks_url": url,
            "scopes": SCOPES,
            "scope_claim": "permissions",
        }
        | fields
    )


def fresh_view() -> RevocationView:
    view = RevocationView(max_staleness=60)
    view.mark_fresh(time.time())
    return view


def verifier(
    *issuers: LegacyIssuer,
    audiences: dict[str, str] | None = None,
    view: RevocationView | None = None,
    jwks: JwksCache | None = None,
) -> LegacyVerifier:
    return LegacyVerifier(
        issuers,
        audiences if audiences is not None else {"orders": "migrating", "billing": "off"},
        jwks=jwks or JwksCache(min_refresh=0),
        revocations=view or fresh_view(),
    )


async def code_of(v: LegacyVerifier, token: str, request: LegacyRequest = READ) -> str:
    with pytest.raises(CouponError) as caught:
        await v.verify(token, request, now=time.time())
    return caught.value.code.code


@pytest.fixture
def idp() -> Iterator[tuple[JwksServer, LegacyKey, LegacyKey]]:
    rsa_key, ec_key = LegacyKey.generate("RS256"), LegacyKey.generate("ES256")
    with jwks_server(rsa_key, ec_key) as server:
        yield server, rsa_key, ec_key


@pytest.mark.asyncio
class TestHS256:
    async def test_allows_and_maps_scopes(self) -> None:
        """A valid token for an audience in migration is a coupon-equivalent grant."""
        token = sign(claims(scope="orders:read orders:write", jti="j-1"))
        verified = await verifier(hs_issuer()).verify(token, READ, now=time.time())
        out = verified.claims()
        assert out["legacy"] is True
        assert (out["sub"], out["tid"], out["aud"], out["jti"]) == (
            "alice",
            "legacy",
            ["orders"],
            "j-1",
        )
        assert (out["res"], out["act"], out["pur"]) == ("orders/**", ["read"], "*")
        assert [g["act"] for g in out["grants"]] == [["read"], ["write"]]

    async def test_no_request_scope_grants_nothing_specific(self) -> None:
        """Asking for no resource or action checks the token alone."""
        token = sign(claims(scope=""))
        verified = await verifier(hs_issuer()).verify(
            token, LegacyRequest(audience="orders"), now=time.time()
        )
        assert verified.matched is None
        assert verified.grants == ()

    @pytest.mark.parametrize(
        ("request_", "code"),
        [
            (LegacyRequest("orders", "orders/1", "delete"), "CPN-LEG-008"),
            (LegacyRequest("orders", "invoices/1", "read"), "CPN-LEG-008"),
            (LegacyRequest("orders", "orders/1", "write", "fulfilment"), "CPN-LEG-008"),
            (LegacyRequest("orders", "orders/1", "read", tenant="other"), "CPN-LEG-008"),
            (LegacyRequest("billing", "orders/1", "read"), "CPN-LEG-001"),
            (LegacyRequest("unlisted", "orders/1", "read"), "CPN-LEG-001"),
        ],
    )
    async def test_scope_and_mode(self, request_: LegacyRequest, code: str) -> None:
        """Ungranted action, resource, purpose or tenant; an audience off or not listed."""
        token = sign(claims(scope="orders:read", aud=request_.audience))
        assert await code_of(verifier(hs_issuer()), token, request_) == code

    async def test_purpose_granted_by_scope(self) -> None:
        """A scope with a purpose grants it and its narrower purposes."""
        token = sign(claims(scope=["orders:write"]))
        request = LegacyRequest("orders", "orders/1", "write", "fulfilment.express")
        verified = await verifier(hs_issuer()).verify(token, request, now=time.time())
        assert verified.matched is not None
        assert verified.matched.purpose == "fulfilment"

    @pytest.mark.parametrize(
        ("token", "code"),
        [
            (sign(claims(), secret="another-secret-of-at-least-32-bytes!!"), "CPN-LEG-005"),
            (sign(claims(iss="https://other.example")), "CPN-LEG-003"),
            (sign(claims(aud="billing-api")), "CPN-LEG-007"),
            (sign(claims(now=int(time.time()) - 1000)), "CPN-LEG-006"),
            (sign(claims(now=int(time.time()) + 1000)), "CPN-LEG-006"),
            (sign(claims(ttl=2 * 86_400)), "CPN-LEG-006"),
            (sign(claims(nbf=int(time.time()) + 1000)), "CPN-LEG-006"),
            (sign({k: v for k, v in claims().items() if k != "exp"}), "CPN-LEG-002"),
            (sign({k: v for k, v in claims().items() if k != "aud"}), "CPN-LEG-007"),
            (sign(claims(sub="")), "CPN-LEG-002"),
            ("not.a.jwt", "CPN-LEG-002"),
            ("x" * 9000, "CPN-LEG-002"),
        ],
    )
    async def test_refusals(self, token: str, code: str) -> None:
        """Wrong secret, issuer, audience, time, lifetime, missing claims, garbage."""
        assert await code_of(verifier(hs_issuer()), token) == code

    async def test_alg_none_and_confusion(
        self, idp: tuple[JwksServer, LegacyKey, LegacyKey]
    ) -> None:
        """alg none, and HS256 under an RS256 issuer (keyed by its public key), are refused."""
        server, rsa_key, _ec = idp
        v = verifier(rs_issuer(server.url), hs_issuer())
        head = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        unsigned = f"{head}.{_b64(json.dumps(claims(iss=HS_ISS)).encode())}."
        assert await code_of(v, unsigned) == "CPN-LEG-004"
        public_pem = rsa_key.private.public_key().public_bytes(
            Encoding.PEM, PublicFormat.SubjectPublicKeyInfo
        )
        confused = _hs256_by_hand(claims(iss=RS_ISS), public_pem)
        assert await code_of(v, confused) == "CPN-LEG-004"

    async def test_revoked_subject_and_stale_view(self) -> None:
        """A subject revoked at the Authority is revoked for legacy tokens too; a stale view
        fails closed with CPN-DEP-001."""
        view = fresh_view()
        token = sign(claims(sub="mallory"))
        view.apply(
            [
                RevocationRecord(
                    kind="subject",
                    value="mallory",
                    reason="left",
                    actor="admin",
                    revoked_at=int(time.time()) + 5,
                    seq=1,
                )
            ]
        )
        assert await code_of(verifier(hs_issuer(), view=view), token) == "CPN-REV-001"
        stale = RevocationView(max_staleness=1)
        stale.mark_fresh(time.time() - 100)
        with pytest.raises(DependencyUnavailable) as caught:
            await verifier(hs_issuer(), view=stale).verify(sign(claims()), READ, now=time.time())
        assert caught.value.code is codes.UNAVAILABLE_REVOCATION


@pytest.mark.asyncio
class TestJwks:
    @pytest.mark.parametrize("which", [1, 2])
    async def test_rs256_and_es256(
        self, idp: tuple[JwksServer, LegacyKey, LegacyKey], which: int
    ) -> None:
        """Both asymmetric algorithms verify with the JWKS key named by kid."""
        server, *keys = idp
        key = keys[which - 1]
        token = key.sign(claims(iss=RS_ISS, scope=None, permissions=["orders:read"]))
        verified = await verifier(rs_issuer(server.url)).verify(token, READ, now=time.time())
        assert (verified.alg, verified.kid) == (key.alg, key.jwk["kid"])

    async def test_keys_are_cached_and_rotation_refetches(
        self, idp: tuple[JwksServer, LegacyKey, LegacyKey]
    ) -> None:
        """One fetch serves many tokens; a token with a new kid fetches the set again."""
        server, rsa_key, _ec = idp
        v = verifier(rs_issuer(server.url))
        payload = claims(iss=RS_ISS, permissions=["orders:read"])
        for _ in range(3):
            await v.verify(rsa_key.sign(payload), READ, now=time.time())
        assert server.requests == 1
        rotated = LegacyKey.generate("RS256")
        server.keys.append(rotated.jwk)
        await v.verify(rotated.sign(payload), READ, now=time.time())
        assert server.requests == 2
        unknown = LegacyKey.generate("RS256")
        assert await code_of(v, unknown.sign(payload)) == "CPN-LEG-005"
        assert await code_of(v, unknown.sign(payload, kid=rsa_key.jwk["kid"])) == "CPN-LEG-005"

    async def test_unknown_kid_refetch_is_rate_limited(
        self, idp: tuple[JwksServer, LegacyKey, LegacyKey]
    ) -> None:
        """Made-up kids do not turn every request into a fetch."""
        server, rsa_key, _ec = idp
        v = verifier(rs_issuer(server.url), jwks=JwksCache(min_refresh=60))
        payload = claims(iss=RS_ISS, permissions=["orders:read"])
        await v.verify(rsa_key.sign(payload), READ, now=time.time())
        for i in range(5):
            assert await code_of(v, rsa_key.sign(payload, kid=f"made-up-{i}")) == "CPN-LEG-005"
        assert server.requests == 1

    async def test_issuer_down(self, idp: tuple[JwksServer, LegacyKey, LegacyKey]) -> None:
        """Nothing fetched yet and the URL failing: CPN-LEG-009 (a 503), never an allow;
        once fetched, the cached keys serve while the URL fails."""
        server, rsa_key, _ec = idp
        payload = claims(iss=RS_ISS, permissions=["orders:read"])
        server.fail = True
        v = verifier(rs_issuer(server.url))
        assert await code_of(v, rsa_key.sign(payload)) == "CPN-LEG-009"
        server.fail = False
        await v.verify(rsa_key.sign(payload), READ, now=time.time())
        server.fail = True
        await v.verify(rsa_key.sign(payload), READ, now=time.time())

    async def test_keys_too_old_fail_closed(
        self, idp: tuple[JwksServer, LegacyKey, LegacyKey]
    ) -> None:
        """Past cache + max_stale with the URL failing, cached keys are no longer used."""
        server, rsa_key, _ec = idp
        clock = [1000.0]
        cache = JwksCache(clock=lambda: clock[0], min_refresh=0)
        issuer = rs_issuer(server.url, jwks_cache_seconds=10, jwks_max_stale=20)
        v = verifier(issuer, jwks=cache)
        payload = claims(iss=RS_ISS, permissions=["orders:read"])
        await v.verify(rsa_key.sign(payload), READ, now=time.time())
        server.fail = True
        clock[0] += 25
        await v.verify(rsa_key.sign(payload), READ, now=time.time())
        clock[0] += 10
        assert await code_of(v, rsa_key.sign(payload)) == "CPN-LEG-009"
        assert cache.failures == 2


class TestSettings:
    @pytest.mark.parametrize(
        "fields",
        [
            {"algorithms": ["HS256", "RS256"], "secret": HS_SECRET},
            {"algorithms": ["HS256"], "secret": "short"},
            {"algorithms": ["HS256"]},
            {"algorithms": ["RS256"], "secret": HS_SECRET},
            {"algorithms": ["RS256"], "jwks_url": "file:///etc/passwd"},
            {"algorithms": ["none"], "secret": HS_SECRET},
            {"algorithms": [], "secret": HS_SECRET},
        ],
    )
    def test_refused(self, fields: dict[str, Any]) -> None:
        """Mixed families, short secrets, missing keys, other schemes, unknown algs."""
        with pytest.raises(ValidationError):
            LegacyIssuer.model_validate({"issuer": HS_ISS} | fields)

    def test_bad_resource_pattern_refused_at_start(self) -> None:
        """A scope mapping with a malformed resource pattern stops the verifier from starting."""
        issuer = hs_issuer(scopes={"x": {"resource": "orders/**/x", "actions": ["read"]}})
        with pytest.raises(CouponError):
            verifier(issuer)

    def test_duplicate_issuer_refused(self) -> None:
        """Two issuers with one iss are a configuration error."""
        with pytest.raises(ValueError, match="share an iss"):
            verifier(hs_issuer(), hs_issuer())


class TestAdoptionLabels:
    def test_audience_label_set_is_bounded(self) -> None:
        """Past 256 audiences, further ones are counted as _other."""
        metrics = AuthorityMetrics()
        for i in range(300):
            metrics.count_verify(f"aud-{i}", "legacy", allow=True)
        metrics.count_verify("aud-0", "coupon", allow=False, code="CPN-SIG-001")
        value = metrics.registry.get_sample_value
        labels = {"audience": "_other", "kind": "legacy", "allow": "true"}
        assert value("coupon_verify_decisions_total", labels) == 44
        coupon = {"audience": "aud-0", "kind": "coupon", "allow": "false"}
        assert value("coupon_verify_decisions_total", coupon) == 1
        denial = {"kind": "coupon", "code": "CPN-SIG-001"}
        assert value("coupon_verify_denials_total", denial) == 1


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hs256_by_hand(payload: dict[str, Any], key: bytes) -> str:
    """An HS256 token keyed by ``key`` (PyJWT itself refuses public keys as HMAC secrets)."""
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(payload).encode())
    mac = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(mac)}"


def _flip(token: str, index: int) -> str:
    chars = list(token)
    chars[index] = "A" if chars[index] != "A" else "B"
    return "".join(chars)


@pytest.mark.asyncio
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
async def test_mutations_never_allow(data: st.DataObject) -> None:
    """Changing any one character of a valid token never yields an allow."""
    token = sign(claims())
    v = verifier(hs_issuer())
    index = data.draw(st.integers(min_value=0, max_value=len(token) - 1))
    mutated = _flip(token, index)
    try:
        verified = await v.verify(mutated, READ, now=time.time())
    except CouponError:
        return
    # base64url has spare bits: a flip in the last character may decode to the same bytes.
    head, body, sig = mutated.split(".")
    original = token.split(".")
    same = [
        base64.urlsafe_b64decode(p + "=" * (-len(p) % 4))
        == base64.urlsafe_b64decode(q + "=" * (-len(q) % 4))
        for p, q in zip((head, body, sig), original, strict=True)
    ]
    assert all(same), f"mutation at {index} was allowed: {verified}"
