"""Who is calling the Authority: authenticators (a plug-in point) and roles.

An authenticator looks at the request headers and either recognises its scheme (returning a
:class:`Principal` or raising ``AuthenticationFailed``) or says it is not its scheme (None).
API keys are the first scheme; OIDC and mTLS callers plug in beside it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from coupon import codes
from coupon.errors import AuthenticationFailed, Forbidden
from coupon.storage.base import ApiKeyRecord

__all__ = [
    "API_KEY_HEADER",
    "ROLES",
    "ApiKeyAuthenticator",
    "Authenticator",
    "CallerContext",
    "Principal",
    "api_key_record",
    "authenticate",
    "new_api_key",
    "require_role",
]

ROLES: Final = frozenset({"admin", "issuer", "auditor", "verifier", "emitter"})
API_KEY_HEADER: Final = "x-api-key"
_API_KEY: Final = re.compile(r"cpk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller.

    ``subject``, when set, is the only coupon subject the caller may issue for unless it is an
    admin (an OIDC person gets coupons for their own ``sub``); None: any subject.
    ``certificate``, when set, is the ``x5t#S256`` of the client certificate the caller
    authenticated with (mTLS): the one certificate it may bind coupons to without admin.
    """

    id: str
    roles: frozenset[str]
    tenant: str | None
    method: str
    subject: str | None = None
    certificate: str | None = None

    def audit(self) -> dict[str, object]:
        """The caller as it appears in audit events."""
        return {
            "id": self.id,
            "roles": sorted(self.roles),
            "tenant": self.tenant,
            "method": self.method,
        }


@dataclass(frozen=True, slots=True)
class CallerContext:
    """What an authenticator may look at: the request's fields and its connection.

    Attributes:
        headers: the request's header fields (case-insensitive mapping).
        peer: the address of the connection's other end (a proxy, when there is one).
        client_cert_chain: the client certificate chain the TLS handshake verified, PEM,
            leaf first (the ASGI TLS extension's ``client_cert_chain``); empty without mTLS.
    """

    headers: Mapping[str, str]
    peer: str | None = None
    client_cert_chain: tuple[str, ...] = ()

    @classmethod
    def from_scope(cls, scope: Mapping[str, Any], headers: Mapping[str, str]) -> CallerContext:
        """The context of an ASGI HTTP request."""
        client = scope.get("client")
        tls = (scope.get("extensions") or {}).get("tls") or {}
        chain = tuple(str(pem) for pem in tls.get("client_cert_chain") or ())
        return cls(
            headers=headers, peer=str(client[0]) if client else None, client_cert_chain=chain
        )


class Authenticator(Protocol):
    """One authentication scheme."""

    async def authenticate(self, caller: CallerContext) -> Principal | None: ...


class ApiKeyStore(Protocol):
    async def get_api_key(self, key_id: str) -> ApiKeyRecord | None: ...


def _hash(secret: str) -> bytes:
    # The secret is 256 random bits, so a plain SHA-256 is as strong as a slow hash here.
    return hashlib.sha256(secret.encode()).digest()


def new_api_key(
    name: str, roles: Sequence[str], *, tenant: str | None = None, now: int | None = None
) -> tuple[str, ApiKeyRecord]:
    """Make a credential: the text to hand out once, and the record to store."""
    credential = f"cpk_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}"
    return credential, api_key_record(credential, name, roles, tenant=tenant, now=now)


def api_key_record(
    credential: str,
    name: str,
    roles: Sequence[str],
    *,
    tenant: str | None = None,
    now: int | None = None,
) -> ApiKeyRecord:
    """The record that stores ``credential`` (e.g. one an operator chose for bootstrap)."""
    unknown = set(roles) - ROLES
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}")
    match = _API_KEY.fullmatch(credential)
    if match is None:
        raise ValueError("an API key looks like cpk_<16 alphanumerics>_<43 base64url>")
    return ApiKeyRecord(
        key_id=match.group(1),
        secret_hash=_hash(match.group(2)),
        name=name,
        roles=sorted(roles),
        tenant=tenant,
        created_at=int(time.time()) if now is None else now,
    )


class ApiKeyAuthenticator:
    """``X-API-Key: cpk_<id>_<secret>`` checked against the stored hash.

    Records are cached for ``cache_seconds`` (bounded), so a busy caller costs one database
    read per interval instead of one per request; a change to a key takes effect within it.
    """

    def __init__(self, store: ApiKeyStore, *, cache_seconds: float = 5.0, cache_size: int = 1024):
        self._store = store
        self._ttl = cache_seconds
        self._size = cache_size
        self._cache: dict[str, tuple[float, ApiKeyRecord | None]] = {}

    async def _record(self, key_id: str) -> ApiKeyRecord | None:
        now = time.monotonic()
        hit = self._cache.get(key_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        record = await self._store.get_api_key(key_id)
        if record is not None:  # unknown ids are not cached: a flood of them cannot evict
            if len(self._cache) >= self._size:
                del self._cache[next(iter(self._cache))]
            self._cache[key_id] = (now + self._ttl, record)
        return record

    async def authenticate(self, caller: CallerContext) -> Principal | None:
        given = caller.headers.get(API_KEY_HEADER)
        if given is None:
            return None
        match = _API_KEY.fullmatch(given)
        if match is None:
            raise AuthenticationFailed(codes.AUTH_INVALID, "malformed API key")
        record = await self._record(match.group(1))
        # Compare even when the record is missing, so timing does not reveal which ids exist.
        expected = record.secret_hash if record is not None else b"\0" * 32
        if not hmac.compare_digest(expected, _hash(match.group(2))) or record is None:
            raise AuthenticationFailed(codes.AUTH_INVALID, "unknown API key")
        if record.disabled:
            raise AuthenticationFailed(codes.AUTH_INVALID, "API key disabled")
        return Principal(
            id=f"apikey:{record.name}",
            roles=frozenset(record.roles),
            tenant=record.tenant,
            method="api-key",
        )


async def authenticate(authenticators: Sequence[Authenticator], caller: CallerContext) -> Principal:
    """Run the schemes in order; the first that recognises the request decides."""
    for authenticator in authenticators:
        principal = await authenticator.authenticate(caller)
        if principal is not None:
            return principal
    raise AuthenticationFailed(codes.AUTH_MISSING, "no credentials (send X-API-Key)")


def require_role(principal: Principal, *roles: str) -> None:
    """Raise ``Forbidden`` unless the caller has one of ``roles`` (admin has every role)."""
    if "admin" in principal.roles or principal.roles & set(roles):
        return
    raise Forbidden(codes.AUTH_FORBIDDEN, f"needs one of the roles {sorted(roles)}")
