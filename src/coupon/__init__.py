"""Coupon Authority: short-lived, key-bound capability tokens.

The small public API::

    from coupon import Binding, KeySet, Request, SigningKey, Verifier, attenuate, mint

    issuer = SigningKey.generate()
    holder = SigningKey.generate()
    token = mint(issuer, issuer="https://authority.example", subject="svc-a",
                 audience="orders-api", tenant="acme", resource="orders/**",
                 actions=["read"], purpose="fulfilment",
                 binding=Binding(jkt=holder.public.thumbprint))
    verifier = Verifier(KeySet([issuer.public]))

Everything raised on untrusted input is a :class:`coupon.errors.CouponError` with a stable code.
"""

from __future__ import annotations

from typing import Any

from coupon.errors import CouponError
from coupon.token import (
    Binding,
    Claims,
    CouponBuilder,
    Decision,
    KeySet,
    Request,
    SigningKey,
    Verified,
    Verifier,
    VerifyingKey,
    attenuate,
    create_dpop_proof,
    mint,
    verify_dpop_proof,
)

__all__ = [
    "Binding",
    "Claims",
    "CouponBuilder",
    "CouponError",
    "Decision",
    "KeySet",
    "Request",
    "SigningKey",
    "Verified",
    "Verifier",
    "VerifyingKey",
    "__version__",
    "attenuate",
    "create_dpop_proof",
    "mint",
    "verify",
    "verify_dpop_proof",
]

__version__ = "0.1.0"


def verify(
    token: str, keys: KeySet, request: Request, *, now: float | None = None, **options: Any
) -> Verified:
    """Verify ``token`` once with a throw-away :class:`Verifier` (no cache, no shared stores).

    Services should keep one :class:`Verifier` instead: it caches verified signatures and
    remembers DPoP proofs it has seen. ``options`` are :class:`Verifier`'s keyword arguments.

    Raises:
        CouponError: with the stable code of the first failing step.
    """
    return Verifier(keys, **options).verify(token, request, now=now)
