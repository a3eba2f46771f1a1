"""The pure checks of OIDC bearer tokens (``_oidc_core``), with keys generated in-process.

These are unit tests in addition to the real-provider tests: every rule one mutation at a
time, RFC 7515 / RFC 8037 known answers for the signature step, and hypothesis for the
invariants (nothing but ``AuthenticationFailed`` escapes; time rules hold for every clock).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Final

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from coupon import codes
from coupon._settings_oidc import OIDC_ROLES
from coupon.authority._auth import ROLES
from coupon.authority._oidc_core import (
    MAX_TOKEN_SIZE,
    BearerToken,
    ProviderPolicy,
    VerificationKey,
    check_claims,
    choose_key,
    claim_at,
    key_algorithms,
    map_roles,
    parse_bearer,
    parse_jwks,
    principal_id,
    verify_signature,
)
from coupon.errors import AuthenticationFailed
from coupon.token.hazmat import parse_compact

VECTORS: Final = Path(__file__).resolve().parents[1] / "vectors"
ISSUER: Final = "https://login.example.com/realms/acme"
NOW: Final = 1_767_225_600
RSA_KEY: Final = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY: Final = ec.generate_private_key(ec.SECP256R1())
POLICY: Final = ProviderPolicy(
    issuer=ISSUER,
    audience="coupon-authority",
    algorithms=frozenset({"RS256", "ES256", "EdDSA"}),
    roles_claim="realm_access.roles",
    role_map={"coupon-issuers": frozenset({"issuer"}), "ops": frozenset({"admin", "auditor"})},
    tenant_claim="tenant",
    leeway=60,
    max_age=3600,
)


def _claims(**changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "alice",
        "aud": "coupon-authority",
        "iat": NOW,
        "exp": NOW + 300,
        "tenant": "acme",
        "realm_access": {"roles": ["coupon-issuers", "unmapped"]},
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _token(claims: dict[str, Any] | None = None, **header: Any) -> str:
    return jwt.encode(
        claims or _claims(), RSA_KEY, algorithm=header.pop("alg", "RS256"), headers=header
    )


def _rsa_jwk(kid: str = "rsa-1", **extra: Any) -> dict[str, Any]:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(RSA_KEY.public_key()))
    return {**jwk, "kid": kid, **extra}


def _code(call: Any) -> str:
    with pytest.raises(AuthenticationFailed) as refused:
        call()
    return refused.value.code.code


def test_role_names_match_the_authority() -> None:
    """The settings' role names are the Authority's (the settings may not import it)."""
    assert frozenset(OIDC_ROLES) == ROLES


class TestParse:
    def test_a_real_token_parses(self) -> None:
        """A well-formed RS256 token gives its header and claims."""
        token = parse_bearer(_token(kid="rsa-1"), algorithms={"RS256"})
        assert (token.alg, token.kid, token.issuer) == ("RS256", "rsa-1", ISSUER)

    @pytest.mark.parametrize(
        ("header", "code"),
        [
            ({"alg": "none"}, "CPN-OIDC-003"),
            ({"alg": "NONE"}, "CPN-OIDC-003"),
            ({"alg": "HS256"}, "CPN-OIDC-003"),
            ({"alg": "hs512"}, "CPN-OIDC-003"),
            ({}, "CPN-OIDC-001"),
            ({"alg": 7}, "CPN-OIDC-001"),
            ({"alg": "RS256", "kid": 5}, "CPN-OIDC-001"),
            ({"alg": "RS256", "kid": "k" * 300}, "CPN-OIDC-001"),
            ({"alg": "RS256", "crit": ["exp"]}, "CPN-OIDC-001"),
            ({"alg": "RS256", "b64": False}, "CPN-OIDC-001"),
            ({"alg": "RS256", "typ": "logout+jwt"}, "CPN-OIDC-011"),
            ({"alg": "RS256", "typ": "dpop+jwt"}, "CPN-OIDC-011"),
            ({"alg": "RS256", "typ": "coupon+jwt"}, "CPN-OIDC-011"),
            ({"alg": "PS512"}, "CPN-OIDC-003"),
        ],
    )
    def test_header_mutations(self, header: dict[str, Any], code: str) -> None:
        """Each bad header member has its code (algorithm, malformed, type)."""
        body = jwt.utils.base64url_encode(json.dumps(_claims()).encode()).decode()
        head = jwt.utils.base64url_encode(json.dumps(header).encode()).decode()
        assert _code(lambda: parse_bearer(f"{head}.{body}.c2ln", algorithms={"RS256"})) == code

    @pytest.mark.parametrize("typ", ["JWT", "jwt", "at+jwt", "application/at+JWT"])
    def test_accepted_types(self, typ: str) -> None:
        """ID tokens (JWT or no typ) and RFC 9068 access tokens (at+jwt) are accepted."""
        assert parse_bearer(_token(typ=typ)).header["typ"] == typ

    @pytest.mark.parametrize(
        "text", ["", "a", "a.b", "a.b.c.d", "e30.e30.", "!!.e30.e30", "é.e30.e30", "e30.W10.e30"]
    )
    def test_malformed(self, text: str) -> None:
        """Structure, base64url and JSON problems are CPN-OIDC-001."""
        assert _code(lambda: parse_bearer(text)) == "CPN-OIDC-001"

    def test_size_limit(self) -> None:
        """A token longer than the limit is refused before it is decoded."""
        assert _code(lambda: parse_bearer("a" * (MAX_TOKEN_SIZE + 1))) == "CPN-OIDC-001"

    def test_missing_iss(self) -> None:
        """Without iss the provider cannot be chosen: CPN-OIDC-010."""
        assert _code(lambda: parse_bearer(_token(_claims(iss=None)))) == "CPN-OIDC-010"

    @settings(max_examples=300, deadline=None)
    @given(st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.hex()))
    def test_anything_is_a_token_or_a_refusal(self, text: str) -> None:
        """No input makes the parser raise anything but AuthenticationFailed."""
        with contextlib.suppress(AuthenticationFailed):
            parse_bearer(text)


class TestKeys:
    def test_key_types_decide_the_algorithms(self) -> None:
        """RSA >= 2048 allows RS*/PS*, a P-256 key ES256 only, Ed25519 EdDSA only."""
        assert key_algorithms(RSA_KEY.public_key()) == {
            "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"
        }  # fmt: skip
        assert key_algorithms(EC_KEY.public_key()) == {"ES256"}
        p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
        assert key_algorithms(p384) == {"ES384"}
        assert key_algorithms(ed25519.Ed25519PrivateKey.generate().public_key()) == {"EdDSA"}
        small = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
        assert key_algorithms(small) == frozenset()
        k1 = ec.generate_private_key(ec.SECP256K1()).public_key()
        assert key_algorithms(k1) == frozenset()

    def test_jwks_keeps_only_usable_signing_keys(self) -> None:
        """oct, private, encryption, mismatched alg and duplicate kids are skipped, with why."""
        ec_jwk = {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(EC_KEY.public_key())), "kid": "ec"}
        document = {
            "keys": [
                _rsa_jwk("good"),
                ec_jwk,
                {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
                {**_rsa_jwk("private"), "d": "AQAB"},
                _rsa_jwk("enc", use="enc"),
                _rsa_jwk("confused", alg="HS256"),
                _rsa_jwk("good"),
                "not an object",
                {"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA", "kid": "off-curve"},
            ]
        }
        keys, skipped = parse_jwks(document)
        assert [k.kid for k in keys] == ["good", "ec"]
        assert len(skipped) == 7

    def test_jwks_alg_narrows_the_key(self) -> None:
        """A JWK's alg member narrows what its key may verify."""
        keys, _ = parse_jwks({"keys": [_rsa_jwk("rs", alg="PS256")]})
        assert keys[0].algorithms == {"PS256"}

    @pytest.mark.parametrize("document", [{}, {"keys": {}}, {"keys": [_rsa_jwk()] * 65}])
    def test_not_a_jwks(self, document: dict[str, Any]) -> None:
        """A document without a keys list, or with too many keys, is refused whole."""
        with pytest.raises(ValueError, match="JWKS"):
            parse_jwks(document)

    def test_choose_key(self) -> None:
        """By kid; without a kid only when exactly one key fits the algorithm."""
        rsa_key = VerificationKey("a", RSA_KEY.public_key(), frozenset({"RS256"}))
        ec_key = VerificationKey("b", EC_KEY.public_key(), frozenset({"ES256"}))
        assert choose_key([rsa_key, ec_key], "b", "ES256") is ec_key
        assert choose_key([rsa_key, ec_key], "c", "ES256") is None
        assert choose_key([rsa_key, ec_key], None, "RS256") is rsa_key
        assert choose_key([rsa_key, rsa_key], None, "RS256") is None


class TestSignature:
    @pytest.mark.parametrize("name", ["rfc7515-a2-rs256", "rfc7515-a3-es256"])
    def test_rfc7515_known_answers(self, name: str) -> None:
        """RFC 7515 A.2 (RS256) and A.3 (ES256) verify with their published keys."""
        data = json.loads((VECTORS / "rfc7515.json").read_text())
        example = next(e for e in data["examples"] if e["name"] == name)
        keys, _ = parse_jwks({"keys": [example["jwk"]]})
        jws = parse_compact(example["jws"], max_size=4096)
        assert jws.payload.decode() == data["payload_json"]
        token = BearerToken(jws.header, {"iss": "joe"}, jws.signature, jws.signing_input)
        verify_signature(token, keys[0])
        flipped = bytes([jws.signature[0] ^ 1]) + jws.signature[1:]
        bad = BearerToken(jws.header, {}, flipped, jws.signing_input)
        assert _code(lambda: verify_signature(bad, keys[0])) == "CPN-OIDC-005"

    def test_rfc8037_ed25519_known_answer(self) -> None:
        """RFC 8037 A.4 (EdDSA) verifies with the A.2 public key."""
        data = json.loads((VECTORS / "jose.json").read_text())["rfc8037"]
        keys, _ = parse_jwks({"keys": [data["public_jwk"]]})
        jws = parse_compact(data["jws"]["compact"], max_size=4096)
        verify_signature(BearerToken(jws.header, {}, jws.signature, jws.signing_input), keys[0])

    def test_the_key_decides_the_algorithm(self) -> None:
        """An ES256 token checked against an RSA key is CPN-OIDC-003, before any math."""
        keys, _ = parse_jwks({"keys": [_rsa_jwk()]})
        es = jwt.encode(_claims(), EC_KEY, algorithm="ES256", headers={"kid": "rsa-1"})
        assert _code(lambda: verify_signature(parse_bearer(es), keys[0])) == "CPN-OIDC-003"

    def test_ps256_with_an_rsa_key(self) -> None:
        """RSA-PSS tokens verify with the provider's RSA key."""
        keys, _ = parse_jwks({"keys": [_rsa_jwk()]})
        verify_signature(parse_bearer(_token(alg="PS256")), keys[0])

    def test_another_key(self) -> None:
        """A token signed by another RSA key does not verify: CPN-OIDC-005."""
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        keys, _ = parse_jwks({"keys": [_rsa_jwk()]})
        token = parse_bearer(jwt.encode(_claims(), other, algorithm="RS256"))
        assert _code(lambda: verify_signature(token, keys[0])) == "CPN-OIDC-005"


class TestClaims:
    def test_a_valid_token_describes_its_caller(self) -> None:
        """Principal id oidc:<issuer host and path>:<sub>, mapped roles, tenant, method oidc."""
        principal = check_claims(_claims(), POLICY, now=NOW)
        assert principal.id == "oidc:login.example.com/realms/acme:alice"
        assert principal.roles == {"issuer"}
        assert principal.tenant == "acme"
        assert principal.method == "oidc"
        assert principal.subject == "alice"

    @pytest.mark.parametrize(
        ("changes", "code"),
        [
            ({"iss": "https://login.example.com/realms/other"}, "CPN-OIDC-002"),
            ({"exp": NOW - 60}, "CPN-OIDC-006"),
            ({"exp": None}, "CPN-OIDC-010"),
            ({"exp": True}, "CPN-OIDC-010"),
            ({"exp": "tomorrow"}, "CPN-OIDC-010"),
            ({"iat": None}, "CPN-OIDC-010"),
            ({"iat": NOW + 61}, "CPN-OIDC-007"),
            ({"nbf": NOW + 61}, "CPN-OIDC-007"),
            ({"nbf": "soon"}, "CPN-OIDC-010"),
            ({"iat": NOW - 3661, "exp": NOW + 100}, "CPN-OIDC-008"),
            ({"aud": "someone-else"}, "CPN-OIDC-009"),
            ({"aud": None}, "CPN-OIDC-009"),
            ({"aud": [1, 2]}, "CPN-OIDC-009"),
            ({"aud": ["coupon-authority", "other"]}, "CPN-OIDC-009"),
            ({"aud": ["coupon-authority", "other"], "azp": "other"}, "CPN-OIDC-009"),
            ({"azp": "some-spa"}, "CPN-OIDC-009"),
            ({"sub": None}, "CPN-OIDC-010"),
            ({"sub": ""}, "CPN-OIDC-010"),
            ({"sub": 42}, "CPN-OIDC-010"),
            ({"sub": "a\nb"}, "CPN-OIDC-010"),
            ({"sub": "x" * 256}, "CPN-OIDC-010"),
            ({"tenant": None}, "CPN-OIDC-010"),
            ({"tenant": ["acme"]}, "CPN-OIDC-010"),
            ({"cnf": {"jkt": "x"}}, "CPN-OIDC-011"),
            (
                {"events": {"http://schemas.openid.net/event/backchannel-logout": {}}},
                "CPN-OIDC-011",
            ),
        ],
    )
    def test_claim_mutations(self, changes: dict[str, Any], code: str) -> None:
        """One change per rule, each refused with its code."""
        assert _code(lambda: check_claims(_claims(**changes), POLICY, now=NOW)) == code

    @pytest.mark.parametrize(
        "changes",
        [
            {"exp": NOW - 59},
            {"iat": NOW + 60},
            {"nbf": NOW + 60},
            {"iat": NOW - 3660, "exp": NOW + 100},
            {"aud": ["other", "coupon-authority"], "azp": "coupon-authority"},
            {"azp": "coupon-authority"},
            {"exp": NOW + 300.5, "iat": float(NOW)},
        ],
    )
    def test_within_the_rules(self, changes: dict[str, Any]) -> None:
        """The edges the leeway allows, azp rules met, and fractional times are accepted."""
        check_claims(_claims(**changes), POLICY, now=NOW)

    def test_authorized_parties(self) -> None:
        """Configured parties replace the audience as the allowed azp values."""
        policy = ProviderPolicy(
            issuer=ISSUER,
            audience="coupon-authority",
            algorithms=frozenset({"RS256"}),
            authorized_parties=frozenset({"coupon-cli"}),
        )
        check_claims(_claims(azp="coupon-cli", tenant=None), policy, now=NOW)
        claims = _claims(azp="coupon-authority")
        assert _code(lambda: check_claims(claims, policy, now=NOW)) == "CPN-OIDC-009"

    def test_no_tenant_claim_configured(self) -> None:
        """Without a tenant claim the caller is not tenant-bound."""
        policy = ProviderPolicy(issuer=ISSUER, audience="coupon-authority", algorithms=frozenset())
        assert check_claims(_claims(tenant=None), policy, now=NOW).tenant is None

    @settings(max_examples=400, deadline=None)
    @given(
        exp=st.integers(NOW - 10_000, NOW + 10_000),
        iat=st.integers(NOW - 10_000, NOW + 10_000),
        nbf=st.none() | st.integers(NOW - 10_000, NOW + 10_000),
        now=st.integers(NOW - 10_000, NOW + 10_000),
    )
    def test_time_rules_for_every_clock(
        self, exp: int, iat: int, nbf: int | None, now: int
    ) -> None:
        """Accepted exactly when now < exp + leeway, nbf and iat <= now + leeway, and
        now - iat <= max age + leeway."""
        expected = (
            now < exp + 60
            and (nbf is None or nbf <= now + 60)
            and iat <= now + 60
            and now - iat <= 3660
        )
        claims = _claims(exp=exp, iat=iat, nbf=nbf)
        if expected:
            check_claims(claims, POLICY, now=now)
            return
        with pytest.raises(AuthenticationFailed) as refused:
            check_claims(claims, POLICY, now=now)
        assert refused.value.code in (codes.OIDC_EXPIRED, codes.OIDC_NOT_YET, codes.OIDC_TOO_OLD)

    @settings(max_examples=300, deadline=None)
    @given(
        st.dictionaries(
            st.sampled_from(["iss", "sub", "aud", "exp", "iat", "nbf", "azp", "tenant", "cnf"]),
            st.none()
            | st.booleans()
            | st.integers()
            | st.floats(allow_nan=False)
            | st.text()
            | st.lists(st.text(), max_size=3),
        )
    )
    def test_any_claims_are_accepted_or_refused(self, claims: dict[str, Any]) -> None:
        """No claim set makes the checks raise anything but AuthenticationFailed."""
        with contextlib.suppress(AuthenticationFailed):
            check_claims(claims, POLICY, now=NOW)


class TestMapping:
    def test_claim_paths(self) -> None:
        """Dotted paths descend into objects; a claim whose name has dots is found first."""
        claims = {"realm_access": {"roles": ["a"]}, "https://example.com/roles": ["b"]}
        assert claim_at(claims, "realm_access.roles") == ["a"]
        assert claim_at(claims, "https://example.com/roles") == ["b"]
        assert claim_at(claims, "realm_access.missing") is None
        assert claim_at({"a": "text"}, "a.b") is None

    def test_role_values(self) -> None:
        """Lists and space-separated strings map; unknown values and non-strings grant nothing."""
        role_map = POLICY.role_map
        assert map_roles(["ops", "x", 5], role_map) == {"admin", "auditor"}
        assert map_roles("openid coupon-issuers", role_map) == {"issuer"}
        assert map_roles({"ops": True}, role_map) == frozenset()
        assert map_roles(None, role_map) == frozenset()
        assert map_roles(["issuer", "admin"], role_map) == frozenset()

    @pytest.mark.parametrize(
        ("issuer", "expected"),
        [
            ("https://accounts.example.com", "oidc:accounts.example.com:u1"),
            ("https://accounts.example.com/", "oidc:accounts.example.com:u1"),
            ("http://127.0.0.1:8080/realms/x", "oidc:127.0.0.1:8080/realms/x:u1"),
        ],
    )
    def test_principal_id(self, issuer: str, expected: str) -> None:
        """The id names the issuer without its scheme (its host, port and path) and the sub."""
        assert principal_id(issuer, "u1") == expected
