"""Settings of TLS serving and mTLS callers: identities, their roles, and trusted proxies.

Kept beside :mod:`coupon.settings`, which embeds them (``mtls_identities``,
``tls_trusted_proxies``). Values are checked when the settings load, so a typo in a role, an
identity or a CIDR stops ``coupon up`` with a message instead of silently granting nothing
(or too much). See ``docs/mtls.md``.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

__all__ = [
    "IDENTITY_KINDS",
    "Identity",
    "MtlsIdentity",
    "ProxyNetwork",
    "Role",
    "normalise_identity",
]

#: The roles a caller can hold (``coupon.authority._auth.ROLES``; a test keeps them equal).
Role = Literal["admin", "issuer", "auditor", "verifier", "emitter"]

#: Where an identity comes from, in the order the Authority looks: SAN URI, SAN DNS, subject CN.
IDENTITY_KINDS: Final = ("uri", "dns", "cn")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
_TENANT: Final = re.compile(r"^[^\x00-\x1f\x7f]{1,256}$")


def normalise_identity(identity: str) -> str:
    """An identity as the Authority compares it: ``dns:`` names in lower case.

    Raises:
        ValueError: not ``uri:<URI>``, ``dns:<name>`` or ``cn:<common name>``.
    """
    kind, sep, value = identity.partition(":")
    if (
        kind not in IDENTITY_KINDS
        or not sep
        or not 0 < len(value) <= 1024
        or value != value.strip()
        or _CONTROL.search(value)
    ):
        raise ValueError(
            "an mTLS identity is uri:<URI>, dns:<name> or cn:<name> (1 to 1024 characters, no"
            f" control characters or surrounding spaces), not {identity[:80]!r}"
        )
    return f"dns:{value.lower()}" if kind == "dns" else identity


def _identity(value: str) -> str:
    normalise_identity(value)
    return value


#: A certificate identity as written in ``mtls_identities`` (checked, kept as written).
Identity = Annotated[str, AfterValidator(_identity)]


def _tenant(value: str | None) -> str | None:
    if value is not None and _TENANT.fullmatch(value) is None:
        raise ValueError("a tenant is 1 to 256 characters without control characters")
    return value


class MtlsIdentity(BaseModel):
    """What one certificate identity may do: its roles and, optionally, its one tenant."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    roles: list[Role] = Field(min_length=1, max_length=5, description="Roles of this caller.")
    tenant: Annotated[str | None, AfterValidator(_tenant)] = Field(
        None, description="The only tenant this caller may act for; unset: every tenant."
    )


def _network(value: str) -> str:
    try:
        network = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"not a CIDR without host bits: {value!r} ({exc})") from None
    return str(network)


#: One trusted proxy network in CIDR notation (``10.0.0.0/8``, ``127.0.0.1/32``, ``::1/128``).
ProxyNetwork = Annotated[str, AfterValidator(_network)]
