"""Legacy bearer JWTs during the dual-auth migration: verify one, map it to a coupon decision.

The checks, in order, each failure a :class:`~coupon.errors.CouponError` with a ``CPN-LEG``
code (``CPN-REV-001`` / ``CPN-DEP-001`` from the revocation view)::

    audience   legacy is "migrating" for the requested audience (unlisted = off)  LEGACY_OFF
    structure  a compact JWS of bounded size with a JSON header and payload        LEGACY_MALFORMED
    issuer     iss names a configured legacy issuer                               LEGACY_ISSUER
    alg        in that issuer's allowlist (never none; HS256 xor RS256/ES256)      LEGACY_ALG
    key        the secret, or the JWKS key for kid that fits alg                  LEGACY_SIGNATURE
    signature  PyJWT verifies it with that key and alg only                       LEGACY_SIGNATURE
    aud        the audience's configured aud value (default: its own name)        LEGACY_AUDIENCE
    time       exp, iat (and nbf) against the injected clock, with leeway         LEGACY_TIME
    revoked    subject, tenant or jti revoked at the Authority                     REVOKED
    scope      a configured scope grants the resource, action and purpose         LEGACY_SCOPE

Time is an argument; PyJWT's own clock checks are off.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import jwt

from coupon import codes
from coupon._settings_migration import LegacyGrant, LegacyIssuer
from coupon.codes import ErrorCode
from coupon.errors import (
    CouponError,
    CouponRevoked,
    InsufficientScope,
    InvalidCoupon,
    InvalidSignature,
    MalformedCoupon,
)
from coupon.token import (
    ResourcePattern,
    RevocationChecker,
    RevocationFacts,
    parse_resource,
    purpose_covers,
)
from coupon.token._scope import parse_purpose

from ._legacy_jwks import JwksCache

__all__ = ["LegacyRequest", "LegacyVerified", "LegacyVerifier"]

MAX_TOKEN: Final = 8192
_KTY: Final = {"RS256": ("RSA", None), "ES256": ("EC", "P-256")}


@dataclass(frozen=True, slots=True)
class LegacyRequest:
    """What the relying service asks about a legacy token (as for a coupon)."""

    audience: str
    resource: str | None = None
    action: str | None = None
    purpose: str | None = None
    tenant: str | None = None


@dataclass(frozen=True, slots=True)
class LegacyVerified:
    """A legacy token that passed every check, in coupon terms."""

    issuer: str
    subject: str
    tenant: str
    audience: str
    scopes: tuple[str, ...]
    grants: tuple[LegacyGrant, ...]
    matched: LegacyGrant | None
    issued_at: int
    expires_at: int
    jti: str | None
    alg: str
    kid: str | None

    def claims(self) -> dict[str, Any]:
        """The coupon-equivalent claims of the decision (``legacy`` marks them)."""
        out: dict[str, Any] = {
            "iss": self.issuer,
            "sub": self.subject,
            "aud": [self.audience],
            "tid": self.tenant,
            "iat": self.issued_at,
            "exp": self.expires_at,
            "jti": self.jti,
            "scope": list(self.scopes),
            "grants": [_grant_dict(g) for g in self.grants],
            "legacy": True,
        }
        if self.matched is not None:
            out.update(_grant_dict(self.matched))
        return out


def _grant_dict(grant: LegacyGrant) -> dict[str, Any]:
    return {"res": grant.resource, "act": sorted(grant.actions), "pur": grant.purpose or "*"}


def _fail(code: ErrorCode, reason: str, step: str) -> CouponError:
    kinds: dict[str, type[CouponError]] = {
        "MalformedCoupon": MalformedCoupon,
        "InvalidSignature": InvalidSignature,
        "InsufficientScope": InsufficientScope,
    }
    return kinds.get(code.kind, InvalidCoupon)(code, reason, step=step)


class LegacyVerifier:
    """Verifies legacy JWTs of the configured issuers for the audiences in migration.

    Args:
        issuers: the legacy issuers (their grant resource patterns are checked here).
        audiences: audience -> ``"migrating"`` or ``"off"``; an unlisted audience is off.
        jwks: where asymmetric issuers' keys come from.
        revocations: the Authority's revocation view (subject, tenant and jti revocations
            apply to legacy tokens too; a stale view fails closed).
    """

    def __init__(
        self,
        issuers: Sequence[LegacyIssuer],
        audiences: Mapping[str, str],
        *,
        jwks: JwksCache,
        revocations: RevocationChecker | None,
    ) -> None:
        self._issuers = {issuer.issuer: issuer for issuer in issuers}
        if len(self._issuers) != len(issuers):
            raise ValueError("two legacy issuers share an iss")
        for issuer in issuers:
            for grant in issuer.scopes.values():
                ResourcePattern.parse(grant.resource)
        self._audiences = dict(audiences)
        self._jwks = jwks
        self._revocations = revocations

    def mode(self, audience: str) -> str:
        """``"migrating"`` or ``"off"`` for ``audience``."""
        return "migrating" if self._audiences.get(audience) == "migrating" else "off"

    async def verify(self, token: str, request: LegacyRequest, *, now: float) -> LegacyVerified:
        """Run every check (module doc) and return the verified token.

        Raises:
            CouponError: the code of the first check that failed.
        """
        if self.mode(request.audience) != "migrating":
            raise _fail(
                codes.LEGACY_OFF, f"legacy tokens are off for {request.audience!r}", "audience"
            )
        if len(token) > MAX_TOKEN:
            raise _fail(codes.LEGACY_MALFORMED, f"token over {MAX_TOKEN} characters", "structure")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise _fail(codes.LEGACY_MALFORMED, str(exc)[:200], "structure") from None
        iss = unverified.get("iss")
        issuer = self._issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise _fail(codes.LEGACY_ISSUER, f"iss {str(iss)[:100]!r} is not configured", "issuer")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in issuer.algorithms:
            raise _fail(
                codes.LEGACY_ALG, f"alg {str(alg)[:16]!r} not in {issuer.algorithms}", "alg"
            )
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise _fail(codes.LEGACY_MALFORMED, "kid is not a string", "structure")
        key = await self._key(issuer, alg, kid)
        claims = self._decode(token, key, alg, issuer, request.audience)
        subject, tenant, iat, exp = self._claims(claims, issuer, now)
        jti = claims.get("jti") if isinstance(claims.get("jti"), str) else None
        self._check_revoked(issuer, subject, tenant, jti, kid or alg, iat, now)
        if request.tenant is not None and request.tenant != tenant:
            raise _fail(codes.LEGACY_SCOPE, f"tenant {request.tenant!r} is not {tenant!r}", "scope")
        scopes = _scopes(claims.get(issuer.scope_claim))
        grants = tuple(issuer.scopes[s] for s in scopes if s in issuer.scopes)
        matched = _match(grants, request, scopes)
        return LegacyVerified(
            issuer=issuer.issuer,
            subject=subject,
            tenant=tenant,
            audience=request.audience,
            scopes=scopes,
            grants=grants,
            matched=matched,
            issued_at=iat,
            expires_at=exp,
            jti=jti,
            alg=alg,
            kid=kid,
        )

    async def _key(self, issuer: LegacyIssuer, alg: str, kid: str | None) -> Any:
        if alg == "HS256":
            assert issuer.secret is not None  # the settings model guarantees it
            return issuer.secret.get_secret_value().encode()
        keys = await self._jwks.keys(issuer, kid=kid)
        kty, crv = _KTY[alg]
        fitting = [
            k
            for k in keys
            if k.get("kty") == kty
            and (crv is None or k.get("crv") == crv)
            and k.get("use", "sig") == "sig"
            and k.get("alg", alg) == alg
        ]
        if kid is not None:
            fitting = [k for k in fitting if k.get("kid") == kid]
        if len(fitting) != 1:
            found = "no" if not fitting else "several"
            raise _fail(codes.LEGACY_SIGNATURE, f"{found} {alg} key for kid {kid!r}", "key")
        try:
            return jwt.PyJWK(fitting[0], algorithm=alg).key
        except jwt.PyJWTError as exc:
            raise _fail(codes.LEGACY_SIGNATURE, f"unusable key: {exc}"[:200], "key") from None

    def _decode(
        self, token: str, key: Any, alg: str, issuer: LegacyIssuer, audience: str
    ) -> dict[str, Any]:
        expected = issuer.audiences.get(audience, audience)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=expected,
                issuer=issuer.issuer,
                options={
                    "verify_exp": False,  # checked below against the injected clock
                    "verify_nbf": False,
                    "verify_iat": False,
                    "require": ["exp", "iat", "iss", "aud", "sub"],
                },
            )
        except jwt.InvalidSignatureError:
            raise _fail(codes.LEGACY_SIGNATURE, "signature does not verify", "signature") from None
        except jwt.InvalidAlgorithmError as exc:
            raise _fail(codes.LEGACY_ALG, str(exc)[:200], "alg") from None
        except jwt.InvalidAudienceError:
            raise _fail(codes.LEGACY_AUDIENCE, f"aud does not name {expected!r}", "aud") from None
        except jwt.InvalidIssuerError:
            raise _fail(codes.LEGACY_ISSUER, "iss changed under verification", "issuer") from None
        except jwt.MissingRequiredClaimError as exc:
            code = codes.LEGACY_AUDIENCE if exc.claim == "aud" else codes.LEGACY_MALFORMED
            raise _fail(code, f"claim {exc.claim!r} is missing", "claims") from None
        except jwt.PyJWTError as exc:
            raise _fail(codes.LEGACY_MALFORMED, str(exc)[:200], "claims") from None
        return claims

    def _claims(
        self, claims: Mapping[str, Any], issuer: LegacyIssuer, now: float
    ) -> tuple[str, str, int, int]:
        subject = claims.get("sub")
        if not isinstance(subject, str) or not 0 < len(subject) <= 256:
            raise _fail(codes.LEGACY_MALFORMED, "sub is not a short string", "claims")
        tenant: object = issuer.tenant
        if issuer.tenant_claim is not None:
            tenant = claims.get(issuer.tenant_claim)
            if not isinstance(tenant, str) or not 0 < len(tenant) <= 256:
                raise _fail(codes.LEGACY_MALFORMED, "tenant claim missing or invalid", "claims")
        assert isinstance(tenant, str)
        times = {name: claims.get(name) for name in ("iat", "exp", "nbf")}
        for name, value in times.items():
            if value is None and name == "nbf":
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise _fail(codes.LEGACY_MALFORMED, f"{name} is not an integer", "claims")
        iat, exp, nbf = times["iat"], times["exp"], times["nbf"]
        assert isinstance(iat, int)
        assert isinstance(exp, int)
        leeway = issuer.leeway
        if now >= exp + leeway:
            raise _fail(codes.LEGACY_TIME, f"expired at {exp}", "time")
        if iat > now + leeway or (isinstance(nbf, int) and nbf > now + leeway):
            raise _fail(codes.LEGACY_TIME, "not valid yet (iat or nbf in the future)", "time")
        if exp - iat > issuer.max_lifetime:
            raise _fail(codes.LEGACY_TIME, f"lifetime over {issuer.max_lifetime}s", "time")
        return subject, tenant, iat, exp

    def _check_revoked(
        self,
        issuer: LegacyIssuer,
        subject: str,
        tenant: str,
        jti: str | None,
        kid: str,
        iat: int,
        now: float,
    ) -> None:
        if self._revocations is None:
            return
        facts = RevocationFacts(
            jtis=(jti,) if jti else (),
            lineage=f"legacy:{issuer.issuer}",
            subjects=(subject,),
            tenant=tenant,
            kid=f"legacy:{kid}",
            issued_at=iat,
        )
        reason = self._revocations.revoked(facts, now=now)
        if reason is not None:
            raise CouponRevoked(codes.REVOKED, reason, step="revocation")


def _scopes(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(value.split())
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    return ()


def _match(
    grants: tuple[LegacyGrant, ...], request: LegacyRequest, scopes: tuple[str, ...]
) -> LegacyGrant | None:
    """The first grant covering the request; None when the request names nothing to grant."""
    if request.resource is None and request.action is None and request.purpose is None:
        return None
    resource = parse_resource(request.resource) if request.resource is not None else None
    purpose = parse_purpose(request.purpose) if request.purpose is not None else None
    for grant in grants:
        if resource is not None and not ResourcePattern.parse(grant.resource).matches(resource):
            continue
        if request.action is not None and request.action not in grant.actions:
            continue
        if (
            purpose is not None
            and grant.purpose is not None
            and not purpose_covers(grant.purpose, purpose)
        ):
            continue
        return grant
    raise _fail(
        codes.LEGACY_SCOPE,
        f"scopes {list(scopes)[:16]} grant no {request.action!r} on {request.resource!r}",
        "scope",
    )
