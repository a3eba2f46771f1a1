"""Known attacks on JWTs, each token built by hand, against the coupon verifier.

Every malicious token here is signed properly wherever a signature could matter, so the
only fault is the one the test names; each must be denied with its exact code and step.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
from typing import Any, Final

import pytest
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from coupon import codes
from coupon.codes import ErrorCode
from coupon.errors import CouponError, InvalidChain, InvalidProof, InvalidSignature
from coupon.token import (
    COUPON_TYP,
    Binding,
    Decision,
    KeySet,
    MemoryRevocations,
    Request,
    RevocationFacts,
    SigningKey,
    Verifier,
    VerifyingKey,
    ath_for,
    create_dpop_proof,
    link_hash,
    mint,
)
from coupon.token.hazmat import (
    ALGORITHMS,
    b64url_decode,
    b64url_encode,
    dumps_compact,
    jwk_thumbprint,
)

NOW: Final = 1_700_000_000
ISS: Final = "https://authority.example"
AUD: Final = "orders-api"
URI: Final = "https://orders.example/orders/42"
# The P-256 group order: an ECDSA signature with r or s equal to it (or 0) is invalid.
P256_ORDER: Final = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

ISSUER = SigningKey.generate(kid="issuer-1")
ISSUER_ES = SigningKey.generate("ES256", kid="issuer-es")
HOLDER = SigningKey.generate()
ATTACKER = SigningKey.generate()
ATTACKER_ES = SigningKey.generate("ES256")

_ids = itertools.count()


def coupon_for(signer: SigningKey = ISSUER, **overrides: Any) -> str:
    """A valid coupon for ``orders/**`` bound to ``HOLDER``, minted at NOW."""
    values: dict[str, Any] = {
        "issuer": ISS,
        "subject": "svc-a",
        "audience": AUD,
        "tenant": "acme",
        "resource": "orders/**",
        "actions": ["read"],
        "purpose": "billing",
        "binding": Binding(jkt=HOLDER.public.thumbprint),
        "now": NOW,
        "jti": "coupon-1",
    }
    values.update(overrides)
    return mint(signer, **values)


def parts(token: str) -> list[str]:
    """The three base64url parts of a compact JWS."""
    return token.split(".")


def decoded(part: str) -> Any:
    """The JSON value of a header or payload part."""
    return json.loads(b64url_decode(part))


def claims(**overrides: Any) -> dict[str, Any]:
    """The claims of a valid coupon, with ``overrides``."""
    result: dict[str, Any] = {**decoded(parts(coupon_for())[1]), **overrides}
    return result


def header(signer: SigningKey = ISSUER, /, **overrides: Any) -> dict[str, Any]:
    """The protected header of a valid coupon signed by ``signer``, with ``overrides``."""
    return {"alg": signer.alg, "typ": COUPON_TYP, "kid": signer.kid, **overrides}


def sign_raw(header_json: bytes, payload_json: bytes, signer: SigningKey = ISSUER) -> str:
    """A compact JWS over exactly these header and payload bytes, signed by ``signer``."""
    prefix = f"{b64url_encode(header_json)}.{b64url_encode(payload_json)}"
    return f"{prefix}.{b64url_encode(signer.sign(prefix.encode('ascii')))}"


def sign(head: dict[str, Any], body: Any, signer: SigningKey = ISSUER) -> str:
    """A compact JWS of ``head`` and ``body`` (any JSON value), signed by ``signer``."""
    return sign_raw(dumps_compact(head), json.dumps(body, separators=(",", ":")).encode(), signer)


def verifier(*signers: SigningKey) -> Verifier:
    """A verifier trusting ``signers`` (both issuers when none are named)."""
    return Verifier(KeySet(signers or (ISSUER, ISSUER_ES)))


def present(token: str) -> Request:
    """A request presenting ``token`` with a valid DPoP proof by ``HOLDER`` for it."""
    dpop = create_dpop_proof(
        HOLDER, method="GET", uri=URI, now=NOW, jti=f"p{next(_ids)}", access_token=token
    )
    return Request(
        audience=AUD, resource="orders/42", action="read", method="GET", uri=URI, dpop=dpop
    )


def decide(token: str, *signers: SigningKey) -> Decision:
    """Present ``token`` (with a DPoP proof when it is ASCII) to a fresh verifier at NOW."""
    request = present(token) if token.isascii() else Request(audience=AUD)
    return verifier(*signers).decide(token, request, now=NOW)


def assert_denied(decision: Decision, code: ErrorCode, step: str) -> None:
    """Assert ``decision`` denies with ``code`` at ``step``, carried by the class ``code`` names."""
    assert not decision.allowed
    assert decision.error is not None
    assert (decision.error.code.code, decision.error.step) == (code.code, step)
    assert type(decision.error).__name__ == code.kind


class TestBaseline:
    """The coupons the attacks start from."""

    @pytest.mark.parametrize("issuer", [ISSUER, ISSUER_ES], ids=["ed25519", "p256"])
    def test_unmodified_coupon_is_allowed(self, issuer: SigningKey) -> None:
        """The unmodified coupon is allowed, so every denial below is due to the attack."""
        decision = decide(coupon_for(issuer))
        assert decision.allowed, decision.error


class TestAlgNone:
    """``alg: none``: an unsigned token must never be accepted."""

    def test_none_is_not_in_the_table(self) -> None:
        """Neither ``none`` nor any HMAC algorithm is in the hazmat algorithm table."""
        assert not {"none", "HS256", "HS384", "HS512"} & ALGORITHMS.keys()

    def test_empty_signature(self) -> None:
        """``alg: none`` with an empty signature part is not even a compact JWS (CPN-TOK-002)."""
        h, p, _ = parts(sign(header(alg="none"), claims()))
        assert_denied(decide(f"{h}.{p}."), codes.TOKEN_MALFORMED, "parse")

    @pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
    def test_with_a_signature(self, alg: str) -> None:
        """``alg: none`` with a (valid-looking) signature is denied with CPN-HDR-002."""
        assert_denied(decide(sign(header(alg=alg), claims())), codes.HEADER_ALG, "parse")

    def test_signature_stripped_from_a_valid_coupon(self) -> None:
        """A valid coupon with its signature cut off is denied with CPN-TOK-002."""
        h, p, _ = parts(coupon_for())
        assert_denied(decide(f"{h}.{p}."), codes.TOKEN_MALFORMED, "parse")
        assert_denied(decide(f"{h}.{p}"), codes.TOKEN_MALFORMED, "parse")


def public_secrets(key: VerifyingKey) -> list[bytes]:
    """The forms of a public key an attacker might try as an HMAC secret."""
    public = key.public_key
    return [
        public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo),
        public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo),
        json.dumps(key.jwk()).encode(),
        key.jwk()["x"].encode(),
    ]


class TestHmacWithPublicKey:
    """``HS256`` keyed with the issuer's public key: the classic key-confusion forgery."""

    @pytest.mark.parametrize("issuer", [ISSUER, ISSUER_ES], ids=["ed25519", "p256"])
    @pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
    def test_denied(self, issuer: SigningKey, alg: str) -> None:
        """An HMAC over the coupon keyed with any form of the public key is CPN-HDR-002."""
        digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
        prefix = f"{b64url_encode(dumps_compact(header(issuer, alg=alg)))}.{parts(coupon_for())[1]}"
        for secret in public_secrets(issuer.public):
            mac = hmac.new(secret, prefix.encode(), digest).digest()
            token = f"{prefix}.{b64url_encode(mac)}"
            assert_denied(decide(token), codes.HEADER_ALG, "parse")


class TestAlgorithmConfusion:
    """The header's ``alg`` never chooses how a key is used: the key decides."""

    def test_ed25519_signature_labelled_es256(self) -> None:
        """A valid Ed25519 signature relabelled ``ES256`` is denied with CPN-HDR-005."""
        assert_denied(
            decide(sign(header(alg="ES256"), claims())), codes.HEADER_ALG_KEY, "signature"
        )

    def test_es256_forgery_under_an_ed25519_kid(self) -> None:
        """An attacker's ES256 signature under the Ed25519 issuer's kid is CPN-HDR-005."""
        token = sign(header(alg="ES256"), claims(), ATTACKER_ES)
        assert_denied(decide(token), codes.HEADER_ALG_KEY, "signature")

    def test_eddsa_forgery_under_a_p256_kid(self) -> None:
        """An attacker's EdDSA signature under the P-256 issuer's kid is CPN-HDR-005."""
        token = sign(header(ISSUER_ES, alg="EdDSA"), claims(), ATTACKER)
        assert_denied(decide(token), codes.HEADER_ALG_KEY, "signature")

    @pytest.mark.parametrize(
        "alg",
        ["ES384", "RS256", "PS256", "ES512", "EdDSA ", "eddsa", "EDDSA", "Ed25519", "ES256K", ""],
    )
    def test_algorithm_outside_the_coupon_list(self, alg: str) -> None:
        """An ``alg`` that is not exactly EdDSA or ES256 is denied with CPN-HDR-002."""
        assert_denied(decide(sign(header(alg=alg), claims())), codes.HEADER_ALG, "parse")

    @pytest.mark.parametrize("alg", [None, 1, ["EdDSA"], {"name": "EdDSA"}, True])
    def test_algorithm_not_a_string(self, alg: object) -> None:
        """A non-string ``alg`` is denied with CPN-HDR-002."""
        assert_denied(decide(sign(header(alg=alg), claims())), codes.HEADER_ALG, "parse")

    @pytest.mark.parametrize(
        ("r", "s"),
        [(0, 0), (P256_ORDER, P256_ORDER), (1, 0), (0, 1)],
        ids=["zero", "order", "s-zero", "r-zero"],
    )
    def test_psychic_signature(self, r: int, s: int) -> None:
        """An ES256 signature with r or s zero or the group order is denied (CVE-2022-21449)."""
        h, p, _ = parts(coupon_for(ISSUER_ES))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        assert_denied(decide(f"{h}.{p}.{b64url_encode(signature)}"), codes.SIGNATURE, "signature")

    def test_der_encoded_es256_signature(self) -> None:
        """An ES256 signature in DER instead of JOSE's fixed r||s form is denied (CPN-SIG-001)."""
        h, p, sig = parts(coupon_for(ISSUER_ES))
        raw = b64url_decode(sig)
        der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
        token = f"{h}.{p}.{b64url_encode(der)}"
        assert_denied(decide(token), codes.SIGNATURE, "signature")


class RecordingKeySet(KeySet):
    """A key set that records every lookup."""

    def __init__(self, keys: list[SigningKey]) -> None:
        super().__init__(keys)
        self.lookups: list[str] = []

    def get(self, kid: str) -> VerifyingKey | None:
        self.lookups.append(kid)
        return super().get(kid)


class RecordingRevocations:
    """A revocation source that records every question."""

    def __init__(self) -> None:
        self.calls: list[RevocationFacts] = []

    def revoked(self, facts: RevocationFacts, *, now: float) -> str | None:
        self.calls.append(facts)
        return None


class TestKidInjection:
    """``kid`` is only ever a dictionary key: a hostile value is refused and goes nowhere."""

    def decide_recorded(
        self, kid: object
    ) -> tuple[Decision, RecordingKeySet, RecordingRevocations]:
        """Present a coupon with ``kid`` to a verifier that records lookups and revocations."""
        keys, revocations = RecordingKeySet([ISSUER]), RecordingRevocations()
        token = sign(header(kid=kid), claims())
        v = Verifier(keys, revocations=revocations)
        return v.decide(token, present(token), now=NOW), keys, revocations

    @pytest.mark.parametrize(
        "kid",
        [
            pytest.param("../../etc/passwd", id="path-traversal"),
            pytest.param("/dev/null", id="absolute-path"),
            pytest.param("' OR 1=1 --", id="sql"),
            pytest.param('issuer-1"; DROP TABLE keys; --', id="sql-drop"),
            pytest.param("issuer-1\x00", id="nul"),
            pytest.param("issuer-1\n", id="trailing-newline"),
            pytest.param("issuer-1\nlevel=admin", id="log-injection"),
            pytest.param("issuer-1\r\n", id="crlf"),
            pytest.param("https://evil.example/jwks.json", id="url"),
            pytest.param("$(curl evil.example)", id="shell"),
            pytest.param("issuer-1 ", id="trailing-space"),
            pytest.param("%2e%2e%2f", id="percent"),
            pytest.param("issuer-1é", id="non-ascii"),
            pytest.param("", id="empty"),
            pytest.param("k" * 129, id="overlong"),
            pytest.param("k" * 100_000, id="huge"),
        ],
    )
    def test_malformed(self, kid: str) -> None:
        """A hostile kid is denied with CPN-HDR-004 before any key lookup or store is touched."""
        decision, keys, revocations = self.decide_recorded(kid)
        if len(kid) > 10_000:  # too large to be a coupon at all
            assert_denied(decision, codes.TOKEN_TOO_LARGE, "parse")
        else:
            assert_denied(decision, codes.HEADER_KID, "parse")
        assert keys.lookups == []
        assert revocations.calls == []
        assert decision.error is not None
        assert not {"\n", "\r", "\x00"} & set(decision.error.reason)

    @pytest.mark.parametrize("kid", [None, 1, ["issuer-1"], {"kid": "issuer-1"}, True])
    def test_not_a_string(self, kid: object) -> None:
        """A non-string kid is denied with CPN-HDR-004 before any key lookup."""
        decision, keys, _ = self.decide_recorded(kid)
        assert_denied(decision, codes.HEADER_KID, "parse")
        assert keys.lookups == []

    @pytest.mark.parametrize("kid", ["k" * 128, "issuer-2", "ISSUER-1", "issuer-1.", ".."])
    def test_well_formed_but_unknown(self, kid: str) -> None:
        """A well-formed unknown kid is looked up once, exactly, then denied (CPN-HDR-004)."""
        decision, keys, revocations = self.decide_recorded(kid)
        assert_denied(decision, codes.HEADER_KID, "signature")
        assert keys.lookups == [kid]
        assert revocations.calls == []


class TestCrit:
    """``crit``: we understand no extension, so any critical header is refused."""

    @pytest.mark.parametrize("crit", [["exp"], ["b64"], ["http://evil.example/ext"], [], "exp"])
    def test_denied(self, crit: object) -> None:
        """A coupon with a ``crit`` header is denied with CPN-HDR-003."""
        token = sign(header(crit=crit, exp=NOW), claims())
        assert_denied(decide(token), codes.HEADER_CRIT, "parse")


class TestForeignHeaderMembers:
    """A root header is exactly ``alg``, ``typ`` and ``kid``: key-fetching members are refused."""

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("jku", "https://evil.example/jwks.json"),
            ("x5u", "https://evil.example/cert.pem"),
            ("jwk", {"kty": "OKP", "crv": "Ed25519", "x": "A" * 43}),
            ("x5c", ["MIIB"]),
            ("x5t", "A" * 27),
            ("x5t#S256", "A" * 43),
            ("cty", "JWT"),
            ("b64", False),
            ("zip", "DEF"),
            ("nonce", "n"),
        ],
    )
    def test_denied(self, name: str, value: object) -> None:
        """A root with an extra header member is denied with CPN-HDR-006."""
        assert_denied(decide(sign(header(**{name: value}), claims())), codes.HEADER_FIELD, "parse")

    def test_self_signed_with_embedded_key(self) -> None:
        """An attacker's self-signed root with its own ``jwk`` is CPN-HDR-006 (CVE-2018-0114)."""
        jwk = {k: v for k, v in ATTACKER.public.jwk().items() if k in ("kty", "crv", "x")}
        token = sign(header(ATTACKER, kid=ISSUER.kid, jwk=jwk), claims(), ATTACKER)
        assert_denied(decide(token), codes.HEADER_FIELD, "parse")

    def test_root_shaped_like_a_link(self) -> None:
        """A first link with ``jwk`` instead of ``kid`` (self-issued) is denied with CPN-HDR-006."""
        jwk = {k: v for k, v in ATTACKER.public.jwk().items() if k in ("kty", "crv", "x")}
        token = sign({"alg": "EdDSA", "typ": COUPON_TYP, "jwk": jwk}, claims(), ATTACKER)
        assert_denied(decide(token), codes.HEADER_FIELD, "parse")

    @pytest.mark.parametrize("missing", ["alg", "typ", "kid"])
    def test_missing_member(self, missing: str) -> None:
        """A root header missing a member is denied with CPN-HDR-006."""
        head = header()
        del head[missing]
        assert_denied(decide(sign(head, claims())), codes.HEADER_FIELD, "parse")


class TestDuplicateMembers:
    """Duplicate JSON members: two parsers could read two different values."""

    def test_header(self) -> None:
        """A header with two ``alg`` members is denied with CPN-TOK-005."""
        head = b'{"alg":"EdDSA","typ":"coupon+jwt","kid":"issuer-1","alg":"none"}'
        token = sign_raw(head, json.dumps(claims()).encode())
        assert_denied(decide(token), codes.TOKEN_DUPLICATE_KEY, "parse")

    @pytest.mark.parametrize("name", ["exp", "aud", "res", "act", "cnf"])
    def test_claims(self, name: str) -> None:
        """A payload with a claim twice (the second one wider) is denied with CPN-TOK-005."""
        body = json.dumps(claims(), separators=(",", ":"))
        wider = {"exp": NOW + 10**6, "aud": "*", "res": "**", "act": ["admin"], "cnf": {}}[name]
        payload = body[:-1] + f',"{name}":{json.dumps(wider)}' + "}"
        token = sign_raw(dumps_compact(header()), payload.encode())
        assert_denied(decide(token), codes.TOKEN_DUPLICATE_KEY, "parse")

    def test_nested(self) -> None:
        """A duplicate member inside ``cnf`` is denied with CPN-TOK-005."""
        body = json.dumps(claims(), separators=(",", ":"))
        jkt = HOLDER.public.thumbprint
        payload = body.replace(
            f'"cnf":{{"jkt":"{jkt}"}}',
            f'"cnf":{{"jkt":"{jkt}","jkt":"{ATTACKER.public.thumbprint}"}}',
        )
        assert payload != body
        token = sign_raw(dumps_compact(header()), payload.encode())
        assert_denied(decide(token), codes.TOKEN_DUPLICATE_KEY, "parse")


class TestSize:
    """The size cap is applied before anything else is parsed."""

    def test_oversized_garbage(self) -> None:
        """8193 characters of anything are denied with CPN-TOK-001."""
        assert_denied(decide("A" * 8193), codes.TOKEN_TOO_LARGE, "parse")

    def test_oversized_chain(self) -> None:
        """A long chain of repeated links is denied for its size (CPN-TOK-001), not parsed."""
        token = "~".join([coupon_for()] * 40)
        assert len(token) > 8192
        assert_denied(decide(token), codes.TOKEN_TOO_LARGE, "parse")

    def test_oversized_payload(self) -> None:
        """A properly signed coupon with a huge claim is denied for its size."""
        token = sign(header(), claims(pol="p" * 9000))
        assert_denied(decide(token), codes.TOKEN_TOO_LARGE, "parse")


def with_url_characters(index: int) -> str:
    """A valid coupon whose part ``index`` (payload or signature) contains ``-`` or ``_``.

    ASCII JSON encodes to ``-`` or ``_`` only where ``>``, ``?``, ``~`` or DEL end a 3-byte
    group, so the ``jti`` carries ``~~~`` (one of them lands there); a header made of the
    allowed ``alg``, ``typ`` and ``kid`` characters never does.
    """
    for i in range(1000):
        token = coupon_for(jti=f"coupon~~~{i}")
        if {"-", "_"} & set(parts(token)[index]):
            return token
    raise AssertionError("no coupon with '-' or '_' in that part")  # pragma: no cover


def with_spare_bits(index: int) -> tuple[str, SigningKey]:
    """A valid coupon whose part ``index`` has a length that leaves unused bits at its end."""
    for i in range(1000):
        signer = SigningKey.from_jwk({**ISSUER.private_jwk(), "kid": "k" * (1 + i % 4)})
        token = coupon_for(signer, jti="c" * (1 + i))
        if len(parts(token)[index]) % 4 in (2, 3):
            return token, signer
    raise AssertionError("no coupon with a short last quantum")  # pragma: no cover


PART = pytest.mark.parametrize("index", [0, 1, 2], ids=["header", "payload", "signature"])


class TestBase64:
    """Only canonical, unpadded base64url is accepted, so every token has one spelling."""

    @PART
    @pytest.mark.parametrize("padding", ["=", "==", "==="])
    def test_padding(self, index: int, padding: str) -> None:
        """A part with ``=`` padding appended is denied with CPN-TOK-003."""
        split = parts(coupon_for())
        split[index] += padding
        assert_denied(decide(".".join(split)), codes.TOKEN_BASE64, "parse")

    @pytest.mark.parametrize("index", [1, 2], ids=["payload", "signature"])
    def test_standard_alphabet(self, index: int) -> None:
        """A part spelled with ``+`` and ``/`` (same bytes, standard alphabet) is CPN-TOK-003."""
        split = parts(with_url_characters(index))
        standard = split[index].replace("-", "+").replace("_", "/")
        assert base64.b64decode(standard + "==") == b64url_decode(split[index])
        split[index] = standard
        assert_denied(decide(".".join(split)), codes.TOKEN_BASE64, "parse")

    @PART
    def test_trailing_bits(self, index: int) -> None:
        """A part whose unused trailing bits are set (same bytes) is denied with CPN-TOK-003."""
        token, signer = with_spare_bits(index)
        split = parts(token)
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        last = alphabet.index(split[index][-1])
        mutated = split[index][:-1] + alphabet[last + 1]
        lenient = base64.urlsafe_b64decode(mutated + "=" * (-len(mutated) % 4))
        assert lenient == b64url_decode(split[index])
        split[index] = mutated
        assert_denied(decide(".".join(split), signer), codes.TOKEN_BASE64, "parse")

    @PART
    @pytest.mark.parametrize("junk", [" ", "\n", "\t", "!", "*"])
    def test_characters_outside_the_alphabet(self, index: int, junk: str) -> None:
        """A part with whitespace or punctuation inside it is denied with CPN-TOK-003."""
        split = parts(coupon_for())
        split[index] = split[index][:5] + junk + split[index][5:]
        assert_denied(decide(".".join(split)), codes.TOKEN_BASE64, "parse")

    @PART
    def test_impossible_length(self, index: int) -> None:
        """A part one character longer than a multiple of four is denied with CPN-TOK-003."""
        split = parts(coupon_for())
        split[index] += "A" * ((1 - len(split[index])) % 4)
        assert len(split[index]) % 4 == 1
        assert_denied(decide(".".join(split)), codes.TOKEN_BASE64, "parse")


class TestJson:
    """Only strict UTF-8 JSON objects are accepted."""

    @pytest.mark.parametrize(
        "payload",
        [
            pytest.param(b'{"sub":"\xff"}', id="invalid-utf8"),
            pytest.param(b'{"sub":"\xc0\xaf"}', id="overlong-utf8"),
            pytest.param(b'{"sub":"\xed\xa0\x80"}', id="utf8-surrogate"),
            pytest.param(b'\xef\xbb\xbf{"ver":1}', id="bom"),
            pytest.param(b'{"exp":NaN}', id="nan"),
            pytest.param(b'{"exp":Infinity}', id="infinity"),
            pytest.param(b'{"exp":-Infinity}', id="minus-infinity"),
            pytest.param(b'{"exp":' + b"9" * 5000 + b"}", id="huge-integer"),
            pytest.param(b'{"x":' + b"[" * 2500 + b"]" * 2500 + b"}", id="deep-arrays"),
            pytest.param(b'{"x":' + b'{"a":' * 1000 + b"1" + b"}" * 1000 + b"}", id="deep-objects"),
            pytest.param(b"[]", id="array"),
            pytest.param(b'"coupon"', id="string"),
            pytest.param(b"1700000000", id="number"),
            pytest.param(b"null", id="null"),
            pytest.param(b'{"ver":1} {"ver":1}', id="two-objects"),
            pytest.param(b'{"ver":1,}', id="trailing-comma"),
            pytest.param(b"{'ver':1}", id="single-quotes"),
        ],
    )
    def test_payload(self, payload: bytes) -> None:
        """A properly signed payload that is not a strict JSON object is CPN-TOK-004."""
        token = sign_raw(dumps_compact(header()), payload)
        assert_denied(decide(token), codes.TOKEN_JSON, "parse")

    @pytest.mark.parametrize(
        "head",
        [
            pytest.param(b'{"alg":"EdDSA","typ":"coupon+jwt","kid":"\xff"}', id="invalid-utf8"),
            pytest.param(b'{"alg":"EdDSA","typ":"coupon+jwt","kid":NaN}', id="nan"),
            pytest.param(b'{"alg":"EdDSA","typ":' + b"[" * 2500 + b"]" * 2500 + b"}", id="deep"),
            pytest.param(b'["EdDSA"]', id="array"),
        ],
    )
    def test_header(self, head: bytes) -> None:
        """A header that is not a strict JSON object is denied with CPN-TOK-004."""
        token = sign_raw(head, json.dumps(claims()).encode())
        assert_denied(decide(token), codes.TOKEN_JSON, "parse")

    def test_overflowing_float_is_refused_as_json(self) -> None:
        """``1e400`` would parse as infinity: the strict parser refuses it (CPN-TOK-004)."""
        body = json.dumps(claims(exp=0), separators=(",", ":")).replace('"exp":0', '"exp":1e400')
        token = sign_raw(dumps_compact(header()), body.encode())
        assert_denied(decide(token), codes.TOKEN_JSON, "parse")


class TestTyp:
    """Explicit typing (RFC 8725 §3.11): only ``coupon+jwt`` is a coupon."""

    @pytest.mark.parametrize(
        "typ", ["JWT", "jwt", "at+jwt", "dpop+jwt", "coupon+jws", "", None, 1, ["coupon+jwt"]]
    )
    def test_wrong_typ(self, typ: object) -> None:
        """Another token type presented as a coupon is denied with CPN-HDR-001."""
        assert_denied(decide(sign(header(typ=typ), claims())), codes.HEADER_TYP, "parse")

    def test_dpop_proof_as_coupon(self) -> None:
        """A DPoP proof (a real signed JWT of another type) is not a coupon."""
        proof = create_dpop_proof(HOLDER, method="GET", uri=URI, now=NOW, jti="p")
        assert_denied(decide(proof), codes.HEADER_FIELD, "parse")


class TestClaims:
    """A v1 coupon is closed and strictly typed."""

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("adm", True),
            ("scope", "admin"),
            ("roles", ["admin"]),
            ("Exp", NOW + 10**6),
            ("exp ", NOW + 10**6),
        ],
    )
    def test_unknown_claim(self, name: str, value: object) -> None:
        """A coupon with a claim the format does not define is denied with CPN-TOK-006."""
        assert_denied(decide(sign(header(), claims(**{name: value}))), codes.TOKEN_CLAIM, "parse")

    @pytest.mark.parametrize(
        "exp",
        [
            pytest.param(float(NOW + 300), id="float"),
            pytest.param(NOW + 300.5, id="fraction"),
            pytest.param(True, id="bool"),
            pytest.param(str(NOW + 300), id="string"),
            pytest.param(None, id="null"),
            pytest.param([NOW + 300], id="list"),
            pytest.param(-1, id="negative"),
            pytest.param(2**53, id="too-large"),
        ],
    )
    def test_exp_type(self, exp: object) -> None:
        """An ``exp`` that is not a non-negative integer below 2**53 is denied with CPN-TOK-006."""
        assert_denied(decide(sign(header(), claims(exp=exp))), codes.TOKEN_CLAIM, "parse")

    @pytest.mark.parametrize("name", ["iss", "sub", "aud", "iat", "nbf", "exp", "jti", "cnf"])
    def test_missing(self, name: str) -> None:
        """A coupon missing a required claim is denied with CPN-TOK-006."""
        body = claims()
        del body[name]
        assert_denied(decide(sign(header(), body)), codes.TOKEN_CLAIM, "parse")

    @pytest.mark.parametrize("ver", [2, 0, "1", 1.0, True, None])
    def test_version(self, ver: object) -> None:
        """Any ``ver`` but the integer 1 is denied with CPN-TOK-007."""
        assert_denied(decide(sign(header(), claims(ver=ver))), codes.TOKEN_VERSION, "parse")

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("res", "orders/../admin"),
            ("res", "orders%2F1"),
            ("act", "read"),
            ("act", ["read", "read"]),
            ("pur", "Billing"),
            ("aud", []),
            ("aud", [f"svc-{i}" for i in range(17)]),
            ("aud", [AUD, 7]),
            ("cnf", {"jkt": "short"}),
            ("cnf", {"jkt": "A" * 43, "x5t#S256": "A" * 43}),
            ("cnf", {"jwk": {"kty": "OKP"}}),
            ("dep", 1),
            ("par", {"jti": "x", "hsh": "y"}),
        ],
    )
    def test_malformed_value(self, name: str, value: object) -> None:
        """A signed coupon with a scope, audience, binding or depth claim off grammar is refused."""
        assert_denied(decide(sign(header(), claims(**{name: value}))), codes.TOKEN_CLAIM, "parse")


class TestSignatureBits:
    """One flipped bit anywhere in the signature is a forgery."""

    @pytest.mark.parametrize("issuer", [ISSUER, ISSUER_ES], ids=["ed25519", "p256"])
    @pytest.mark.parametrize("bit", range(8))
    def test_first_byte(self, issuer: SigningKey, bit: int) -> None:
        """Flipping bit ``bit`` of the first signature byte is denied with CPN-SIG-001."""
        h, p, s = parts(coupon_for(issuer))
        signature = bytearray(b64url_decode(s))
        signature[0] ^= 1 << bit
        token = f"{h}.{p}.{b64url_encode(bytes(signature))}"
        assert_denied(decide(token), codes.SIGNATURE, "signature")

    @pytest.mark.parametrize("length", [0, 63, 65, 128])
    def test_wrong_length(self, length: int) -> None:
        """A signature of the wrong length is denied, never padded or truncated."""
        h, p, s = parts(coupon_for())
        signature = (b64url_decode(s) * 2)[:length]
        token = f"{h}.{p}.{b64url_encode(signature)}"
        decision = decide(token)
        expected = codes.TOKEN_MALFORMED if length == 0 else codes.SIGNATURE
        assert_denied(decision, expected, "parse" if length == 0 else "signature")


class TestPayloadSwap:
    """A signature belongs to one header and one payload."""

    def test_payload_of_another_coupon(self) -> None:
        """The payload of a wider coupon under a narrower coupon's signature is CPN-SIG-001."""
        narrow = coupon_for(resource="orders/1", jti="narrow")
        wide = coupon_for(resource="**", actions=["read", "delete"], jti="wide")
        h, _, s = parts(narrow)
        token = f"{h}.{parts(wide)[1]}.{s}"
        assert_denied(decide(token), codes.SIGNATURE, "signature")

    def test_signature_of_another_coupon(self) -> None:
        """A coupon carrying another coupon's signature is denied with CPN-SIG-001."""
        first, second = coupon_for(jti="first"), coupon_for(jti="second")
        h, p, _ = parts(first)
        token = f"{h}.{p}.{parts(second)[2]}"
        assert_denied(decide(token), codes.SIGNATURE, "signature")

    def test_payload_signed_by_the_other_issuer(self) -> None:
        """A payload moved between coupons of two issuers is denied with CPN-SIG-001."""
        h, _, s = parts(coupon_for(ISSUER_ES, jti="es"))
        token = f"{h}.{parts(coupon_for(ISSUER, jti='ed'))[1]}.{s}"
        assert_denied(decide(token), codes.SIGNATURE, "signature")

    def test_revoked_coupon_under_a_new_signature(self) -> None:
        """Gluing a fresh coupon's signature to a revoked one's payload does not revive it."""
        revoked, fresh = coupon_for(jti="revoked"), coupon_for(jti="fresh")
        token = f"{parts(fresh)[0]}.{parts(revoked)[1]}.{parts(fresh)[2]}"
        v = Verifier(KeySet([ISSUER]), revocations=MemoryRevocations(jtis={"revoked": "x"}))
        assert_denied(v.decide(token, present(token), now=NOW), codes.SIGNATURE, "signature")


# An Ed25519 public key of small order (the identity point) and the signature R = identity,
# S = 0: [S]B = R + [k]A holds for every message k, so it "verifies" for anything.
SMALL_ORDER_JWK: Final = {"crv": "Ed25519", "kty": "OKP", "x": b64url_encode(b"\x01" + bytes(31))}
UNIVERSAL_SIGNATURE: Final = b"\x01" + bytes(63)


class TestSmallOrderKeys:
    """A small-order Ed25519 key admits a signature valid for every message: refuse it."""

    def bound_to_small_order_key(self) -> str:
        """A real coupon whose holder (carelessly) bound it to the small-order key."""
        return coupon_for(binding=Binding(jkt=jwk_thumbprint(SMALL_ORDER_JWK)))

    def test_link_forged_by_anyone(self) -> None:
        """A link "signed" with the universal signature of a small-order key is denied."""
        root = self.bound_to_small_order_key()
        body = {
            **decoded(parts(root)[1]),
            "iss": "svc-a",
            "sub": "mallory",
            "jti": "forged-link",
            "cnf": {"jkt": ATTACKER.public.thumbprint},
            "dep": 1,
            "par": {"jti": "coupon-1", "hsh": link_hash(root)},
        }
        head = {"alg": "EdDSA", "typ": COUPON_TYP, "jwk": SMALL_ORDER_JWK}
        prefix = f"{b64url_encode(dumps_compact(head))}.{b64url_encode(dumps_compact(body))}"
        token = f"{root}~{prefix}.{b64url_encode(UNIVERSAL_SIGNATURE)}"
        dpop = create_dpop_proof(
            ATTACKER, method="GET", uri=URI, now=NOW, jti="p-forged", access_token=token
        )
        request = Request(audience=AUD, method="GET", uri=URI, dpop=dpop)
        decision = verifier().decide(token, request, now=NOW)
        assert not decision.allowed
        assert isinstance(decision.error, InvalidChain | InvalidSignature)
        assert decision.error.step == "chain"

    def test_proof_forged_by_anyone(self) -> None:
        """A DPoP proof with the universal signature of a small-order key is denied."""
        token = self.bound_to_small_order_key()
        head = {"typ": "dpop+jwt", "alg": "EdDSA", "jwk": SMALL_ORDER_JWK}
        body = {"jti": "p-forged", "htm": "GET", "htu": URI, "iat": NOW, "ath": ath_for(token)}
        prefix = f"{b64url_encode(dumps_compact(head))}.{b64url_encode(dumps_compact(body))}"
        dpop = f"{prefix}.{b64url_encode(UNIVERSAL_SIGNATURE)}"
        request = Request(audience=AUD, method="GET", uri=URI, dpop=dpop)
        decision = verifier().decide(token, request, now=NOW)
        assert not decision.allowed
        assert isinstance(decision.error, InvalidProof)


ALPHABET: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


class TestMutation:
    """Every single-bit change to any character of a valid coupon is denied, never a crash."""

    @PART
    def test_every_bit_of_every_character(self, index: int) -> None:
        """Each of the 6 bits of each base64url character, flipped, gives a denial."""
        token = coupon_for()
        v = verifier()
        assert v.decide(token, present(token), now=NOW).allowed
        split = parts(token)
        part = split[index]
        bad: list[tuple[int, int, str]] = []
        for position, bit in itertools.product(range(len(part)), range(6)):
            char = ALPHABET[ALPHABET.index(part[position]) ^ (1 << bit)]
            mutated = [*split]
            mutated[index] = part[:position] + char + part[position + 1 :]
            candidate = ".".join(mutated)
            try:
                decision = v.decide(candidate, present(candidate), now=NOW)
            except Exception as exc:  # the point is that nothing escapes
                bad.append((position, bit, f"raised {exc!r}"))
                continue
            if decision.allowed or not isinstance(decision.error, CouponError):
                bad.append((position, bit, "allowed"))
        assert bad == []
