"""Typed examples of the public API, checked by ``mypy --strict`` (never run by pytest).

Each function uses part of the API the way an application would; ``assert_type`` pins the
types the API promises, so a change to a public signature shows up here as a type error.
"""

from __future__ import annotations

from typing import Any, assert_type

import coupon
from coupon import (
    Binding,
    Claims,
    CouponBuilder,
    CouponError,
    Decision,
    KeySet,
    Request,
    SigningKey,
    Verified,
    Verifier,
    VerifyingKey,
    attenuate,
    create_dpop_proof,
    mint,
    verify_dpop_proof,
)
from coupon.codes import ErrorCode
from coupon.errors import DependencyUnavailable, InsufficientScope, InvalidCoupon, error
from coupon.token import (
    DpopProof,
    MemoryReplayStore,
    MemoryRevocations,
    ReplayStore,
    ResourcePattern,
    RevocationChecker,
    RevocationFacts,
    Signer,
    parse_resource,
    purpose_covers,
    x5t_s256,
)
from coupon.token.hazmat import CompactJWS, b64url_decode, b64url_encode, parse_compact

NOW = 1_700_000_000


def keys_and_key_sets() -> KeySet:
    """Generate, export and load keys; a key set signs with its first key."""
    issuer = SigningKey.generate("ES256", kid="issuer-2024")
    assert_type(issuer.alg, str)
    assert_type(issuer.public, VerifyingKey)
    jwk: dict[str, str] = issuer.private_jwk()
    restored = SigningKey.from_jwk(jwk)
    public = VerifyingKey.from_jwk(restored.public.jwk())
    keys = KeySet([restored, public])
    assert_type(keys.signer, SigningKey | Signer)
    assert_type(keys.get("issuer-2024"), VerifyingKey | None)
    assert_type(KeySet.from_jwks(keys.to_jwks()), KeySet)
    return keys


class KmsSigner:
    """A signer whose private key stays elsewhere (here: in memory, for the example)."""

    def __init__(self) -> None:
        self._key = SigningKey.generate()

    @property
    def alg(self) -> str:
        return self._key.alg

    @property
    def kid(self) -> str:
        return "kms-1"

    @property
    def public(self) -> VerifyingKey:
        return self._key.public

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)


def minting(holder: SigningKey) -> tuple[str, str]:
    """Mint with the function and with the builder, including with a custom signer."""
    signer: Signer = KmsSigner()
    token: str = mint(
        signer,
        issuer="https://authority.example",
        subject="svc-a",
        audience=["orders-api", "billing-api"],
        tenant="acme",
        resource="orders/**",
        actions=("read", "write"),
        purpose="billing",
        binding=Binding(jkt=holder.public.thumbprint),
        ttl=300,
        now=NOW,
    )
    builder = (
        CouponBuilder()
        .issuer("https://authority.example")
        .subject("svc-a")
        .audience("orders-api")
        .tenant("acme")
        .resource("orders/*")
        .actions("read")
        .purpose("billing.refund")
        .bind(Binding(x5t_s256=x5t_s256(b"DER bytes of the client certificate")))
        .lifetime(now=NOW, ttl=60)
        .jti("coupon-1")
    )
    assert_type(builder, CouponBuilder)
    assert_type(builder.build(), Claims)
    return token, builder.sign(signer)


def delegating(token: str, holder: SigningKey, delegate: SigningKey) -> str:
    """Attenuate offline, then let the Authority mint a narrower sub-coupon of the chain."""
    chain: str = attenuate(
        token,
        holder,
        delegate=Binding(jkt=delegate.public.thumbprint),
        subject="svc-b",
        resource="orders/42",
        actions=["read"],
        ttl=60,
        now=NOW,
    )
    sub: str = (
        CouponBuilder()
        .child_of(chain)
        .issuer("https://authority.example")
        .subject("svc-c")
        .audience("orders-api")
        .resource("orders/42")
        .actions("read")
        .purpose("billing")
        .bind(Binding(jkt=delegate.public.thumbprint))
        .lifetime(now=NOW, ttl=30)
        .jti("sub-1")
        .sign(holder)
    )
    return sub


class RedisReplayStore:
    """A replay store the way a service would write one."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def first_use(self, key: str, *, expires_at: float, now: float) -> bool:
        if key in self._seen:
            return False
        self._seen.add(key)
        return True


class FeedRevocations:
    """A revocation checker fed by the Authority."""

    def revoked(self, facts: RevocationFacts, *, now: float) -> str | None:
        if facts.lineage == "compromised":
            return "lineage revoked"
        return None


def verifying(keys: KeySet, token: str, holder: SigningKey) -> Claims | None:
    """Verify with a configured verifier; read the decision and the errors."""
    replay: ReplayStore = RedisReplayStore()
    revocations: RevocationChecker = FeedRevocations()
    in_memory = Verifier(keys, replay=MemoryReplayStore(), revocations=MemoryRevocations())
    assert_type(in_memory.keys, KeySet)
    verifier = Verifier(
        keys,
        issuers=["https://authority.example"],
        max_ttl=600,
        leeway=10,
        replay=replay,
        revocations=revocations,
    )
    uri = "https://orders.example/orders/42"
    dpop = create_dpop_proof(holder, method="GET", uri=uri, now=NOW, jti="p1", access_token=token)
    request = Request(
        audience="orders-api",
        resource="orders/42",
        action="read",
        purpose="billing",
        tenant="acme",
        method="GET",
        uri=uri,
        dpop=dpop,
    )
    decision = verifier.decide(token, request, now=NOW)
    assert_type(decision, Decision)
    assert_type(decision.timings, dict[str, float])
    if not decision.allowed:
        failure = decision.error
        assert_type(failure, CouponError | None)
        if failure is not None:
            assert_type(failure.code, ErrorCode)
            code: str = failure.code.code
            status: int = failure.code.status
            text: str = failure.diagnostics()
            assert code
            assert status
            assert text
        return None
    try:
        verified = verifier.verify(token, request, now=NOW)
    except InsufficientScope as exc:
        assert_type(exc.step, str | None)
        return None
    except (InvalidCoupon, DependencyUnavailable):
        return None
    assert_type(verified, Verified)
    assert_type(verified.proof, DpopProof | None)
    assert_type(verified.chain, tuple[Claims, ...])
    assert_type(coupon.verify(token, keys, request, now=NOW, leeway=5), Verified)
    return verified.claims


def checking_dpop_alone(proof: str) -> str:
    """Check a DPoP proof outside the verifier (e.g. at a token endpoint)."""
    checked = verify_dpop_proof(proof, method="POST", uri="https://as.example/token", now=NOW)
    assert_type(checked, DpopProof)
    return checked.jkt


def scopes() -> bool:
    """Match resources and purposes."""
    pattern = ResourcePattern.parse("orders/*/items/**")
    resource = parse_resource("/orders/42/items/7/")
    assert_type(resource, tuple[str, ...])
    narrower = ResourcePattern.parse("orders/42/items/**")
    return pattern.matches(resource) and pattern.covers(narrower) and purpose_covers("a", "a.b")


def hazmat(token: str) -> bytes:
    """Split a compact JWS with the raw pieces."""
    jws = parse_compact(token, max_size=8192)
    assert_type(jws, CompactJWS)
    assert_type(jws.claims(), dict[str, Any])
    return b64url_decode(b64url_encode(jws.signature))


def errors() -> CouponError:
    """Build an error from its code, as a handler table would."""
    from coupon import codes

    built = error(codes.SCOPE_RESOURCE, "resource not granted", step="scope")
    assert_type(built, CouponError)
    return built
