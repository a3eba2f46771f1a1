"""OpenID Connect bearer tokens, checked without I/O: parse, keys, signature, claims, roles.

The rules follow RFC 8725 (JWT best current practices) and OpenID Connect Core §3.1.3.7:

- the token names its issuer, and only a configured issuer is looked at; its keys come from
  that issuer's own discovery document, never from the token (``jku``, ``x5u``, ``jwk`` and
  ``x5c`` are ignored);
- the algorithm must be on the provider's allowlist (never ``none``, never HMAC) *and* fit the
  type of the key the ``kid`` names: the key decides, not the token;
- ``iss`` is exact, ``aud`` contains our audience, ``azp`` is an allowed party when present and
  required when there are several audiences; ``exp``, ``iat`` and ``sub`` are required,
  ``nbf`` is honoured, all with a small leeway, and a token older than the maximum age is
  refused;
- ``typ``, when present, must be ``JWT`` or ``at+jwt``; sender-constrained tokens (``cnf``) and
  security event tokens (``events``, e.g. logout tokens) are not bearer credentials here.

Time is an argument (``now``), so every rule is testable without a clock.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt.algorithms import get_default_algorithms

from coupon import codes
from coupon.codes import ErrorCode
from coupon.errors import AuthenticationFailed, MalformedCoupon
from coupon.token.hazmat import PRIVATE_JWK_MEMBERS, b64url_decode, loads_object, parse_compact

from ._auth import Principal

__all__ = [
    "MAX_TOKEN_SIZE",
    "BearerToken",
    "ProviderPolicy",
    "VerificationKey",
    "check_claims",
    "choose_key",
    "claim_at",
    "key_algorithms",
    "map_roles",
    "parse_bearer",
    "parse_jwks",
    "principal_id",
    "verify_signature",
]

#: Longest bearer token read (ID tokens with many groups are large; coupons are far smaller).
MAX_TOKEN_SIZE: Final = 16_384
_MIN_RSA_BITS: Final = 2048
_ACCEPTED_TYP: Final = frozenset({"jwt", "at+jwt", "application/jwt", "application/at+jwt"})
_SUB: Final = re.compile(r"^[^\x00-\x1f\x7f]{1,255}$")
_TENANT: Final = re.compile(r"^[^\x00-\x1f\x7f]{1,256}$")
_KID_MAX: Final = 256
_ALGS: Final = get_default_algorithms()


def _fail(code: ErrorCode, reason: str) -> AuthenticationFailed:
    return AuthenticationFailed(code, reason)


@dataclass(frozen=True, slots=True)
class ProviderPolicy:
    """What a token of one provider must satisfy (built from ``OidcProvider`` settings)."""

    issuer: str
    audience: str
    algorithms: frozenset[str]
    authorized_parties: frozenset[str] = frozenset()
    roles_claim: str = "roles"
    role_map: Mapping[str, frozenset[str]] = field(default_factory=dict)
    tenant_claim: str = ""
    leeway: int = 60
    max_age: int = 3600

    @property
    def parties(self) -> frozenset[str]:
        """The allowed ``azp`` values (the audience unless configured)."""
        return self.authorized_parties or frozenset({self.audience})


@dataclass(frozen=True, slots=True)
class BearerToken:
    """A parsed, not yet verified token: only :func:`verify_signature` makes it trustworthy."""

    header: dict[str, Any]
    claims: dict[str, Any]
    signature: bytes
    signing_input: bytes

    @property
    def alg(self) -> str:
        return str(self.header["alg"])

    @property
    def kid(self) -> str | None:
        kid = self.header.get("kid")
        return kid if isinstance(kid, str) else None

    @property
    def issuer(self) -> str:
        return str(self.claims["iss"])


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """One usable public key of a provider and the algorithms its type allows."""

    kid: str | None
    key: Any
    algorithms: frozenset[str]


def parse_bearer(token: str, *, algorithms: Iterable[str] | None = None) -> BearerToken:
    """Parse a compact JWS strictly and check its header; the signature is not checked.

    ``algorithms``, when given, is the allowlist the header's ``alg`` must be on.

    Raises:
        AuthenticationFailed: ``CPN-OIDC-001`` malformed, ``-003`` algorithm, ``-011`` type.
    """
    try:
        if len(token) > MAX_TOKEN_SIZE:
            raise _fail(codes.OIDC_MALFORMED, f"token is longer than {MAX_TOKEN_SIZE} characters")
        # The header first: an unsigned ("alg": "none", empty signature) or HMAC token is
        # refused for its algorithm, whatever else is wrong with it.
        header = loads_object(b64url_decode(token.split(".", 1)[0]))
        alg = header.get("alg")
        if not isinstance(alg, str) or not alg:
            raise _fail(codes.OIDC_MALFORMED, "header has no alg")
        check_algorithm(alg, None)
        jws = parse_compact(token, max_size=MAX_TOKEN_SIZE)
        claims = loads_object(jws.payload)
    except MalformedCoupon as exc:
        raise _fail(codes.OIDC_MALFORMED, exc.reason) from None
    kid = header.get("kid")
    if kid is not None and (not isinstance(kid, str) or not 0 < len(kid) <= _KID_MAX):
        raise _fail(codes.OIDC_MALFORMED, "kid is not a short string")
    if "crit" in header:
        raise _fail(codes.OIDC_MALFORMED, "no critical header extension is understood")
    if header.get("b64", True) is not True:
        raise _fail(codes.OIDC_MALFORMED, "unencoded payloads are not accepted")
    if not isinstance(claims.get("iss"), str) or not claims["iss"]:
        raise _fail(codes.OIDC_CLAIM, "iss is missing")
    typ = header.get("typ")
    if typ is not None and (not isinstance(typ, str) or typ.lower() not in _ACCEPTED_TYP):
        raise _fail(codes.OIDC_TYPE, f"typ {str(typ)[:40]!r} is not JWT or at+jwt")
    check_algorithm(alg, algorithms)
    return BearerToken(header, claims, jws.signature, jws.signing_input)


def check_algorithm(alg: str, allowed: Iterable[str] | None) -> None:
    """Refuse ``none``, HMAC and anything off the allowlist (``CPN-OIDC-003``)."""
    if alg.lower() == "none":
        raise _fail(codes.OIDC_ALG, "alg none is never accepted")
    if alg.upper().startswith("HS"):
        raise _fail(codes.OIDC_ALG, f"{alg[:20]} is symmetric: never accepted from a provider")
    if allowed is not None and alg not in allowed:
        raise _fail(codes.OIDC_ALG, f"alg {alg[:20]!r} is not allowed for this provider")


def key_algorithms(key: Any) -> frozenset[str]:
    """The algorithms a public key's type allows; empty for keys we never use."""
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < _MIN_RSA_BITS:
            return frozenset()
        return frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
    if isinstance(key, ec.EllipticCurvePublicKey):
        by_curve = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
        alg = by_curve.get(key.curve.name)
        return frozenset({alg}) if alg else frozenset()
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return frozenset({"EdDSA"})
    return frozenset()


_PARSE_AS: Final = {"RSA": "RS256", "EC": None, "OKP": "EdDSA"}
_EC_ALG: Final = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}


def _jwk_key(jwk: Mapping[str, Any]) -> VerificationKey:
    kty = jwk.get("kty")
    if kty not in _PARSE_AS:
        raise ValueError(f"kty {str(kty)[:10]!r} is not an asymmetric signing key type")
    if PRIVATE_JWK_MEMBERS & jwk.keys():
        raise ValueError("the JWK holds private key members")
    if jwk.get("use", "sig") != "sig":
        raise ValueError("the JWK is not for signatures")
    kid = jwk.get("kid")
    if kid is not None and (not isinstance(kid, str) or not 0 < len(kid) <= _KID_MAX):
        raise ValueError("the JWK's kid is not a short string")
    parse_as = _PARSE_AS[kty] or _EC_ALG.get(str(jwk.get("crv")))
    if parse_as is None:
        raise ValueError(f"curve {str(jwk.get('crv'))[:10]!r} is not supported")
    try:
        key = jwt.PyJWK(dict(jwk), algorithm=parse_as).key
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        raise ValueError(f"the JWK does not parse: {exc}") from None
    allowed = key_algorithms(key)
    declared = jwk.get("alg")
    if declared is not None:
        allowed = allowed & {declared}
    if not allowed:
        raise ValueError("no allowed algorithm fits the key (too small, or alg mismatch)")
    return VerificationKey(kid=kid, key=key, algorithms=allowed)


def parse_jwks(
    document: Mapping[str, Any], *, max_keys: int = 64
) -> tuple[tuple[VerificationKey, ...], list[str]]:
    """The usable signing keys of a JWKS document, and why each other key was skipped.

    Raises:
        ValueError: the document is not a JWKS (no ``keys`` list, too many keys).
    """
    keys = document.get("keys")
    if not isinstance(keys, list):
        raise ValueError("the JWKS has no keys list")
    if len(keys) > max_keys:
        raise ValueError(f"the JWKS has {len(keys)} keys, more than {max_keys}")
    usable: list[VerificationKey] = []
    skipped: list[str] = []
    seen: set[str] = set()
    for index, jwk in enumerate(keys):
        try:
            if not isinstance(jwk, dict):
                raise ValueError("not a JSON object")
            key = _jwk_key(jwk)
            if key.kid is not None and key.kid in seen:
                raise ValueError(f"kid {key.kid!r} appears twice")
        except ValueError as exc:
            skipped.append(f"key {index}: {exc}")
            continue
        if key.kid is not None:
            seen.add(key.kid)
        usable.append(key)
    return tuple(usable), skipped


def choose_key(
    keys: Sequence[VerificationKey], kid: str | None, alg: str
) -> VerificationKey | None:
    """The key ``kid`` names (or, without a kid, the only key that fits ``alg``); None: unknown."""
    if kid is not None:
        return next((k for k in keys if k.kid == kid), None)
    fitting = [k for k in keys if alg in k.algorithms]
    return fitting[0] if len(fitting) == 1 else None


def verify_signature(token: BearerToken, key: VerificationKey) -> None:
    """Check the signature with ``key``, whose type must allow the token's ``alg``.

    Raises:
        AuthenticationFailed: ``CPN-OIDC-003`` the key's type does not fit the alg,
            ``CPN-OIDC-005`` the signature does not verify.
    """
    alg = token.alg
    if alg not in key.algorithms:
        raise _fail(
            codes.OIDC_ALG,
            f"alg {alg[:20]!r} does not fit the key {key.kid!r} ({sorted(key.algorithms)})",
        )
    try:
        valid = bool(_ALGS[alg].verify(token.signing_input, key.key, token.signature))
    except (ValueError, TypeError, jwt.PyJWTError):
        valid = False
    if not valid:
        raise _fail(codes.OIDC_SIGNATURE, f"signature does not verify with key {key.kid!r}")


def claim_at(claims: Mapping[str, Any], path: str) -> Any:
    """The claim named ``path``, or found by following its dots (``realm_access.roles``).

    A claim whose own name contains dots (``https://example.com/roles``) is found first.
    """
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def map_roles(value: Any, role_map: Mapping[str, frozenset[str]]) -> frozenset[str]:
    """Our roles for a roles claim: a list of strings, or one string of space-separated values.

    Only values in ``role_map`` grant anything; every other value, and anything that is not a
    string, grants nothing.
    """
    if isinstance(value, str):
        values: list[Any] = value.split()
    elif isinstance(value, list):
        values = value
    else:
        return frozenset()
    roles: set[str] = set()
    for item in values[:1024]:
        if isinstance(item, str):
            roles |= role_map.get(item, frozenset())
    return frozenset(roles)


def principal_id(issuer: str, subject: str) -> str:
    """``oidc:<issuer without its scheme>:<sub>``: ``oidc:<host>:<sub>`` for a path-less issuer."""
    parts = urlsplit(issuer)
    where = (parts.netloc + parts.path).rstrip("/")
    return f"oidc:{where}:{subject}"


def _number(claims: Mapping[str, Any], name: str) -> float:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(codes.OIDC_CLAIM, f"{name} is missing or not a number")
    return float(value)


def _check_audience(claims: Mapping[str, Any], policy: ProviderPolicy) -> None:
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
        raise _fail(codes.OIDC_AUDIENCE, "aud is missing or malformed")
    if policy.audience not in audiences:
        raise _fail(codes.OIDC_AUDIENCE, f"aud does not contain {policy.audience!r}")
    azp = claims.get("azp")
    if azp is None and len(audiences) > 1:
        raise _fail(codes.OIDC_AUDIENCE, "several audiences and no azp")
    if azp is not None and azp not in policy.parties:
        raise _fail(codes.OIDC_AUDIENCE, f"azp {str(azp)[:64]!r} is not an allowed party")


def check_claims(claims: Mapping[str, Any], policy: ProviderPolicy, *, now: float) -> Principal:
    """Check a verified token's claims at ``now`` and return the caller they describe.

    Raises:
        AuthenticationFailed: ``CPN-OIDC-006``/``-007``/``-008`` time, ``-009`` audience,
            ``-010`` claims, ``-011`` type.
    """
    if claims.get("iss") != policy.issuer:
        raise _fail(codes.OIDC_ISSUER, "iss is not the provider's issuer")
    if "cnf" in claims:
        raise _fail(codes.OIDC_TYPE, "sender-constrained tokens (cnf) are not bearer tokens")
    if "events" in claims:
        raise _fail(codes.OIDC_TYPE, "security event tokens (events) are not accepted")
    exp = _number(claims, "exp")
    iat = _number(claims, "iat")
    nbf = _number(claims, "nbf") if "nbf" in claims else None
    if now >= exp + policy.leeway:
        raise _fail(codes.OIDC_EXPIRED, f"expired {int(now - exp)} s ago")
    if nbf is not None and nbf > now + policy.leeway:
        raise _fail(codes.OIDC_NOT_YET, f"not valid for another {int(nbf - now)} s")
    if iat > now + policy.leeway:
        raise _fail(codes.OIDC_NOT_YET, f"issued {int(iat - now)} s in the future")
    if now - iat > policy.max_age + policy.leeway:
        raise _fail(codes.OIDC_TOO_OLD, f"issued {int(now - iat)} s ago, limit {policy.max_age}")
    _check_audience(claims, policy)
    sub = claims.get("sub")
    if not isinstance(sub, str) or not _SUB.fullmatch(sub):
        raise _fail(codes.OIDC_CLAIM, "sub is missing or malformed")
    tenant: str | None = None
    if policy.tenant_claim:
        value = claim_at(claims, policy.tenant_claim)
        if not isinstance(value, str) or not _TENANT.fullmatch(value):
            raise _fail(codes.OIDC_CLAIM, f"tenant claim {policy.tenant_claim!r} is missing")
        tenant = value
    roles = map_roles(claim_at(claims, policy.roles_claim), policy.role_map)
    return Principal(
        id=principal_id(policy.issuer, sub),
        roles=roles,
        tenant=tenant,
        method="oidc",
        subject=sub,
    )
