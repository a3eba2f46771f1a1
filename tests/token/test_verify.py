"""The verification pipeline of ``coupon.token._verify``, one class per step, at a fixed ``now``."""

from __future__ import annotations

import asyncio
import itertools
import json
from datetime import UTC, datetime
from typing import Any, Final

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

import coupon
from coupon import codes
from coupon.codes import ErrorCode
from coupon.errors import DependencyUnavailable, InsufficientScope, ProofReplayed
from coupon.token import (
    COUPON_TYP,
    DEFAULT_MAX_DEPTH,
    Binding,
    CouponBuilder,
    Decision,
    KeySet,
    MemoryReplayStore,
    MemoryRevocations,
    ReplayStore,
    Request,
    RevocationChecker,
    RevocationFacts,
    SigningKey,
    Verified,
    Verifier,
    attenuate,
    create_dpop_proof,
    link_hash,
    mint,
    x5t_s256,
)
from coupon.token.hazmat import b64url_decode, b64url_encode, encode_compact

NOW: Final = 1_700_000_000
ISS: Final = "https://authority.example"
AUD: Final = "orders-api"
TENANT: Final = "acme"
URI: Final = "https://orders.example/orders/42"
LEEWAY: Final = 30  # the Verifier's default
MAX_TTL: Final = 3600  # the Verifier's default
DPOP_MAX_AGE: Final = 60  # the Verifier's default

ISSUER = SigningKey.generate(kid="issuer-ed")
ISSUER_ES = SigningKey.generate("ES256", kid="issuer-es")
HOLDER = SigningKey.generate()
HOLDER_ES = SigningKey.generate("ES256")
OTHER = SigningKey.generate()
DELEGATES = tuple(SigningKey.generate() for _ in range(DEFAULT_MAX_DEPTH + 1))

_proof_ids = itertools.count()


def certificate(name: str) -> bytes:
    """A self-signed DER certificate, standing for the one a client presents over mTLS."""
    key = ed25519.Ed25519PrivateKey.generate()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(datetime(2023, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2033, 1, 1, tzinfo=UTC))
        .sign(key, None)
    )
    return cert.public_bytes(Encoding.DER)


CERT = certificate("svc-a")
CERT_OTHER = certificate("svc-b")


# -- building coupons ---------------------------------------------------------------------------


def coupon_for(
    signer: SigningKey = ISSUER, *, holder: SigningKey = HOLDER, **overrides: Any
) -> str:
    """A root coupon for ``orders/**`` (read, write; billing) bound to ``holder``, minted at NOW."""
    values: dict[str, Any] = {
        "issuer": ISS,
        "subject": "svc-a",
        "audience": AUD,
        "tenant": TENANT,
        "resource": "orders/**",
        "actions": ["read", "write"],
        "purpose": "billing",
        "binding": Binding(jkt=holder.public.thumbprint),
        "ttl": 300,
        "now": NOW,
        "jti": "root-1",
    }
    values.update(overrides)
    return mint(signer, **values)


def claims_of(token: str) -> dict[str, Any]:
    """The decoded claims of the last link of ``token``."""
    payload = token.split("~")[-1].split(".")[1]
    result: dict[str, Any] = json.loads(b64url_decode(payload))
    return result


def root_claims(**overrides: Any) -> dict[str, Any]:
    """A valid root claims object (as ``coupon_for`` would mint it), with ``overrides``."""
    return {**claims_of(coupon_for()), **overrides}


def sign_root(claims: dict[str, Any], signer: SigningKey = ISSUER) -> str:
    """Sign ``claims`` as a root coupon, bypassing every builder check."""
    header = {"alg": signer.alg, "typ": COUPON_TYP, "kid": signer.kid}
    signing_input, prefix = encode_compact(header, claims)
    return f"{prefix}.{b64url_encode(signer.sign(signing_input))}"


def public_jwk(key: SigningKey) -> dict[str, str]:
    """The bare public JWK a chain link carries in its header."""
    return {k: v for k, v in key.public.jwk().items() if k not in ("kid", "alg", "use")}


def link_claims(parent_token: str, delegate: SigningKey, **overrides: Any) -> dict[str, Any]:
    """Claims of a valid link that narrows nothing, below the last link of ``parent_token``."""
    parent = claims_of(parent_token)
    claims = {
        **parent,
        "iss": parent["sub"],
        "sub": "svc-b",
        "iat": NOW,
        "nbf": NOW,
        "jti": f"link-{parent['dep'] + 1}",
        "cnf": {"jkt": delegate.public.thumbprint},
        "dep": parent["dep"] + 1,
        "par": {"jti": parent["jti"], "hsh": link_hash(parent_token.split("~")[-1])},
    }
    return {**claims, **overrides}


def sign_link(
    parent_token: str,
    claims: dict[str, Any],
    signer: SigningKey,
    *,
    jwk_of: SigningKey | None = None,
) -> str:
    """Append a link with ``claims`` signed by ``signer`` (header ``jwk`` of ``jwk_of``)."""
    header = {"alg": signer.alg, "typ": COUPON_TYP, "jwk": public_jwk(jwk_of or signer)}
    signing_input, prefix = encode_compact(header, claims)
    return f"{parent_token}~{prefix}.{b64url_encode(signer.sign(signing_input))}"


def chain_of_depth(depth: int) -> str:
    """A root bound to ``HOLDER`` attenuated offline ``depth`` times."""
    token, holders = coupon_for(), (HOLDER, *DELEGATES)
    for level in range(depth):
        token = attenuate(
            token,
            holders[level],
            delegate=Binding(jkt=holders[level + 1].public.thumbprint),
            subject=f"svc-{level + 1}",
            now=NOW,
            jti=f"link-{level + 1}",
            max_depth=depth,
        )
    return token


# -- presenting coupons -------------------------------------------------------------------------


def proof(token: str, key: SigningKey = HOLDER, *, now: int = NOW, uri: str = URI) -> str:
    """A fresh DPoP proof by ``key`` for a GET of ``uri`` presenting ``token``."""
    jti = f"proof-{next(_proof_ids)}"
    return create_dpop_proof(key, method="GET", uri=uri, now=now, jti=jti, access_token=token)


def request_for(token: str, key: SigningKey = HOLDER, *, now: int = NOW, **fields: Any) -> Request:
    """A request reading ``orders/42`` for billing, with a fresh DPoP proof by ``key``."""
    values: dict[str, Any] = {
        "audience": AUD,
        "resource": "orders/42",
        "action": "read",
        "purpose": "billing",
        "tenant": TENANT,
        "method": "GET",
        "uri": URI,
        "dpop": proof(token, key, now=now),
    }
    values.update(fields)
    return Request(**values)


def verifier(**options: Any) -> Verifier:
    """A verifier trusting both issuer keys."""
    return Verifier(KeySet([ISSUER, ISSUER_ES]), **options)


def assert_allowed(decision: Decision) -> Verified:
    """Assert ``decision`` allows and return what was verified."""
    assert decision.allowed, decision.error
    assert decision.error is None
    assert decision.verified is not None
    return decision.verified


def assert_denied(decision: Decision, code: ErrorCode, step: str) -> None:
    """Assert ``decision`` denies with ``code`` at ``step``, carried by the class ``code`` names."""
    assert not decision.allowed
    assert decision.verified is None
    assert decision.error is not None
    assert (decision.error.code.code, decision.error.step) == (code.code, step)
    assert type(decision.error).__name__ == code.kind


# -- the steps ----------------------------------------------------------------------------------


class TestHappyPath:
    """Valid coupons, presented properly, are allowed."""

    def test_eddsa_issuer(self) -> None:
        """A coupon signed by an Ed25519 issuer key verifies and names its kid."""
        token = coupon_for(ISSUER)
        verified = verifier().verify(token, request_for(token), now=NOW)
        assert verified.kid == "issuer-ed"
        assert verified.claims.jti == "root-1"
        assert verified.chain == (verified.claims,)
        assert not verified.cached

    def test_es256_issuer(self) -> None:
        """A coupon signed by a P-256 issuer key verifies and names its kid."""
        token = coupon_for(ISSUER_ES)
        verified = verifier().verify(token, request_for(token), now=NOW)
        assert verified.kid == "issuer-es"

    def test_dpop_bound_with_es256_holder(self) -> None:
        """A coupon bound to a P-256 holder key verifies with that key's DPoP proof."""
        token = coupon_for(holder=HOLDER_ES)
        verified = verifier().verify(token, request_for(token, HOLDER_ES), now=NOW)
        assert verified.proof is not None
        assert verified.proof.jkt == HOLDER_ES.public.thumbprint
        assert verified.proof.htu == URI

    def test_mtls_bound(self) -> None:
        """A coupon bound to a certificate verifies when that certificate is presented."""
        token = coupon_for(binding=Binding(x5t_s256=x5t_s256(CERT)))
        request = Request(audience=AUD, resource="orders/42", certificate=x5t_s256(CERT))
        verified = verifier().verify(token, request, now=NOW)
        assert verified.proof is None
        assert verified.claims.cnf.x5t_s256 == x5t_s256(CERT)

    def test_offline_chain(self) -> None:
        """An attenuated chain verifies with the delegate's proof and returns every link."""
        token = attenuate(
            coupon_for(),
            HOLDER,
            delegate=Binding(jkt=DELEGATES[0].public.thumbprint),
            subject="svc-b",
            resource="orders/42",
            actions=["read"],
            now=NOW,
            jti="link-1",
        )
        verified = verifier().verify(token, request_for(token, DELEGATES[0]), now=NOW)
        assert [c.jti for c in verified.chain] == ["root-1", "link-1"]
        assert verified.claims.sub == "svc-b"
        assert verified.kid == "issuer-ed"

    def test_module_level_verify(self) -> None:
        """``coupon.verify`` verifies once with a throw-away verifier and its options."""
        token = coupon_for()
        verified = coupon.verify(token, KeySet([ISSUER]), request_for(token), now=NOW, leeway=0)
        assert verified.claims.sub == "svc-a"

    def test_route_without_scope_fields(self) -> None:
        """A request that names no resource, action, purpose or tenant checks none of them."""
        token = coupon_for()
        request = Request(audience=AUD, method="GET", uri=URI, dpop=proof(token))
        assert_allowed(verifier().decide(token, request, now=NOW))


class TestParse:
    """Step ``parse``: what is not a coupon at all."""

    @pytest.mark.parametrize("token", ["", "a", "a.b", "a.b.c.d", "..", "a..c"])
    def test_not_a_compact_jws(self, token: str) -> None:
        """A string that is not three non-empty parts is denied with CPN-TOK-002."""
        assert_denied(
            verifier().decide(token, Request(audience=AUD), now=NOW),
            codes.TOKEN_MALFORMED,
            "parse",
        )

    def test_non_ascii(self) -> None:
        """A token with a non-ASCII character is denied with CPN-TOK-002."""
        token = coupon_for()
        tampered = token[:10] + "é" + token[11:]
        assert_denied(
            verifier().decide(tampered, Request(audience=AUD), now=NOW),
            codes.TOKEN_MALFORMED,
            "parse",
        )

    def test_size_limit_is_exact(self) -> None:
        """A token exactly at ``max_size`` parses and one character more is CPN-TOK-001."""
        token = coupon_for()
        allowed = verifier(max_size=len(token)).decide(token, request_for(token), now=NOW)
        assert_allowed(allowed)
        denied = verifier(max_size=len(token) - 1).decide(token, request_for(token), now=NOW)
        assert_denied(denied, codes.TOKEN_TOO_LARGE, "parse")

    def test_not_a_string(self) -> None:
        """Passing something other than a str is a programming error (TypeError)."""
        with pytest.raises(TypeError):
            verifier().verify(b"token", Request(audience=AUD), now=NOW)  # type: ignore[arg-type]


class TestSignature:
    """Step ``signature``: the root is signed by a trusted key."""

    def test_unknown_kid(self) -> None:
        """A well-formed kid that names no trusted key is denied with CPN-HDR-004."""
        token = coupon_for(SigningKey.generate(kid="issuer-unknown"))
        assert_denied(
            verifier().decide(token, request_for(token), now=NOW), codes.HEADER_KID, "signature"
        )

    def test_impostor_with_a_trusted_kid(self) -> None:
        """A coupon signed by another key under a trusted kid is denied with CPN-SIG-001."""
        token = coupon_for(SigningKey.generate(kid="issuer-ed"))
        assert_denied(
            verifier().decide(token, request_for(token), now=NOW), codes.SIGNATURE, "signature"
        )

    def test_kid_of_a_key_with_another_algorithm(self) -> None:
        """An ES256 coupon under the kid of the Ed25519 issuer is denied with CPN-HDR-005."""
        token = coupon_for(SigningKey.generate("ES256", kid="issuer-ed"))
        assert_denied(
            verifier().decide(token, request_for(token), now=NOW),
            codes.HEADER_ALG_KEY,
            "signature",
        )

    def test_root_deeper_than_max_depth(self) -> None:
        """An Authority sub-coupon deeper than ``max_depth`` is denied with CPN-CHAIN-004."""
        parent = coupon_for()
        child = (
            CouponBuilder()
            .child_of(parent)
            .issuer(ISS)
            .subject("svc-b")
            .audience(AUD)
            .resource("orders/42")
            .actions("read")
            .purpose("billing")
            .bind(Binding(jkt=HOLDER.public.thumbprint))
            .lifetime(now=NOW, ttl=60)
            .jti("child-1")
            .sign(ISSUER)
        )
        assert_allowed(verifier(max_depth=1).decide(child, request_for(child), now=NOW))
        assert_denied(
            verifier(max_depth=0).decide(child, request_for(child), now=NOW),
            codes.CHAIN_DEPTH,
            "signature",
        )


class TestChain:
    """Step ``chain``: every offline link is signed by the bound key, names and narrows it."""

    @pytest.mark.parametrize("depth", range(1, DEFAULT_MAX_DEPTH + 1))
    def test_depth_up_to_max(self, depth: int) -> None:
        """Chains of 1 to ``max_depth`` links verify with the last delegate's proof."""
        token = chain_of_depth(depth)
        verified = assert_allowed(
            verifier().decide(token, request_for(token, DELEGATES[depth - 1]), now=NOW)
        )
        assert len(verified.chain) == depth + 1
        assert verified.claims.dep == depth

    def test_one_link_too_many(self) -> None:
        """A chain of ``max_depth + 1`` links is denied with CPN-CHAIN-004 before any parsing."""
        token = chain_of_depth(DEFAULT_MAX_DEPTH + 1)
        assert_denied(
            verifier().decide(token, request_for(token, DELEGATES[-1]), now=NOW),
            codes.CHAIN_DEPTH,
            "parse",
        )

    def test_verifier_max_depth(self) -> None:
        """A verifier configured with a smaller ``max_depth`` denies a deeper chain."""
        token = chain_of_depth(3)
        assert_denied(
            verifier(max_depth=2).decide(token, request_for(token, DELEGATES[2]), now=NOW),
            codes.CHAIN_DEPTH,
            "parse",
        )

    def test_link_naming_another_parent_jti(self) -> None:
        """A link whose ``par.jti`` is not its parent's is denied with CPN-CHAIN-002."""
        parent = coupon_for()
        claims = link_claims(parent, DELEGATES[0])
        claims["par"] = {**claims["par"], "jti": "root-2"}
        token = sign_link(parent, claims, HOLDER)
        assert_denied(
            verifier().decide(token, request_for(token, DELEGATES[0]), now=NOW),
            codes.CHAIN_PARENT,
            "chain",
        )

    def test_link_naming_another_parent_hash(self) -> None:
        """A link whose ``par.hsh`` is not its parent's hash is denied with CPN-CHAIN-002."""
        parent = coupon_for()
        claims = link_claims(parent, DELEGATES[0])
        claims["par"] = {**claims["par"], "hsh": link_hash(coupon_for(jti="root-2"))}
        token = sign_link(parent, claims, HOLDER)
        assert_denied(
            verifier().decide(token, request_for(token, DELEGATES[0]), now=NOW),
            codes.CHAIN_PARENT,
            "chain",
        )

    def test_link_moved_to_another_root(self) -> None:
        """A valid link cut from its chain and put after another root is denied (CPN-CHAIN-002)."""
        original = attenuate(
            coupon_for(ttl=200),
            HOLDER,
            delegate=Binding(jkt=DELEGATES[0].public.thumbprint),
            subject="svc-b",
            now=NOW,
            jti="link-1",
        )
        other_root = coupon_for(ttl=300)
        token = f"{other_root}~{original.split('~')[1]}"
        assert_denied(
            verifier().decide(token, request_for(token, DELEGATES[0]), now=NOW),
            codes.CHAIN_PARENT,
            "chain",
        )

    def test_link_issuer_is_not_the_parent_subject(self) -> None:
        """A link whose ``iss`` is not its parent's ``sub`` is denied with CPN-CHAIN-002."""
        parent = coupon_for()
        token = sign_link(parent, link_claims(parent, DELEGATES[0], iss="svc-x"), HOLDER)
        assert_denied(
            verifier().decide(token, request_for(token, DELEGATES[0]), now=NOW),
            codes.CHAIN_PARENT,
            "chain",
        )

    def test_link_signed_by_another_key(self) -> None:
        """A link signed by (and carrying) a key other than the bound one is CPN-CHAIN-001."""
        parent = coupon_for()
        token = sign_link(parent, link_claims(parent, DELEGATES[0]), OTHER)
        assert_denied(
            verifier().decide(token, request_for(token, DELEGATES[0]), now=NOW),
            codes.CHAIN_LINK,
            "chain",
        )

    def test_link_carrying_the_bound_key_but_signed_by_another(self) -> None:
        """A link that shows the bound key but is signed by another is denied with CPN-SIG-001."""
        parent = coupon_for()
        token = sign_link(parent, link_claims(parent, DELEGATES[0]), OTHER, jwk_of=HOLDER)
        assert_denied(
            verifier().decide(token, request_for(token, DELEGATES[0]), now=NOW),
            codes.SIGNATURE,
            "chain",
        )

    @staticmethod
    def link_with_jwk(jwk: dict[str, str]) -> str:
        """A chain whose link carries ``jwk`` in its header (signed by the holder anyway)."""
        parent = coupon_for()
        header = {"alg": "EdDSA", "typ": COUPON_TYP, "jwk": jwk}
        signing_input, prefix = encode_compact(header, link_claims(parent, DELEGATES[0]))
        return f"{parent}~{prefix}.{b64url_encode(HOLDER.sign(signing_input))}"

    @pytest.mark.parametrize(
        "jwk",
        [
            pytest.param({"kty": "oct", "k": "c2VjcmV0"}, id="symmetric"),
            pytest.param({**public_jwk(HOLDER), "d": "A" * 43}, id="private"),
            pytest.param({**public_jwk(HOLDER), "kid": "holder"}, id="kid"),
            pytest.param(
                {
                    "kty": "RSA",
                    "n": b64url_encode(((1 << 2047) | 1).to_bytes(256, "big")),
                    "e": b64url_encode(((1 << 2047) | 3).to_bytes(256, "big")),
                },
                id="rsa-e-above-n",
            ),
        ],
    )
    def test_link_key_with_foreign_members(self, jwk: dict[str, str]) -> None:
        """A link key with members beyond kty, crv, x, y is denied with CPN-HDR-006."""
        token = self.link_with_jwk(jwk)
        assert_denied(
            verifier().decide(token, request_for(token, DELEGATES[0]), now=NOW),
            codes.HEADER_FIELD,
            "parse",
        )

    @pytest.mark.parametrize(
        "jwk",
        [
            pytest.param({"kty": "OKP", "crv": "X25519", "x": "A" * 43}, id="x25519"),
            pytest.param({"kty": "EC", "crv": "P-256", "x": "A" * 43, "y": "A" * 43}, id="ec-0-0"),
            pytest.param({"kty": "EC", "crv": "P-521", "x": "A" * 43, "y": "A" * 43}, id="p521"),
            pytest.param({"kty": "OKP", "crv": "Ed25519"}, id="no-x"),
            pytest.param({"kty": "OKP", "crv": "Ed25519", "x": "A" * 42}, id="short-x"),
            pytest.param({"kty": "RSA"}, id="rsa-without-modulus"),
            pytest.param({}, id="empty"),
        ],
    )
    def test_link_key_unusable(self, jwk: dict[str, str]) -> None:
        """A link whose header key cannot be loaded is denied with CPN-CHAIN-001, never a crash."""
        token = self.link_with_jwk(jwk)
        assert_denied(
            verifier().decide(token, request_for(token, DELEGATES[0]), now=NOW),
            codes.CHAIN_LINK,
            "chain",
        )

    def test_link_on_certificate_bound_parent(self) -> None:
        """A link below a certificate-bound coupon is denied with CPN-CHAIN-005."""
        parent = coupon_for(binding=Binding(x5t_s256=x5t_s256(CERT)))
        token = sign_link(parent, link_claims(parent, DELEGATES[0]), HOLDER)
        assert_denied(
            verifier().decide(token, request_for(token, DELEGATES[0]), now=NOW),
            codes.CHAIN_BINDING,
            "chain",
        )

    @pytest.mark.parametrize(
        "overrides",
        [
            pytest.param({"res": "**"}, id="resource"),
            pytest.param({"act": ["delete", "read"]}, id="action"),
            pytest.param({"pur": "ops"}, id="purpose"),
            pytest.param({"aud": ["billing-api", AUD]}, id="audience"),
            pytest.param({"exp": NOW + 301}, id="expiry"),
            pytest.param({"tid": "globex"}, id="tenant"),
            pytest.param({"lin": "another-lineage"}, id="lineage"),
        ],
    )
    def test_widening_link(self, overrides: dict[str, Any]) -> None:
        """A holder-signed link that widens its parent in any way is denied with CPN-CHAIN-003."""
        parent = coupon_for()
        token = sign_link(parent, link_claims(parent, DELEGATES[0], **overrides), HOLDER)
        assert_denied(
            verifier().decide(token, request_for(token, DELEGATES[0]), now=NOW),
            codes.CHAIN_WIDENS,
            "chain",
        )

    def test_link_earlier_than_parent(self) -> None:
        """A link that becomes valid before its parent is denied with CPN-CHAIN-003."""
        parent = coupon_for(now=NOW - 10)
        claims = link_claims(parent, DELEGATES[0], iat=NOW - 11, nbf=NOW - 11)
        token = sign_link(parent, claims, HOLDER)
        assert_denied(
            verifier().decide(token, request_for(token, DELEGATES[0]), now=NOW),
            codes.CHAIN_WIDENS,
            "chain",
        )

    def test_link_binding_a_non_ascii_thumbprint(self) -> None:
        """A link bound to a non-ASCII ``x5t#S256`` is refused as malformed, never a crash."""
        parent = coupon_for()
        claims = link_claims(parent, DELEGATES[0], cnf={"x5t#S256": "é" * 43})
        token = sign_link(parent, claims, HOLDER)
        request = Request(audience=AUD, certificate=x5t_s256(CERT))
        assert_denied(verifier().decide(token, request, now=NOW), codes.TOKEN_CLAIM, "parse")

    def test_link_switching_to_a_certificate_binding(self) -> None:
        """A key-bound coupon may be delegated to a certificate holder, who then needs it."""
        parent = coupon_for()
        claims = link_claims(parent, DELEGATES[0], cnf={"x5t#S256": x5t_s256(CERT)})
        token = sign_link(parent, claims, HOLDER)
        v = verifier()
        assert_allowed(v.decide(token, Request(audience=AUD, certificate=x5t_s256(CERT)), now=NOW))
        assert_denied(
            v.decide(token, Request(audience=AUD, certificate=x5t_s256(CERT_OTHER)), now=NOW),
            codes.POP_CERT_BINDING,
            "binding",
        )


class TestTime:
    """Step ``time``: lifetime bounds and the clock, with leeway, on every link."""

    def test_expired(self) -> None:
        """A coupon long past its expiry is denied with CPN-TIME-001."""
        token = coupon_for(now=NOW - 1000)
        assert_denied(
            verifier().decide(token, request_for(token), now=NOW), codes.TIME_EXPIRED, "time"
        )

    def test_expiry_edge(self) -> None:
        """A coupon is accepted until ``exp + leeway`` and denied from that second on."""
        token = coupon_for(ttl=300)
        last = NOW + 300 + LEEWAY - 1
        assert_allowed(verifier().decide(token, request_for(token, now=last), now=last))
        assert_allowed(verifier().decide(token, request_for(token, now=last), now=last + 0.999))
        first = last + 1
        assert_denied(
            verifier().decide(token, request_for(token, now=first), now=first),
            codes.TIME_EXPIRED,
            "time",
        )

    def test_expiry_edge_without_leeway(self) -> None:
        """With no leeway a coupon is valid before ``exp`` and expired at ``exp`` itself."""
        token = coupon_for(ttl=300)
        v = verifier(leeway=0)
        exp = NOW + 300
        assert_allowed(v.decide(token, request_for(token, now=exp - 1), now=exp - 1))
        assert_denied(
            v.decide(token, request_for(token, now=exp), now=exp), codes.TIME_EXPIRED, "time"
        )

    def test_not_yet_valid(self) -> None:
        """A coupon whose ``nbf`` is far in the future is denied with CPN-TIME-002."""
        token = coupon_for(now=NOW - 10, not_before=NOW + 100, ttl=400)
        assert_denied(
            verifier().decide(token, request_for(token), now=NOW), codes.TIME_NOT_YET, "time"
        )

    def test_not_before_edge(self) -> None:
        """A coupon is accepted from ``nbf - leeway`` and denied one second earlier."""
        token = coupon_for(now=NOW - 10, not_before=NOW + 100, ttl=400)
        first = NOW + 100 - LEEWAY
        assert_allowed(verifier().decide(token, request_for(token, now=first), now=first))
        before = first - 1
        assert_denied(
            verifier().decide(token, request_for(token, now=before), now=before),
            codes.TIME_NOT_YET,
            "time",
        )

    def test_issued_in_the_future(self) -> None:
        """A coupon issued after ``now + leeway`` is denied with CPN-TIME-003."""
        token = coupon_for(now=NOW + LEEWAY + 1)
        assert_denied(
            verifier().decide(token, request_for(token), now=NOW),
            codes.TIME_ISSUED_FUTURE,
            "time",
        )

    def test_issued_at_edge(self) -> None:
        """A coupon issued exactly ``leeway`` seconds ahead of the verifier's clock is accepted."""
        token = coupon_for(now=NOW + LEEWAY)
        assert_allowed(verifier().decide(token, request_for(token), now=NOW))

    def test_ttl_edge(self) -> None:
        """A lifetime of exactly ``max_ttl`` is accepted and one second more is CPN-TIME-004."""
        token = coupon_for(ttl=MAX_TTL)
        assert_allowed(verifier().decide(token, request_for(token), now=NOW))
        token = coupon_for(ttl=MAX_TTL + 1)
        assert_denied(verifier().decide(token, request_for(token), now=NOW), codes.TIME_TTL, "time")

    def test_configured_max_ttl(self) -> None:
        """A verifier's own ``max_ttl`` is enforced."""
        token = coupon_for(ttl=300)
        assert_denied(
            verifier(max_ttl=299).decide(token, request_for(token), now=NOW),
            codes.TIME_TTL,
            "time",
        )

    @pytest.mark.parametrize(
        ("iat", "nbf", "exp"),
        [
            pytest.param(NOW, NOW - 1, NOW + 300, id="nbf-before-iat"),
            pytest.param(NOW, NOW + 300, NOW + 300, id="nbf-equals-exp"),
            pytest.param(NOW, NOW, NOW - 1, id="exp-before-nbf"),
        ],
    )
    def test_out_of_order(self, iat: int, nbf: int, exp: int) -> None:
        """A coupon whose ``iat <= nbf < exp`` does not hold is denied with CPN-TIME-005."""
        token = sign_root(root_claims(iat=iat, nbf=nbf, exp=exp))
        assert_denied(
            verifier().decide(token, request_for(token), now=NOW), codes.TIME_ORDER, "time"
        )

    def test_expired_link_in_a_valid_chain(self) -> None:
        """A chain whose link expired is denied even though its root is still valid."""
        token = attenuate(
            coupon_for(ttl=600),
            HOLDER,
            delegate=Binding(jkt=DELEGATES[0].public.thumbprint),
            subject="svc-b",
            ttl=60,
            now=NOW,
            jti="link-1",
        )
        later = NOW + 60 + LEEWAY
        assert_denied(
            verifier().decide(token, request_for(token, DELEGATES[0], now=later), now=later),
            codes.TIME_EXPIRED,
            "time",
        )


class TestAudience:
    """Step ``audience``: this service is an audience, and the root issuer is trusted."""

    def test_wrong_audience(self) -> None:
        """A coupon for another service is denied with CPN-AUD-001."""
        token = coupon_for()
        assert_denied(
            verifier().decide(token, request_for(token, audience="billing-api"), now=NOW),
            codes.AUDIENCE,
            "audience",
        )

    @pytest.mark.parametrize("audience", [AUD, "billing-api"])
    def test_one_of_several_audiences(self, audience: str) -> None:
        """A coupon for several services is accepted by each of them."""
        token = coupon_for(audience=[AUD, "billing-api"])
        assert_allowed(verifier().decide(token, request_for(token, audience=audience), now=NOW))

    def test_untrusted_issuer(self) -> None:
        """A root issuer outside the allow-list is denied with CPN-AUD-002."""
        token = coupon_for()
        v = verifier(issuers=["https://other.example"])
        assert_denied(v.decide(token, request_for(token), now=NOW), codes.ISSUER, "audience")

    def test_trusted_issuer_of_a_chain(self) -> None:
        """The allow-list is checked against the root issuer, not a link's (the holder)."""
        token = chain_of_depth(1)
        v = verifier(issuers=[ISS])
        assert_allowed(v.decide(token, request_for(token, DELEGATES[0]), now=NOW))


class TestScope:
    """Step ``scope``: tenant, resource, action and purpose are granted by the leaf."""

    def test_tenant(self) -> None:
        """A request for another tenant is denied with CPN-SCOPE-004."""
        token = coupon_for()
        assert_denied(
            verifier().decide(token, request_for(token, tenant="globex"), now=NOW),
            codes.SCOPE_TENANT,
            "scope",
        )

    @pytest.mark.parametrize("resource", ["customers/42", "Orders/42", "ORDERS/42", "ordersx/1"])
    def test_resource(self, resource: str) -> None:
        """A resource outside the grant (case included) is denied with CPN-SCOPE-001."""
        token = coupon_for()
        assert_denied(
            verifier().decide(token, request_for(token, resource=resource), now=NOW),
            codes.SCOPE_RESOURCE,
            "scope",
        )

    @pytest.mark.parametrize("resource", ["/orders/42/", "orders", "orders/42/items/7"])
    def test_resource_granted(self, resource: str) -> None:
        """``orders/**`` grants ``orders`` itself and anything below it, URL slashes included."""
        token = coupon_for()
        assert_allowed(verifier().decide(token, request_for(token, resource=resource), now=NOW))

    @pytest.mark.parametrize("resource", ["orders/../admin", "orders%2F42", "orders/４２"])
    def test_malformed_resource(self, resource: str) -> None:
        """A requested resource that breaks the grammar is denied with CPN-REQ-001."""
        token = coupon_for()
        assert_denied(
            verifier().decide(token, request_for(token, resource=resource), now=NOW),
            codes.REQUEST_RESOURCE,
            "scope",
        )

    def test_action(self) -> None:
        """An action the coupon does not grant is denied with CPN-SCOPE-002."""
        token = coupon_for()
        assert_denied(
            verifier().decide(token, request_for(token, action="delete"), now=NOW),
            codes.SCOPE_ACTION,
            "scope",
        )

    @pytest.mark.parametrize("purpose", ["billingx", "billing2.refund", "ops", "billing_refund"])
    def test_purpose(self, purpose: str) -> None:
        """A purpose outside the granted one is denied with CPN-SCOPE-003."""
        token = coupon_for()
        assert_denied(
            verifier().decide(token, request_for(token, purpose=purpose), now=NOW),
            codes.SCOPE_PURPOSE,
            "scope",
        )

    @pytest.mark.parametrize("purpose", ["Billing", "billing.", "billing..refund", "billing\n"])
    def test_malformed_purpose(self, purpose: str) -> None:
        """A requested purpose that breaks the grammar is denied with CPN-REQ-003."""
        token = coupon_for()
        assert_denied(
            verifier().decide(token, request_for(token, purpose=purpose), now=NOW),
            codes.REQUEST_PURPOSE,
            "scope",
        )

    def test_narrower_purpose(self) -> None:
        """A purpose below the granted one is accepted."""
        token = coupon_for()
        assert_allowed(
            verifier().decide(token, request_for(token, purpose="billing.refund"), now=NOW)
        )

    def test_wider_purpose(self) -> None:
        """A purpose above the granted one is denied with CPN-SCOPE-003."""
        token = coupon_for(purpose="billing.refund")
        assert_denied(
            verifier().decide(token, request_for(token, purpose="billing"), now=NOW),
            codes.SCOPE_PURPOSE,
            "scope",
        )

    def test_leaf_scope_applies_to_a_chain(self) -> None:
        """What the root grants but the link dropped is denied: a chain is checked at its leaf."""
        token = attenuate(
            coupon_for(),
            HOLDER,
            delegate=Binding(jkt=DELEGATES[0].public.thumbprint),
            subject="svc-b",
            resource="orders/7",
            actions=["read"],
            now=NOW,
            jti="link-1",
        )
        assert_denied(
            verifier().decide(token, request_for(token, DELEGATES[0]), now=NOW),
            codes.SCOPE_RESOURCE,
            "scope",
        )


class TestBinding:
    """Step ``binding``: the presenter proves possession of the bound key or certificate."""

    def test_missing_proof(self) -> None:
        """A key-bound coupon presented without a DPoP proof is denied with CPN-POP-001."""
        token = coupon_for()
        assert_denied(
            verifier().decide(token, request_for(token, dpop=None), now=NOW),
            codes.POP_MISSING,
            "binding",
        )

    def test_certificate_is_no_proof_for_a_key_bound_coupon(self) -> None:
        """A client certificate does not stand in for a DPoP proof (CPN-POP-001)."""
        token = coupon_for()
        request = request_for(token, dpop=None, certificate=x5t_s256(CERT))
        assert_denied(verifier().decide(token, request, now=NOW), codes.POP_MISSING, "binding")

    def test_proof_by_another_key(self) -> None:
        """A valid DPoP proof by a key other than the bound one is denied with CPN-POP-012."""
        token = coupon_for()
        assert_denied(
            verifier().decide(token, request_for(token, OTHER), now=NOW),
            codes.POP_KEY_BINDING,
            "binding",
        )

    def test_proof_by_the_root_holder_for_a_chain(self) -> None:
        """After attenuation only the delegate's key proves possession, not the root holder's."""
        token = chain_of_depth(1)
        assert_denied(
            verifier().decide(token, request_for(token, HOLDER), now=NOW),
            codes.POP_KEY_BINDING,
            "binding",
        )

    def test_proof_for_another_token(self) -> None:
        """A proof whose ``ath`` hashes another token is denied with CPN-POP-010."""
        token, other = coupon_for(), coupon_for(jti="root-2")
        decision = verifier().decide(token, request_for(token, dpop=proof(other)), now=NOW)
        assert decision.error is not None
        assert decision.error.code is codes.POP_ATH

    def test_proof_for_another_uri(self) -> None:
        """A proof for another URI is denied with CPN-POP-008 and the step ``binding``."""
        token = coupon_for()
        dpop = proof(token, uri="https://orders.example/orders/43")
        assert_denied(
            verifier().decide(token, request_for(token, dpop=dpop), now=NOW),
            codes.POP_HTU,
            "binding",
        )

    def test_request_without_method_or_uri(self) -> None:
        """Presenting a DPoP proof without the request's method and URI is a programming error."""
        token = coupon_for()
        with pytest.raises(TypeError):
            verifier().verify(token, request_for(token, method=None), now=NOW)

    def test_certificate_missing(self) -> None:
        """A certificate-bound coupon without a client certificate is denied with CPN-POP-013."""
        token = coupon_for(binding=Binding(x5t_s256=x5t_s256(CERT)))
        assert_denied(
            verifier().decide(token, request_for(token), now=NOW),
            codes.POP_CERT_BINDING,
            "binding",
        )

    def test_another_certificate(self) -> None:
        """A certificate-bound coupon with another client certificate is denied (CPN-POP-013)."""
        token = coupon_for(binding=Binding(x5t_s256=x5t_s256(CERT)))
        request = Request(audience=AUD, certificate=x5t_s256(CERT_OTHER))
        assert_denied(verifier().decide(token, request, now=NOW), codes.POP_CERT_BINDING, "binding")


class RecordingReplayStore:
    """A replay store that remembers what it was asked, in front of a real one."""

    def __init__(self) -> None:
        self.inner = MemoryReplayStore()
        self.calls: list[tuple[str, float, float]] = []

    def first_use(self, key: str, *, expires_at: float, now: float) -> bool:
        self.calls.append((key, expires_at, now))
        return self.inner.first_use(key, expires_at=expires_at, now=now)


class UnavailableReplayStore:
    """A replay store whose backend is down."""

    def first_use(self, key: str, *, expires_at: float, now: float) -> bool:
        raise DependencyUnavailable(codes.UNAVAILABLE_REPLAY, "redis is down")


class BrokenReplayStore:
    """A replay adapter with a bug of its own."""

    def first_use(self, key: str, *, expires_at: float, now: float) -> bool:
        raise ConnectionError("connection reset by peer")


class TestReplay:
    """Step ``replay``: a DPoP proof is used once."""

    def test_same_proof_twice(self) -> None:
        """The second presentation of the same proof is denied with CPN-RPL-001."""
        token = coupon_for()
        request = request_for(token)
        v = verifier()
        assert_allowed(v.decide(token, request, now=NOW))
        assert_denied(v.decide(token, request, now=NOW + 1), codes.REPLAY, "replay")

    def test_fresh_proofs(self) -> None:
        """Each fresh proof is accepted, and the store records each one."""
        token = coupon_for()
        store = RecordingReplayStore()
        v = verifier(replay=store)
        for _ in range(3):
            assert_allowed(v.decide(token, request_for(token), now=NOW))
        assert len({key for key, _, _ in store.calls}) == 3
        assert all(key.startswith(HOLDER.public.thumbprint + ":") for key, _, _ in store.calls)

    def test_replay_at_the_end_of_the_window(self) -> None:
        """A proof replayed at the last second it is still accepted is denied with CPN-RPL-001."""
        token = coupon_for()
        request = request_for(token)
        v = verifier()
        assert_allowed(v.decide(token, request, now=NOW))
        last = NOW + DPOP_MAX_AGE + LEEWAY
        assert_denied(v.decide(token, request, now=last), codes.REPLAY, "replay")

    def test_store_unavailable(self) -> None:
        """A replay store that cannot answer makes the decision a denial with CPN-DEP-002."""
        token = coupon_for()
        v = verifier(replay=UnavailableReplayStore())
        assert_denied(
            v.decide(token, request_for(token), now=NOW), codes.UNAVAILABLE_REPLAY, "replay"
        )

    def test_store_failing_with_its_own_error(self) -> None:
        """A replay adapter that raises something else is still a denial (CPN-DEP-002)."""
        token = coupon_for()
        v = verifier(replay=BrokenReplayStore())
        assert_denied(
            v.decide(token, request_for(token), now=NOW), codes.UNAVAILABLE_REPLAY, "replay"
        )

    def test_store_full(self) -> None:
        """A full in-memory store refuses new proofs rather than forget one (CPN-DEP-002)."""
        token = coupon_for()
        v = verifier(replay=MemoryReplayStore(capacity=1))
        assert_allowed(v.decide(token, request_for(token), now=NOW))
        assert_denied(
            v.decide(token, request_for(token), now=NOW), codes.UNAVAILABLE_REPLAY, "replay"
        )

    def test_certificate_binding_uses_no_store(self) -> None:
        """A certificate-bound coupon has no proof, so the replay store is not consulted."""
        token = coupon_for(binding=Binding(x5t_s256=x5t_s256(CERT)))
        store = RecordingReplayStore()
        request = Request(audience=AUD, certificate=x5t_s256(CERT))
        assert_allowed(verifier(replay=store).decide(token, request, now=NOW))
        assert store.calls == []

    def test_protocol(self) -> None:
        """The stores here and the in-memory one satisfy the ``ReplayStore`` protocol."""
        for store in (MemoryReplayStore(), RecordingReplayStore(), UnavailableReplayStore()):
            assert isinstance(store, ReplayStore)


class UnavailableRevocations:
    """A revocation source whose feed is stale."""

    def revoked(self, facts: RevocationFacts, *, now: float) -> str | None:
        raise DependencyUnavailable(codes.UNAVAILABLE_REVOCATION, "feed is 10 minutes old")


class BrokenRevocations:
    """A revocation adapter with a bug of its own."""

    def revoked(self, facts: RevocationFacts, *, now: float) -> str | None:
        raise KeyError("tenants")


class TestRevocation:
    """Step ``revocation``: by jti, lineage, subject, tenant or signing key."""

    def decide(self, token: str, revocations: RevocationChecker, key: SigningKey) -> Decision:
        """Present ``token`` with ``key``'s proof to a verifier using ``revocations``."""
        return verifier(revocations=revocations).decide(token, request_for(token, key), now=NOW)

    def test_not_revoked(self) -> None:
        """A coupon nobody revoked is allowed when a revocation source is configured."""
        assert_allowed(self.decide(coupon_for(), MemoryRevocations(), HOLDER))

    def test_jti(self) -> None:
        """A coupon revoked by its jti is denied with CPN-REV-001."""
        revocations = MemoryRevocations(jtis={"root-1": "stolen"})
        assert_denied(self.decide(coupon_for(), revocations, HOLDER), codes.REVOKED, "revocation")

    def test_jti_of_a_link(self) -> None:
        """Revoking one link's jti kills the chain that contains it."""
        revocations = MemoryRevocations(jtis={"link-1": "leaked"})
        token = chain_of_depth(2)
        assert_denied(self.decide(token, revocations, DELEGATES[1]), codes.REVOKED, "revocation")

    def test_jti_of_a_root_kills_its_chain(self) -> None:
        """Revoking a root's jti kills every chain built on it."""
        revocations = MemoryRevocations(jtis={"root-1": "leaked"})
        token = chain_of_depth(2)
        assert_denied(self.decide(token, revocations, DELEGATES[1]), codes.REVOKED, "revocation")

    def test_lineage_kills_an_offline_descendant(self) -> None:
        """Revoking the root's lineage kills a descendant attenuated offline."""
        token = chain_of_depth(2)
        revocations = MemoryRevocations(lineages={claims_of(token)["lin"]: "compromised"})
        assert claims_of(token)["lin"] == "root-1"
        assert_denied(self.decide(token, revocations, DELEGATES[1]), codes.REVOKED, "revocation")

    def test_lineage_kills_an_authority_sub_coupon(self) -> None:
        """Revoking a lineage kills the Authority's sub-coupons of it, which inherit it."""
        parent = coupon_for()
        child = (
            CouponBuilder()
            .child_of(parent)
            .issuer(ISS)
            .subject("svc-b")
            .audience(AUD)
            .resource("orders/42")
            .actions("read")
            .purpose("billing")
            .bind(Binding(jkt=DELEGATES[0].public.thumbprint))
            .lifetime(now=NOW, ttl=60)
            .jti("child-1")
            .sign(ISSUER)
        )
        revocations = MemoryRevocations(lineages={"root-1": "compromised"})
        assert_denied(self.decide(child, revocations, DELEGATES[0]), codes.REVOKED, "revocation")

    def test_subject(self) -> None:
        """A coupon issued at or before its subject's revocation is denied."""
        revocations = MemoryRevocations(subjects={"svc-a": (NOW, "offboarded")})
        assert_denied(self.decide(coupon_for(), revocations, HOLDER), codes.REVOKED, "revocation")

    def test_subject_reissued_after_revocation(self) -> None:
        """A coupon issued after its subject's revocation is not caught by it."""
        revocations = MemoryRevocations(subjects={"svc-a": (NOW - 1, "rotated")})
        assert_allowed(self.decide(coupon_for(), revocations, HOLDER))

    def test_delegate_subject(self) -> None:
        """Revoking the subject of a link kills the chain that names it."""
        token = chain_of_depth(2)
        revocations = MemoryRevocations(subjects={"svc-1": (NOW, "offboarded")})
        assert_denied(self.decide(token, revocations, DELEGATES[1]), codes.REVOKED, "revocation")

    def test_tenant(self) -> None:
        """A coupon of a revoked tenant is denied."""
        revocations = MemoryRevocations(tenants={TENANT: (NOW, "suspended")})
        assert_denied(self.decide(coupon_for(), revocations, HOLDER), codes.REVOKED, "revocation")

    def test_kid(self) -> None:
        """A coupon signed with a revoked issuer key is denied."""
        revocations = MemoryRevocations(kids={"issuer-ed": (NOW, "key compromised")})
        assert_denied(self.decide(coupon_for(), revocations, HOLDER), codes.REVOKED, "revocation")

    def test_kid_revoked_before_the_coupon_was_minted(self) -> None:
        """A coupon signed with a revoked key is denied whatever ``iat`` it claims."""
        # Whoever signs with a key after its revocation is the thief the revocation is for,
        # and ``iat`` is whatever that signer writes.
        revocations = MemoryRevocations(kids={"issuer-ed": (NOW - 60, "key compromised")})
        assert_denied(self.decide(coupon_for(), revocations, HOLDER), codes.REVOKED, "revocation")

    def test_kid_of_another_key(self) -> None:
        """Revoking one issuer key leaves coupons signed by another key valid."""
        revocations = MemoryRevocations(kids={"issuer-es": (NOW, "key compromised")})
        assert_allowed(self.decide(coupon_for(ISSUER), revocations, HOLDER))

    def test_checker_unavailable(self) -> None:
        """A revocation source that cannot answer makes the decision a denial (CPN-DEP-001)."""
        assert_denied(
            self.decide(coupon_for(), UnavailableRevocations(), HOLDER),
            codes.UNAVAILABLE_REVOCATION,
            "revocation",
        )

    def test_checker_failing_with_its_own_error(self) -> None:
        """A revocation adapter that raises something else is still a denial (CPN-DEP-001)."""
        assert_denied(
            self.decide(coupon_for(), BrokenRevocations(), HOLDER),
            codes.UNAVAILABLE_REVOCATION,
            "revocation",
        )

    def test_facts(self) -> None:
        """The checker is told every jti and subject of the chain, the lineage, tenant and kid."""
        seen: list[RevocationFacts] = []

        class Spy:
            def revoked(self, facts: RevocationFacts, *, now: float) -> str | None:
                seen.append(facts)
                return None

        token = chain_of_depth(2)
        assert_allowed(self.decide(token, Spy(), DELEGATES[1]))
        assert seen == [
            RevocationFacts(
                jtis=("root-1", "link-1", "link-2"),
                lineage="root-1",
                subjects=("svc-a", "svc-1", "svc-2"),
                tenant=TENANT,
                kid="issuer-ed",
                issued_at=NOW,
            )
        ]

    def test_protocol(self) -> None:
        """The checkers here satisfy the ``RevocationChecker`` protocol."""
        assert isinstance(MemoryRevocations(), RevocationChecker)
        assert isinstance(UnavailableRevocations(), RevocationChecker)


class AsyncMemoryReplayStore:
    """An asynchronous replay store in front of the in-memory one."""

    def __init__(self, *, fail: bool = False) -> None:
        self.inner = MemoryReplayStore()
        self.fail = fail

    async def first_use(self, key: str, *, expires_at: float, now: float) -> bool:
        if self.fail:
            raise TimeoutError("redis timed out")
        return self.inner.first_use(key, expires_at=expires_at, now=now)


class TestVerifyAsync:
    """``Verifier.verify_async``: the same pipeline with a shared asynchronous replay store."""

    def test_allowed_then_replayed(self) -> None:
        """A proof is accepted once and its replay is denied with CPN-RPL-001."""
        token = coupon_for()
        request = request_for(token)
        store = AsyncMemoryReplayStore()
        v = verifier()
        verified = asyncio.run(v.verify_async(token, request, replay=store, now=NOW))
        assert verified.claims.jti == "root-1"
        with pytest.raises(ProofReplayed) as info:
            asyncio.run(v.verify_async(token, request, replay=store, now=NOW))
        assert (info.value.code, info.value.step) == (codes.REPLAY, "replay")

    def test_store_failure(self) -> None:
        """An asynchronous store that fails makes the answer a denial with CPN-DEP-002."""
        token = coupon_for()
        store = AsyncMemoryReplayStore(fail=True)
        with pytest.raises(DependencyUnavailable) as info:
            asyncio.run(verifier().verify_async(token, request_for(token), replay=store, now=NOW))
        assert (info.value.code, info.value.step) == (codes.UNAVAILABLE_REPLAY, "replay")

    def test_earlier_steps_still_apply(self) -> None:
        """The asynchronous path denies an out-of-scope request before touching the store."""
        token = coupon_for()
        store = AsyncMemoryReplayStore()
        with pytest.raises(InsufficientScope) as info:
            asyncio.run(
                verifier().verify_async(
                    token, request_for(token, action="delete"), replay=store, now=NOW
                )
            )
        assert (info.value.code, info.value.step) == (codes.SCOPE_ACTION, "scope")
        assert len(store.inner) == 0


class TestCache:
    """The verified-signature cache: a repeat skips parse, signature and chain, nothing else."""

    def test_second_presentation_is_cached(self) -> None:
        """The first verification is not cached and the second is."""
        token = coupon_for()
        v = verifier()
        first = v.verify(token, request_for(token), now=NOW)
        second = v.verify(token, request_for(token), now=NOW)
        assert (first.cached, second.cached) == (False, True)
        assert second.claims == first.claims
        assert "cache" in second.timings
        assert "signature" not in second.timings
        assert "chain" not in second.timings

    def test_cached_claims_only_after_a_signature_check(self) -> None:
        """cached_claims knows a token only once this verifier checked it, forged or not."""
        token = coupon_for()
        v = verifier()
        assert v.cached_claims(token) is None
        first = v.verify(token, request_for(token), now=NOW)
        assert v.cached_claims(token) == first.claims
        head, payload, sig = token.split(".")
        forged = f"{head}.{payload}.{'A' if sig[0] != 'A' else 'B'}{sig[1:]}"
        assert_denied(v.decide(forged, request_for(forged), now=NOW), codes.SIGNATURE, "signature")
        assert v.cached_claims(forged) is None

    def test_cached_token_still_expires(self) -> None:
        """A cached coupon is denied with CPN-TIME-001 once it has expired."""
        token = coupon_for(ttl=60)
        v = verifier()
        assert_allowed(v.decide(token, request_for(token), now=NOW))
        later = NOW + 60 + LEEWAY
        assert_denied(
            v.decide(token, request_for(token, now=later), now=later),
            codes.TIME_EXPIRED,
            "time",
        )

    def test_cached_token_can_be_revoked(self) -> None:
        """A cached coupon is denied once it is revoked."""
        token = coupon_for()
        revocations = MemoryRevocations()
        v = verifier(revocations=revocations)
        assert_allowed(v.decide(token, request_for(token), now=NOW))
        revocations.jtis["root-1"] = "stolen"
        assert_denied(v.decide(token, request_for(token), now=NOW), codes.REVOKED, "revocation")

    def test_cached_token_still_needs_a_proof(self) -> None:
        """A cached coupon presented without its proof is denied with CPN-POP-001."""
        token = coupon_for()
        v = verifier()
        assert_allowed(v.decide(token, request_for(token), now=NOW))
        assert_denied(
            v.decide(token, request_for(token, dpop=None), now=NOW), codes.POP_MISSING, "binding"
        )

    def test_failures_after_the_chain_step_are_not_sticky(self) -> None:
        """A coupon denied for its request is allowed for a later, valid one."""
        token = coupon_for()
        v = verifier()
        assert_denied(
            v.decide(token, request_for(token, action="delete"), now=NOW),
            codes.SCOPE_ACTION,
            "scope",
        )
        assert assert_allowed(v.decide(token, request_for(token), now=NOW)).cached

    def test_eviction(self) -> None:
        """A verifier with a cache of one forgets the older coupon."""
        first, second = coupon_for(jti="root-1"), coupon_for(jti="root-2")
        v = verifier(cache_size=1)
        assert_allowed(v.decide(first, request_for(first), now=NOW))
        assert_allowed(v.decide(second, request_for(second), now=NOW))
        assert not assert_allowed(v.decide(first, request_for(first), now=NOW)).cached


class TestKeyRotation:
    """A ``KeySet`` with two keys: the first signs, both verify; dropping a key denies."""

    def test_both_keys_verify(self) -> None:
        """Coupons signed by the new and by the old key are both accepted."""
        new, old = SigningKey.generate(kid="k-2"), SigningKey.generate(kid="k-1")
        keys = KeySet([new, old])
        v = Verifier(keys)
        for signer in (keys.signer, old):
            assert isinstance(signer, SigningKey)
            token = coupon_for(signer)
            assert assert_allowed(v.decide(token, request_for(token), now=NOW)).kid == signer.kid
        assert keys.signer is new

    def test_dropped_key(self) -> None:
        """A verifier without the old key denies with CPN-HDR-004, though another cached it."""
        new, old = SigningKey.generate(kid="k-2"), SigningKey.generate(kid="k-1")
        token = coupon_for(old)
        before = Verifier(KeySet([new, old]))
        assert_allowed(before.decide(token, request_for(token), now=NOW))
        assert_allowed(before.decide(token, request_for(token), now=NOW))
        after = Verifier(KeySet([new]))
        assert_denied(
            after.decide(token, request_for(token), now=NOW), codes.HEADER_KID, "signature"
        )

    def test_key_set_is_fixed(self) -> None:
        """A verifier's key set cannot be swapped under its signature cache."""
        new, old = SigningKey.generate(kid="k-2"), SigningKey.generate(kid="k-1")
        token = coupon_for(old)
        v = Verifier(KeySet([new, old]))
        assert_allowed(v.decide(token, request_for(token), now=NOW))
        with pytest.raises(AttributeError):
            setattr(v, "keys", KeySet([new]))  # noqa: B010 - mypy knows it is read-only
        assert v.keys.get("k-1") is not None


class TestDecide:
    """``Verifier.decide``: the same answer as ``verify``, as a value, with step timings."""

    PIPELINE = ("parse", "signature", "chain", "time", "audience", "scope", "binding")

    def test_allowed_timings(self) -> None:
        """An allowed decision times every step it ran, and the total."""
        token = coupon_for()
        v = verifier(revocations=MemoryRevocations())
        decision = v.decide(token, request_for(token), now=NOW)
        verified = assert_allowed(decision)
        expected = {*self.PIPELINE, "replay", "revocation", "total"}
        assert set(decision.timings) == expected
        assert verified.timings == decision.timings
        assert all(t >= 0 for t in decision.timings.values())
        steps = sum(t for name, t in decision.timings.items() if name != "total")
        assert decision.timings["total"] >= steps * 0.99

    def test_denied_timings(self) -> None:
        """A denial times every step reached, the failing one included, and nothing after it."""
        token = coupon_for()
        decision = verifier().decide(token, request_for(token, action="delete"), now=NOW)
        assert_denied(decision, codes.SCOPE_ACTION, "scope")
        assert set(decision.timings) == {*self.PIPELINE[:6], "total"}

    def test_parse_failure_timings(self) -> None:
        """A token refused at parsing has only the parse step and the total timed."""
        decision = verifier().decide("garbage", Request(audience=AUD), now=NOW)
        assert_denied(decision, codes.TOKEN_MALFORMED, "parse")
        assert set(decision.timings) == {"parse", "total"}

    def test_verify_raises_what_decide_returns(self) -> None:
        """``verify`` raises the very code and step that ``decide`` reports."""
        token = coupon_for()
        request = request_for(token, tenant="globex")
        decision = verifier().decide(token, request, now=NOW)
        with pytest.raises(coupon.CouponError) as info:
            verifier().verify(token, request, now=NOW)
        assert decision.error is not None
        assert (info.value.code, info.value.step) == (decision.error.code, decision.error.step)
