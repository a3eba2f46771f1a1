"""DPoP proofs (RFC 9449): creation, every verification check, htu normalisation.

Negative cases follow one rule: start from a proof that verifies and change one thing.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from coupon import codes
from coupon.codes import ErrorCode
from coupon.errors import CouponError, InvalidProof, InvalidRequest, NonceRequired
from coupon.token._dpop import (
    DpopProof,
    ath_for,
    create_dpop_proof,
    normalize_htu,
    verify_dpop_proof,
)
from coupon.token._keys import SigningKey, VerifyingKey
from coupon.token.hazmat import b64url_encode, encode_compact, public_key_to_jwk, sign

NOW = 1_700_000_000
METHOD = "POST"
URI = "https://api.example.com/orders/42"
TOKEN = "coupon.token.value"


@pytest.fixture(params=["EdDSA", "ES256"])
def key(request: pytest.FixtureRequest) -> SigningKey:
    return SigningKey.generate(request.param)


@pytest.fixture(scope="module")
def other_key() -> SigningKey:
    return SigningKey.generate("ES256")


def good_claims() -> dict[str, Any]:
    return {"jti": "jti-1", "htm": METHOD, "htu": URI, "iat": NOW}


def parts(key: SigningKey) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and claims of a proof that verifies, for mutating."""
    header = {"typ": "dpop+jwt", "alg": key.alg, "jwk": public_key_to_jwk(key.public.public_key)}
    return header, good_claims()


def b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def forge(key: SigningKey, header: dict[str, Any], claims: dict[str, Any]) -> str:
    """Sign any header and claims with ``key``, whatever they say."""
    signing_input, prefix = encode_compact(header, claims)
    return f"{prefix}.{b64url_encode(key.sign(signing_input))}"


def forge_raw(key: SigningKey, header: bytes, payload: bytes) -> str:
    """Sign raw JSON bytes (for duplicate members, which dicts cannot hold)."""
    prefix = f"{b64url_encode(header)}.{b64url_encode(payload)}"
    return f"{prefix}.{b64url_encode(key.sign(prefix.encode()))}"


def verify(proof: str, **kwargs: Any) -> DpopProof:
    args: dict[str, Any] = {"method": METHOD, "uri": URI, "now": NOW, **kwargs}
    return verify_dpop_proof(proof, **args)


def rejects(proof: str, code: ErrorCode, **kwargs: Any) -> CouponError:
    with pytest.raises(CouponError) as info:
        verify(proof, **kwargs)
    assert info.value.code is code, info.value.reason
    return info.value


def flip(text: str, index: int) -> str:
    """Change one base64url character to another valid one."""
    return text[:index] + ("B" if text[index] == "A" else "A") + text[index + 1 :]


class TestAthFor:
    def test_rfc9449_example(self) -> None:
        """The access token of RFC 9449 §7.1 hashes to the published ath."""
        token = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"
        assert ath_for(token) == "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"

    def test_is_unpadded_base64url_sha256(self) -> None:
        """ath is base64url(SHA-256(ASCII(token))) without padding."""
        digest = hashlib.sha256(TOKEN.encode()).digest()
        assert ath_for(TOKEN) == b64url_encode(digest)
        assert "=" not in ath_for(TOKEN)

    def test_non_ascii_token_is_misuse(self) -> None:
        """A token is ASCII by definition, so anything else is a programming error."""
        with pytest.raises(ValueError, match="ASCII"):
            ath_for("tökén")


class TestNormalizeHtu:
    @pytest.mark.parametrize(
        ("uri", "expected"),
        [
            ("https://api.example.com/orders", "https://api.example.com/orders"),
            ("HTTPS://API.Example.COM/orders", "https://api.example.com/orders"),
            ("https://api.example.com:443/orders", "https://api.example.com/orders"),
            ("http://api.example.com:80/orders", "http://api.example.com/orders"),
            ("https://api.example.com:8443/orders", "https://api.example.com:8443/orders"),
            ("https://api.example.com:/orders", "https://api.example.com/orders"),
            ("https://api.example.com:0443/orders", "https://api.example.com/orders"),
            ("https://api.example.com", "https://api.example.com/"),
            ("https://api.example.com?q=1", "https://api.example.com/"),
            ("https://api.example.com/orders?q=1#top", "https://api.example.com/orders"),
            ("https://api.example.com/orders#top", "https://api.example.com/orders"),
            ("https://api.example.com/a/./b/../orders", "https://api.example.com/a/orders"),
            ("https://api.example.com/../orders", "https://api.example.com/orders"),
            ("https://api.example.com/a/..", "https://api.example.com/"),
            ("https://api.example.com/a/b/.", "https://api.example.com/a/b/"),
            ("https://api.example.com/a/%2E%2E/orders", "https://api.example.com/orders"),
            ("https://api.example.com/%7euser", "https://api.example.com/~user"),
            ("https://api.example.com/%41%62", "https://api.example.com/Ab"),
            ("https://api.example.com/a%2fb", "https://api.example.com/a%2Fb"),
            ("https://api.example.com/a%c3%a9", "https://api.example.com/a%C3%A9"),
            ("https://api.example.com//orders", "https://api.example.com//orders"),
            ("https://[2001:DB8:0:0::1]:443/x", "https://[2001:db8::1]/x"),
            ("https://127.0.0.1:8080/x", "https://127.0.0.1:8080/x"),
        ],
    )
    def test_normal_form(self, uri: str, expected: str) -> None:
        """Syntax- and scheme-based normalisation (RFC 3986 §6.2.2-6.2.3) gives one form."""
        assert normalize_htu(uri) == expected

    @pytest.mark.parametrize(
        ("a", "b"),
        [
            ("https://api.example.com/orders", "https://api.example.com/Orders"),
            ("https://api.example.com/orders", "http://api.example.com/orders"),
            ("https://api.example.com/orders", "https://api.example.com:8443/orders"),
            ("https://api.example.com/orders", "https://api.example.com/orders/"),
            ("https://api.example.com/a%2Fb", "https://api.example.com/a/b"),
            ("https://api.example.com/orders", "https://api.example.org/orders"),
        ],
    )
    def test_distinct_uris_stay_distinct(self, a: str, b: str) -> None:
        """Path case, scheme, port, trailing slash, %2F and host are significant."""
        assert normalize_htu(a) != normalize_htu(b)

    @pytest.mark.parametrize(
        "uri",
        [
            "",
            "/orders",
            "api.example.com/orders",
            "https:/api.example.com/orders",
            "https:///orders",
            "ftp://api.example.com/orders",
            "javascript:alert(1)",
            "file:///etc/passwd",
            "https://user:pw@api.example.com/orders",
            "https://@api.example.com/",
            "https://api.example.com:99999/",
            "https://api.example.com:0/",
            "https://api.example.com:8x/",
            "https://api.example.com:123456/",
            "https://api.exämple.com/",
            "https://api.example.com/ördérs",
            "https://api.example.com/a b",
            "https://api.example.com/a\tb",
            "https://api.example.com/a\nb",
            "https://api.example.com/a\\b",
            'https://api.example.com/"x"',
            "https://api.example.com/%zz",
            "https://api.example.com/%4",
            "https://api%2Eexample.com/",
            "https://[::1/",
            "https://[fe80::1%25eth0]/",
            "https://[v1.fe80::1]/",
            "https://[not-ip]/",
            "https://" + "a" * 5000 + "/",
        ],
    )
    def test_garbage_is_refused(self, uri: str) -> None:
        """Anything but an absolute, ASCII http(s) URI without userinfo is refused."""
        with pytest.raises(InvalidRequest) as info:
            normalize_htu(uri)
        assert info.value.code is codes.REQUEST_URI

    def test_userinfo_is_named(self) -> None:
        """Userinfo gets its own reason: credentials in a URI are never an accident."""
        with pytest.raises(InvalidRequest, match="userinfo"):
            normalize_htu("https://user:pw@api.example.com/")

    @given(st.text(max_size=200))
    @settings(max_examples=300, deadline=None)
    def test_any_text_normalises_or_is_refused(self, text: str) -> None:
        """No input makes the normaliser raise anything but InvalidRequest, and it is idempotent."""
        try:
            once = normalize_htu("https://h.example/" + text)
        except InvalidRequest:
            return
        assert normalize_htu(once) == once


class TestCreateDpopProof:
    def test_header_carries_only_the_public_key(self, key: SigningKey) -> None:
        """The header is typ, alg and a jwk with the key's required public members only."""
        proof = create_dpop_proof(key, method=METHOD, uri=URI, now=NOW, jti="j")
        header = json.loads(b64decode(proof.split(".")[0]))
        assert header == {
            "typ": "dpop+jwt",
            "alg": key.alg,
            "jwk": public_key_to_jwk(key.public.public_key),
        }
        assert not {"kid", "alg", "use", "d"} & header["jwk"].keys()

    def test_claims(self, key: SigningKey) -> None:
        """The claims are jti, htm, htu and iat, plus ath and nonce when given."""
        proof = create_dpop_proof(
            key, method="GET", uri=URI, now=NOW, jti="j", access_token=TOKEN, nonce="n-1"
        )
        claims = json.loads(b64decode(proof.split(".")[1]))
        assert claims == {
            "jti": "j",
            "htm": "GET",
            "htu": URI,
            "iat": NOW,
            "ath": ath_for(TOKEN),
            "nonce": "n-1",
        }

    def test_htu_leaves_out_query_and_fragment(self, key: SigningKey) -> None:
        """htu is the target URI as written, without query and fragment (RFC 9449 §4.2)."""
        proof = create_dpop_proof(
            key, method=METHOD, uri="https://API.example.com:443/x?a=1#f", now=NOW, jti="j"
        )
        assert json.loads(b64decode(proof.split(".")[1]))["htu"] == "https://API.example.com:443/x"

    @pytest.mark.parametrize("jti", ["", "x" * 257])
    def test_jti_length_is_checked(self, key: SigningKey, jti: str) -> None:
        """An empty or overlong jti is a programming error."""
        with pytest.raises(ValueError, match="jti"):
            create_dpop_proof(key, method=METHOD, uri=URI, now=NOW, jti=jti)

    @pytest.mark.parametrize("now", [1.5, True])
    def test_iat_is_whole_seconds(self, key: SigningKey, now: Any) -> None:
        """iat is an int; a float or bool is a programming error."""
        with pytest.raises(TypeError):
            create_dpop_proof(key, method=METHOD, uri=URI, now=now, jti="j")

    @pytest.mark.parametrize(
        ("method", "uri"), [("GE T", URI), ("", URI), (METHOD, "ftp://x/"), (METHOD, "/rel")]
    )
    def test_bad_request_is_refused(self, key: SigningKey, method: str, uri: str) -> None:
        """A method that is not a token or a URI that is not http(s) is never signed."""
        with pytest.raises(InvalidRequest):
            create_dpop_proof(key, method=method, uri=uri, now=NOW, jti="j")


class TestRoundTrip:
    def test_proof_verifies(self, key: SigningKey) -> None:
        """A proof we create verifies and reports what it proves."""
        proof = create_dpop_proof(key, method=METHOD, uri=URI, now=NOW, jti="jti-1")
        checked = verify(proof)
        assert checked == DpopProof(
            jkt=key.public.thumbprint,
            jti="jti-1",
            iat=NOW,
            htm=METHOD,
            htu=URI,
            ath=None,
            nonce=None,
            alg=key.alg,
            jwk=public_key_to_jwk(key.public.public_key),
        )

    def test_with_token_and_nonce(self, key: SigningKey) -> None:
        """ath and nonce round-trip and are checked."""
        seen: list[tuple[str | None, float]] = []

        class Nonces:
            def check(self, nonce: str | None, *, now: float) -> None:
                seen.append((nonce, now))

        proof = create_dpop_proof(
            key, method=METHOD, uri=URI, now=NOW, jti="j", access_token=TOKEN, nonce="n-1"
        )
        checked = verify(proof, access_token=TOKEN, nonces=Nonces())
        assert (checked.ath, checked.nonce) == (ath_for(TOKEN), "n-1")
        assert seen == [("n-1", NOW)]

    def test_request_uri_with_query_verifies(self, key: SigningKey) -> None:
        """The request's query and fragment do not matter, on either side."""
        proof = create_dpop_proof(key, method=METHOD, uri=URI + "?a=1", now=NOW, jti="j")
        assert verify(proof, uri=URI + "?b=2#frag").htu == URI


class TestStructure:
    def test_not_a_string_is_misuse(self) -> None:
        """Passing bytes is a programming error, not a bad proof."""
        with pytest.raises(TypeError):
            verify_dpop_proof(b"a.b.c", method=METHOD, uri=URI, now=NOW)  # type: ignore[arg-type]

    def test_oversized(self, key: SigningKey) -> None:
        """A proof over max_size is refused before parsing, keeping the parser's reason."""
        proof = create_dpop_proof(key, method=METHOD, uri=URI, now=NOW, jti="j")
        error = rejects(proof, codes.POP_MALFORMED, max_size=len(proof) - 1)
        assert "limit" in error.reason

    def test_non_ascii(self, key: SigningKey) -> None:
        """A proof with a non-ASCII character is malformed."""
        proof = create_dpop_proof(key, method=METHOD, uri=URI, now=NOW, jti="j")
        rejects(proof[:-1] + "é", codes.POP_MALFORMED)

    @pytest.mark.parametrize(
        "proof", ["", "a.b", "a.b.c.d", "..", "a..c", "e30.e30.", "e30=.e30.AA"]
    )
    def test_not_one_compact_jws(self, proof: str) -> None:
        """Anything but three non-empty strict base64url parts is malformed."""
        rejects(proof, codes.POP_MALFORMED)

    def test_two_proofs_in_one_header(self, key: SigningKey) -> None:
        """Two proofs joined as one header value are not one JWS."""
        proof = create_dpop_proof(key, method=METHOD, uri=URI, now=NOW, jti="j")
        rejects(f"{proof}, {proof}", codes.POP_MALFORMED)

    def test_duplicate_header_member(self, key: SigningKey) -> None:
        """A header with a member twice is malformed (its meaning would be ambiguous)."""
        jwk = json.dumps(public_key_to_jwk(key.public.public_key))
        header = f'{{"typ":"dpop+jwt","alg":"{key.alg}","alg":"none","jwk":{jwk}}}'.encode()
        _, claims = parts(key)
        error = rejects(forge_raw(key, header, json.dumps(claims).encode()), codes.POP_MALFORMED)
        assert "duplicate" in error.reason

    def test_duplicate_claim(self, key: SigningKey) -> None:
        """A payload with a claim twice is malformed even with a valid signature."""
        header, _ = parts(key)
        payload = f'{{"jti":"j","htm":"GET","htm":"{METHOD}","htu":"{URI}","iat":{NOW}}}'
        proof = forge_raw(key, json.dumps(header).encode(), payload.encode())
        assert "duplicate" in rejects(proof, codes.POP_MALFORMED).reason

    @pytest.mark.parametrize("payload", [b"[]", b"not json", b'{"iat":NaN}', b"\xff"])
    def test_payload_not_a_json_object(self, key: SigningKey, payload: bytes) -> None:
        """A signed payload that is not a strict JSON object is malformed."""
        header, _ = parts(key)
        rejects(forge_raw(key, json.dumps(header).encode(), payload), codes.POP_MALFORMED)


class TestHeader:
    @pytest.mark.parametrize("typ", [None, "JWT", "DPOP+JWT", "application/dpop+jwt", ["dpop+jwt"]])
    def test_typ(self, key: SigningKey, typ: Any) -> None:
        """typ must be exactly dpop+jwt, so no other JWT passes as a proof."""
        header, claims = parts(key)
        header["typ"] = typ
        if typ is None:
            del header["typ"]
        rejects(forge(key, header, claims), codes.POP_TYP)

    def test_alg_none_without_signature(self, key: SigningKey) -> None:
        """An unsigned proof (alg none, empty signature) is refused at parsing."""
        header, claims = parts(key)
        _, prefix = encode_compact({**header, "alg": "none"}, claims)
        rejects(prefix + ".", codes.POP_MALFORMED)

    def test_alg_none_with_signature(self, key: SigningKey) -> None:
        """alg none is refused even when a signature is attached."""
        header, claims = parts(key)
        rejects(forge(key, {**header, "alg": "none"}, claims), codes.POP_ALG)

    def test_alg_hs256_with_public_key_as_secret(self, key: SigningKey) -> None:
        """The key-confusion attack: HMAC keyed with the public key is refused by alg."""
        header, claims = parts(key)
        signing_input, prefix = encode_compact({**header, "alg": "HS256"}, claims)
        pem = key.public.public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        for secret in (pem, json.dumps(header["jwk"]).encode()):
            mac = hmac.new(secret, signing_input, hashlib.sha256).digest()
            rejects(f"{prefix}.{b64url_encode(mac)}", codes.POP_ALG)

    def test_hmac_cannot_be_allowed(self) -> None:
        """Asking for HS256 is a programming error: it is not in the algorithm table."""
        with pytest.raises(ValueError, match="HS256"):
            verify("a.b.c", algorithms=frozenset({"ES256", "HS256"}))

    def test_alg_outside_allow_list(self, key: SigningKey) -> None:
        """An algorithm the caller did not allow is refused, however good the signature."""
        proof = create_dpop_proof(key, method=METHOD, uri=URI, now=NOW, jti="j")
        other = "ES256" if key.alg == "EdDSA" else "EdDSA"
        rejects(proof, codes.POP_ALG, algorithms=frozenset({other}))

    @pytest.mark.parametrize("alg", [None, 256, ["ES256"], {"a": 1}, "es256", "RS256"])
    def test_alg_malformed_or_unknown(self, key: SigningKey, alg: Any) -> None:
        """A missing, non-string, miscased or disallowed alg is refused."""
        header, claims = parts(key)
        header["alg"] = alg
        if alg is None:
            del header["alg"]
        rejects(forge(key, header, claims), codes.POP_ALG)

    @pytest.mark.parametrize("crit", [["exp"], ["b64"], [], "b64"])
    def test_crit(self, key: SigningKey, crit: Any) -> None:
        """We understand no JWS extension, so any crit header is refused."""
        header, claims = parts(key)
        rejects(forge(key, {**header, "crit": crit, "b64": False}, claims), codes.POP_MALFORMED)

    @pytest.mark.parametrize("jwk", [None, "a-key", ["x"], 1])
    def test_jwk_missing_or_not_an_object(self, key: SigningKey, jwk: Any) -> None:
        """The jwk header must be present and be an object."""
        header, claims = parts(key)
        header["jwk"] = jwk
        if jwk is None:
            del header["jwk"]
        rejects(forge(key, header, claims), codes.POP_JWK)

    @pytest.mark.parametrize("member", ["d", "p", "q", "dp", "dq", "qi", "k"])
    def test_jwk_with_private_material(self, key: SigningKey, member: str) -> None:
        """A jwk carrying any private member is refused (RFC 9449 §4.3 check 7)."""
        header, claims = parts(key)
        header["jwk"] = {**header["jwk"], member: "AAAA"}
        error = rejects(forge(key, header, claims), codes.POP_JWK)
        assert member in error.reason

    def test_real_private_jwk(self, key: SigningKey) -> None:
        """The client's own private JWK, pasted in the header, is refused."""
        header, claims = parts(key)
        rejects(forge(key, {**header, "jwk": key.private_jwk()}, claims), codes.POP_JWK)

    @pytest.mark.parametrize(
        "jwk",
        [
            {"kty": "oct"},
            {"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"},
            {"kty": "OKP", "crv": "X25519", "x": "AA"},
            {"kty": ["OKP"]},
            {"kty": {"a": 1}},
            {"kty": "EC", "crv": ["P-256"]},
            {"kty": "OKP", "crv": "Ed25519", "x": 5},
            {"kty": "OKP", "crv": "Ed25519", "x": "AAAA"},
            {"kty": "EC", "crv": "P-256", "x": "A" * 43, "y": "A" * 43},
            {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
        ],
    )
    def test_jwk_unusable(self, key: SigningKey, jwk: dict[str, Any]) -> None:
        """A jwk of an unknown type or curve, or with bad coordinates, is refused."""
        header, claims = parts(key)
        rejects(forge(key, {**header, "jwk": jwk}, claims), codes.POP_JWK)

    def test_alg_does_not_fit_key(self, key: SigningKey, other_key: SigningKey) -> None:
        """The jwk decides the algorithm: an EdDSA header over a P-256 key is refused."""
        ed = SigningKey.generate("EdDSA")
        for signer, alg in ((other_key, "EdDSA"), (ed, "ES256")):
            header, claims = parts(signer)
            rejects(forge(signer, {**header, "alg": alg}, claims), codes.POP_ALG)

    def test_p256_key_with_es384(self, other_key: SigningKey) -> None:
        """A P-256 key is ES256 only, even where ES384 is allowed."""
        header, claims = parts(other_key)
        proof = forge(other_key, {**header, "alg": "ES384"}, claims)
        rejects(proof, codes.POP_ALG, algorithms=frozenset({"ES256", "ES384"}))


class TestSignature:
    @pytest.mark.parametrize("index", [0, 10, 42, 80])
    def test_signature_bit_flip(self, key: SigningKey, index: int) -> None:
        """Changing one character of the signature breaks it."""
        proof = create_dpop_proof(key, method=METHOD, uri=URI, now=NOW, jti="j")
        head, payload, sig = proof.split(".")
        rejects(f"{head}.{payload}.{flip(sig, index)}", codes.POP_SIGNATURE)

    def test_payload_changed(self, key: SigningKey) -> None:
        """Changing one character of the signed payload breaks the signature."""
        proof = create_dpop_proof(key, method=METHOD, uri=URI, now=NOW, jti="j")
        head, payload, sig = proof.split(".")
        rejects(f"{head}.{flip(payload, 5)}.{sig}", codes.POP_SIGNATURE)

    def test_jwk_swapped(self, key: SigningKey, other_key: SigningKey) -> None:
        """A proof signed by one key does not verify under another key's jwk."""
        header, claims = parts(key)
        imposter = {**header, "jwk": public_key_to_jwk(other_key.public.public_key)}
        imposter["alg"] = other_key.alg
        rejects(forge(key, imposter, claims), codes.POP_SIGNATURE)

    def test_truncated_signature(self, key: SigningKey) -> None:
        """A signature of the wrong length does not verify."""
        proof = create_dpop_proof(key, method=METHOD, uri=URI, now=NOW, jti="j")
        head, payload, sig = proof.split(".")
        short = b64url_encode(b64decode(sig)[:-1])
        rejects(f"{head}.{payload}.{short}", codes.POP_SIGNATURE)


class _RsaSigner:
    """An RSA key behind the Signer protocol, which SigningKey does not cover."""

    def __init__(self, private: rsa.RSAPrivateKey, alg: str) -> None:
        self._private = private
        self.alg = alg
        self.public = VerifyingKey(private.public_key(), alg)
        self.kid = self.public.kid

    def sign(self, data: bytes) -> bytes:
        return sign(self.alg, self._private, data)


@pytest.fixture(scope="module")
def rsa_private() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class TestRsa:
    @pytest.mark.parametrize("alg", ["RS256", "PS256"])
    def test_proof_alg_picks_the_rsa_scheme(self, rsa_private: rsa.RSAPrivateKey, alg: str) -> None:
        """An RSA jwk has no alg of its own: the proof's alg chooses RS256 or PS256."""
        signer = _RsaSigner(rsa_private, alg)
        proof = create_dpop_proof(signer, method=METHOD, uri=URI, now=NOW, jti="j")
        assert verify(proof, algorithms=frozenset({alg})).alg == alg

    def test_scheme_swap_fails_the_signature(self, rsa_private: rsa.RSAPrivateKey) -> None:
        """A PKCS#1 v1.5 signature relabelled PS256 does not verify."""
        signer = _RsaSigner(rsa_private, "RS256")
        proof = create_dpop_proof(signer, method=METHOD, uri=URI, now=NOW, jti="j")
        header = json.loads(b64decode(proof.split(".")[0]))
        relabelled = b64url_encode(json.dumps({**header, "alg": "PS256"}).encode())
        forged = ".".join([relabelled, *proof.split(".")[1:]])
        rejects(forged, codes.POP_SIGNATURE, algorithms=frozenset({"PS256"}))

    def test_jwk_alg_must_agree(self, rsa_private: rsa.RSAPrivateKey) -> None:
        """A jwk that says RS256 cannot back a PS256 proof."""
        signer = _RsaSigner(rsa_private, "PS256")
        jwk = {**public_key_to_jwk(rsa_private.public_key()), "alg": "RS256"}
        header = {"typ": "dpop+jwt", "alg": "PS256", "jwk": jwk}
        signing_input, prefix = encode_compact(header, good_claims())
        proof = f"{prefix}.{b64url_encode(signer.sign(signing_input))}"
        rejects(proof, codes.POP_ALG, algorithms=frozenset({"PS256"}))

    def test_non_canonical_modulus(self, rsa_private: rsa.RSAPrivateKey) -> None:
        """A modulus with a leading zero octet would change the thumbprint: refused."""
        signer = _RsaSigner(rsa_private, "PS256")
        n = rsa_private.public_key().public_numbers().n
        jwk = {"kty": "RSA", "e": "AQAB", "n": b64url_encode(b"\0" + n.to_bytes(256, "big"))}
        header = {"typ": "dpop+jwt", "alg": "PS256", "jwk": jwk}
        signing_input, prefix = encode_compact(header, good_claims())
        proof = f"{prefix}.{b64url_encode(signer.sign(signing_input))}"
        rejects(proof, codes.POP_JWK, algorithms=frozenset({"PS256"}))

    def test_exponent_not_below_modulus(self, key: SigningKey) -> None:
        """An RSA jwk with e >= n is refused as a proof error, not a raw ValueError."""
        n = (1 << 2047) | 1
        jwk = {"kty": "RSA", "n": b64url_encode(n.to_bytes(256, "big")), "e": "AQAB"}
        jwk["e"] = b64url_encode((n + 2).to_bytes(256, "big"))
        header, claims = parts(key)
        proof = forge(key, {**header, "alg": "RS256", "jwk": jwk}, claims)
        rejects(proof, codes.POP_JWK, algorithms=frozenset({"RS256"}))


class TestClaims:
    @pytest.mark.parametrize("name", ["jti", "htm", "htu", "iat"])
    def test_required_claim_missing(self, key: SigningKey, name: str) -> None:
        """Each required claim must be present (RFC 9449 §4.3 check 3)."""
        header, claims = parts(key)
        del claims[name]
        rejects(forge(key, header, claims), codes.POP_CLAIM)

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("jti", 1),
            ("jti", ""),
            ("jti", "x" * 257),
            ("jti", None),
            ("htm", ["POST"]),
            ("htu", {"u": URI}),
            ("iat", float(NOW)),
            ("iat", True),
            ("iat", str(NOW)),
            ("iat", None),
            ("ath", 1),
            ("ath", None),
            ("nonce", 7),
            ("nonce", ["n"]),
        ],
    )
    def test_claim_malformed(self, key: SigningKey, name: str, value: Any) -> None:
        """A claim of the wrong type or length is refused, even if optional."""
        header, claims = parts(key)
        claims[name] = value
        rejects(forge(key, header, claims), codes.POP_CLAIM)

    def test_longest_jti(self, key: SigningKey) -> None:
        """A 256-character jti is accepted."""
        proof = create_dpop_proof(key, method=METHOD, uri=URI, now=NOW, jti="j" * 256)
        assert verify(proof).jti == "j" * 256

    def test_extra_claims_are_ignored(self, key: SigningKey) -> None:
        """Claims defined by extensions pass through the check."""
        header, claims = parts(key)
        assert verify(forge(key, header, {**claims, "x-ext": {"a": [1]}})).jti == "jti-1"


class TestHtm:
    @pytest.mark.parametrize("htm", ["post", "Post", "GET", "POST ", ""])
    def test_mismatch(self, key: SigningKey, htm: str) -> None:
        """htm must equal the method exactly: methods are case-sensitive (RFC 9110 §9.1)."""
        header, claims = parts(key)
        rejects(forge(key, header, {**claims, "htm": htm}), codes.POP_HTM)

    @pytest.mark.parametrize("method", ["", "GE T", "GET\n", "ÜBER"])
    def test_request_method_malformed(self, key: SigningKey, method: str) -> None:
        """The server's own method must be an RFC 9110 token."""
        proof = create_dpop_proof(key, method=METHOD, uri=URI, now=NOW, jti="j")
        with pytest.raises(InvalidRequest):
            verify(proof, method=method)


class TestHtu:
    @pytest.mark.parametrize(
        "htu",
        [
            "https://api.example.com/orders/42?x=1",
            "https://api.example.com/orders/42#f",
            "HTTPS://API.EXAMPLE.COM/orders/42",
            "https://api.example.com:443/orders/42",
            "https://api.example.com/orders/./42",
            "https://api.example.com/x/../orders/42",
            "https://api.example.com/%6Frders/42",
        ],
    )
    def test_equivalent_htu_verifies(self, key: SigningKey, htu: str) -> None:
        """htu is compared after normalisation, ignoring query and fragment."""
        header, claims = parts(key)
        assert verify(forge(key, header, {**claims, "htu": htu})).htu == htu

    @pytest.mark.parametrize(
        "htu",
        [
            "https://api.example.com/orders/43",
            "https://api.example.com/Orders/42",
            "http://api.example.com/orders/42",
            "https://api.example.com:8443/orders/42",
            "https://evil.example.com/orders/42",
            "https://api.example.com/orders/42/",
            "https://api.example.com/orders%2F42",
        ],
    )
    def test_different_htu(self, key: SigningKey, htu: str) -> None:
        """A proof for another URI is refused."""
        header, claims = parts(key)
        rejects(forge(key, header, {**claims, "htu": htu}), codes.POP_HTU)

    @pytest.mark.parametrize("htu", ["", "/orders/42", "ftp://api.example.com/orders/42", "é"])
    def test_garbage_htu_is_a_proof_error(self, key: SigningKey, htu: str) -> None:
        """A malformed htu is the proof's fault (POP_HTU), not the server's request."""
        header, claims = parts(key)
        rejects(forge(key, header, {**claims, "htu": htu}), codes.POP_HTU)

    def test_request_uri_malformed(self, key: SigningKey) -> None:
        """A malformed request URI is an InvalidRequest."""
        proof = create_dpop_proof(key, method=METHOD, uri=URI, now=NOW, jti="j")
        with pytest.raises(InvalidRequest):
            verify(proof, uri="not a uri")


class TestIat:
    @pytest.mark.parametrize(
        ("iat", "ok"),
        [
            (NOW, True),
            (NOW - 65, True),
            (NOW - 66, False),
            (NOW + 5, True),
            (NOW + 6, False),
            (0, False),
            (10**30, False),
            (-(10**30), False),
        ],
    )
    def test_window(self, key: SigningKey, iat: int, ok: bool) -> None:
        """iat must lie in [now - max_age - leeway, now + leeway], bounds included."""
        header, claims = parts(key)
        proof = forge(key, header, {**claims, "iat": iat})
        if ok:
            assert verify(proof).iat == iat
        else:
            rejects(proof, codes.POP_IAT)

    def test_window_is_configurable(self, key: SigningKey) -> None:
        """max_age and leeway move the bounds."""
        header, claims = parts(key)
        proof = forge(key, header, {**claims, "iat": NOW - 300})
        rejects(proof, codes.POP_IAT)
        assert verify(proof, max_age=290, leeway=10).iat == NOW - 300
        rejects(proof, codes.POP_IAT, max_age=290, leeway=9)

    def test_fractional_now(self, key: SigningKey) -> None:
        """now may be a float; the comparison is exact."""
        header, claims = parts(key)
        proof = forge(key, header, {**claims, "iat": NOW + 5})
        assert verify(proof, now=NOW + 0.5).iat == NOW + 5
        rejects(proof, codes.POP_IAT, now=NOW - 0.5)

    @pytest.mark.parametrize("kwargs", [{"max_age": -1}, {"leeway": -1}, {"now": float("nan")}])
    def test_misuse(self, key: SigningKey, kwargs: dict[str, Any]) -> None:
        """Negative windows and a NaN clock are programming errors."""
        proof = create_dpop_proof(key, method=METHOD, uri=URI, now=NOW, jti="j")
        with pytest.raises(ValueError, match=r"negative|finite"):
            verify(proof, **kwargs)


class TestAth:
    def test_missing(self, key: SigningKey) -> None:
        """With an access token, a proof without ath is refused."""
        proof = create_dpop_proof(key, method=METHOD, uri=URI, now=NOW, jti="j")
        assert "required" in rejects(proof, codes.POP_ATH, access_token=TOKEN).reason

    def test_wrong_token(self, key: SigningKey) -> None:
        """A proof made for another token is refused."""
        proof = create_dpop_proof(
            key, method=METHOD, uri=URI, now=NOW, jti="j", access_token=TOKEN + "x"
        )
        rejects(proof, codes.POP_ATH, access_token=TOKEN)

    def test_non_ascii_token(self, key: SigningKey) -> None:
        """A non-ASCII presented token cannot match and raises no ValueError."""
        proof = create_dpop_proof(key, method=METHOD, uri=URI, now=NOW, jti="j", access_token=TOKEN)
        rejects(proof, codes.POP_ATH, access_token="tökén")

    def test_ignored_without_token(self, key: SigningKey) -> None:
        """Without an access token, ath is not required to be absent; it is returned."""
        proof = create_dpop_proof(key, method=METHOD, uri=URI, now=NOW, jti="j", access_token=TOKEN)
        assert verify(proof).ath == ath_for(TOKEN)


class _Nonces:
    def __init__(self, good: str) -> None:
        self.good = good
        self.calls: list[str | None] = []

    def check(self, nonce: str | None, *, now: float) -> None:
        self.calls.append(nonce)
        if nonce != self.good:
            raise NonceRequired(codes.POP_NONCE, "use the fresh nonce")


class TestNonce:
    def test_accepted(self, key: SigningKey) -> None:
        """The proof's nonce is handed to the checker, which accepts it."""
        nonces = _Nonces("n-2")
        proof = create_dpop_proof(key, method=METHOD, uri=URI, now=NOW, jti="j", nonce="n-2")
        assert verify(proof, nonces=nonces).nonce == "n-2"
        assert nonces.calls == ["n-2"]

    @pytest.mark.parametrize("nonce", [None, "n-1"])
    def test_missing_or_stale(self, key: SigningKey, nonce: str | None) -> None:
        """A missing or stale nonce raises the checker's NonceRequired (use_dpop_nonce)."""
        proof = create_dpop_proof(key, method=METHOD, uri=URI, now=NOW, jti="j", nonce=nonce)
        error = rejects(proof, codes.POP_NONCE, nonces=_Nonces("n-2"))
        assert isinstance(error, NonceRequired)
        assert error.code.protocol == "use_dpop_nonce"

    def test_checked_last(self, key: SigningKey) -> None:
        """A proof failing a stateless check never reaches the nonce store."""
        nonces = _Nonces("n-2")
        proof = create_dpop_proof(key, method="GET", uri=URI, now=NOW, jti="j", nonce="n-2")
        rejects(proof, codes.POP_HTM, nonces=nonces)
        assert nonces.calls == []

    def test_without_checker_nonce_is_returned(self, key: SigningKey) -> None:
        """Without a nonce policy the nonce is not checked, only returned."""
        proof = create_dpop_proof(key, method=METHOD, uri=URI, now=NOW, jti="j", nonce="n-9")
        assert verify(proof).nonce == "n-9"


class TestOrder:
    def test_first_failing_check_wins(self, key: SigningKey) -> None:
        """With typ, htm and iat all wrong, the error is typ's: checks run in order."""
        header, claims = parts(key)
        bad = forge(key, {**header, "typ": "JWT"}, {**claims, "htm": "GET", "iat": 0})
        rejects(bad, codes.POP_TYP)
        bad = forge(key, header, {**claims, "htm": "GET", "iat": 0})
        rejects(bad, codes.POP_HTM)

    def test_error_names_its_step(self, key: SigningKey) -> None:
        """Each proof error records the step that failed, for diagnostics."""
        header, claims = parts(key)
        error = rejects(forge(key, header, {**claims, "iat": 0}), codes.POP_IAT)
        assert error.step == "iat"
        assert isinstance(error, InvalidProof)


class TestUntrustedInput:
    @given(st.text(max_size=300))
    @settings(max_examples=300, deadline=None)
    def test_any_text(self, text: str) -> None:
        """Any string either verifies or raises a CouponError, never a raw exception."""
        with pytest.raises(CouponError):
            verify(text)

    @given(
        header=st.dictionaries(
            st.sampled_from(["typ", "alg", "jwk", "crit", "kid"]),
            st.recursive(
                st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                lambda inner: (
                    st.lists(inner, max_size=3)
                    | st.dictionaries(st.sampled_from(["kty", "crv", "x", "y", "n", "e"]), inner)
                ),
                max_leaves=8,
            ),
        ),
        claims=st.dictionaries(
            st.sampled_from(["jti", "htm", "htu", "iat", "ath", "nonce"]),
            st.none()
            | st.booleans()
            | st.integers()
            | st.floats(allow_nan=False, allow_infinity=False)
            | st.text(max_size=8),
        ),
    )
    @settings(max_examples=300, deadline=None)
    def test_any_signed_json(self, header: dict[str, Any], claims: dict[str, Any]) -> None:
        """Signed but arbitrary header and claims never raise a raw exception."""
        proof = forge(_FUZZ_KEY, {"typ": "dpop+jwt", "alg": "EdDSA", **header}, claims)
        with contextlib.suppress(CouponError):
            verify(proof)


_FUZZ_KEY = SigningKey.generate("EdDSA")
