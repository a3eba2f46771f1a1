"""Shared helpers for the policy tests: keys, bundles and inputs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from coupon.policy import (
    Envelope,
    PolicyCaller,
    PolicyInput,
    PolicyParent,
    PolicyRequest,
    VerifiedBundle,
    default_policy_source,
    key_id,
    make_bundle,
    sign_bundle,
    verify_envelope,
)
from coupon.policy._model import BindingKind

#: A fixed Ed25519 key (RFC 8032 test 1 secret) so failures are reproducible.
SIGNING_KEY = Ed25519PrivateKey.from_private_bytes(
    bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
)
TRUSTED = {key_id(SIGNING_KEY.public_key()): SIGNING_KEY.public_key()}


def signed(
    version: str,
    modules: Mapping[str, str] | None = None,
    data: Mapping[str, Any] | None = None,
) -> VerifiedBundle:
    """Make, sign and verify a bundle (the default policy unless ``modules`` is given)."""
    raw = make_bundle(
        version,
        modules if modules is not None else {"policy.rego": default_policy_source()},
        data if data is not None else {},
        created_at=1_700_000_000,
    )
    return verify_envelope(sign_bundle(raw, SIGNING_KEY).to_json(), TRUSTED)


def sign_raw(raw: bytes, key: Ed25519PrivateKey = SIGNING_KEY) -> Envelope:
    """Sign arbitrary bytes as a bundle, bypassing ``make_bundle``'s checks."""
    from coupon.policy import SIGNATURE_CONTEXT

    return Envelope(raw, key.sign(SIGNATURE_CONTEXT + raw), key_id(key.public_key()))


def make_input(
    *,
    caller: str = "svc-orders",
    roles: tuple[str, ...] = (),
    caller_tenant: str | None = None,
    subject: str = "alice",
    audience: tuple[str, ...] = ("orders-api",),
    tenant: str = "acme",
    resource: str = "orders/42",
    actions: tuple[str, ...] = ("read",),
    purpose: str = "billing",
    ttl: int = 300,
    binding: BindingKind = "jkt",
    parent_depth: int | None = None,
    now: int = 1_700_000_000,
) -> PolicyInput:
    """A policy input with sensible defaults; override what a test is about."""
    parent = None
    if parent_depth is not None:
        parent = PolicyParent(
            jti="parent-jti",
            resource="orders/**",
            actions=("read", "write"),
            purpose="billing",
            depth=parent_depth,
        )
    return PolicyInput(
        caller=PolicyCaller(id=caller, roles=roles, tenant=caller_tenant),
        request=PolicyRequest(
            subject=subject,
            audience=audience,
            tenant=tenant,
            resource=resource,
            actions=actions,
            purpose=purpose,
            ttl=ttl,
            binding=binding,
            parent=parent,
        ),
        now=now,
    )
