"""Settings of OpenID Connect callers: the providers whose tokens authenticate to the Authority.

Kept beside :mod:`coupon.settings`, which embeds them. The first provider is given by the flat
``COUPON_OIDC_*`` variables (``COUPON_OIDC_ISSUER``, ``COUPON_OIDC_AUDIENCE``, ...); more are
given as JSON objects with the same keys in ``COUPON_OIDC_PROVIDERS`` (or ``[[oidc_providers]]``
in the TOML config file). See ``docs/oidc.md``.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "DEFAULT_OIDC_ALGORITHMS",
    "OIDC_ROLES",
    "OidcAlgorithm",
    "OidcProvider",
    "OidcRole",
    "check_https_url",
    "provider_list",
]

#: The algorithms a provider may be allowed to sign with: asymmetric only. ``none`` and HMAC
#: are not in the type, so no configuration can allow them.
OidcAlgorithm = Literal[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"
]
DEFAULT_OIDC_ALGORITHMS: Final[tuple[OidcAlgorithm, ...]] = ("RS256", "ES256", "EdDSA")
#: The Authority's roles (the same set as ``coupon.authority._auth.ROLES``; a test keeps them
#: equal, this module may not import the Authority).
OidcRole = Literal["admin", "issuer", "auditor", "verifier", "emitter"]
OIDC_ROLES: Final = frozenset({"admin", "issuer", "auditor", "verifier", "emitter"})

# A claim name or a dotted path to one; no spaces or control characters.
_CLAIM_PATH: Final = re.compile(r"^[^\s\x00-\x1f\x7f]{1,256}$")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_https_url(url: str, what: str) -> str:
    """Return ``url`` if it is https (or http on a loopback host), without query or fragment.

    Raises:
        ValueError: naming ``what`` and the rule broken.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme not in ("https", "http") or not host:
        raise ValueError(f"{what} must be an https URL, got {url!r}")
    if parts.scheme == "http" and not _is_loopback(host):
        raise ValueError(f"{what} must use https (http only on a loopback host), got {url!r}")
    if parts.query or parts.fragment or parts.username is not None or "#" in url:
        raise ValueError(f"{what} has no query, fragment or user info, got {url!r}")
    return url


class OidcProvider(BaseModel):
    """One OpenID Connect provider whose ID or access tokens authenticate callers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: str = Field(
        min_length=1, max_length=512, description="The provider's issuer identifier (exact)."
    )
    audience: str = Field(
        min_length=1, max_length=512, description="The aud tokens must contain (our client id)."
    )
    authorized_parties: tuple[str, ...] = Field(
        (), max_length=32, description="Allowed azp values; empty: only the audience."
    )
    algorithms: tuple[OidcAlgorithm, ...] = Field(
        DEFAULT_OIDC_ALGORITHMS, min_length=1, description="Allowed signing algorithms."
    )
    roles_claim: str = Field("roles", description="Claim (or dotted path) with roles or groups.")
    role_map: dict[str, tuple[OidcRole, ...]] = Field(
        default_factory=dict, description="Claim value -> the Authority's roles it grants."
    )
    tenant_claim: str = Field("", description="Claim (or dotted path) naming the tenant.")

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, value: str) -> str:
        return check_https_url(value, "the OIDC issuer")

    @field_validator("roles_claim", "tenant_claim")
    @classmethod
    def _claim_path(cls, value: str) -> str:
        if value and not _CLAIM_PATH.fullmatch(value):
            raise ValueError(f"a claim path has no spaces or control characters: {value!r}")
        return value

    @field_validator("role_map")
    @classmethod
    def _role_map(cls, value: dict[str, tuple[OidcRole, ...]]) -> dict[str, tuple[OidcRole, ...]]:
        if len(value) > 256:
            raise ValueError("a role map has at most 256 entries")
        for claim_value, roles in value.items():
            if not claim_value or not roles:
                raise ValueError(f"role map entry {claim_value!r} needs a value and a role")
        return value


def provider_list(
    *,
    issuer: str,
    audience: str,
    authorized_parties: tuple[str, ...],
    algorithms: tuple[OidcAlgorithm, ...],
    roles_claim: str,
    role_map: dict[str, tuple[OidcRole, ...]],
    tenant_claim: str,
    more: list[OidcProvider],
) -> tuple[OidcProvider, ...]:
    """Every configured provider: the one of the flat ``COUPON_OIDC_*`` settings, then ``more``.

    Raises:
        ValueError: the flat settings are incomplete or invalid, or two providers share an
            issuer.
    """
    providers = list(more)
    if issuer:
        if not audience:
            raise ValueError("COUPON_OIDC_AUDIENCE is required with COUPON_OIDC_ISSUER")
        first = OidcProvider(
            issuer=issuer,
            audience=audience,
            authorized_parties=authorized_parties,
            algorithms=algorithms,
            roles_claim=roles_claim,
            role_map=role_map,
            tenant_claim=tenant_claim,
        )
        providers.insert(0, first)
    elif audience:
        raise ValueError("COUPON_OIDC_AUDIENCE is set but COUPON_OIDC_ISSUER is not")
    issuers = [p.issuer for p in providers]
    if len(set(issuers)) != len(issuers):
        raise ValueError(f"two OIDC providers share an issuer: {issuers}")
    return tuple(providers)
