"""The coupon token library: mint, attenuate and verify coupons and DPoP proofs.

Pure: no I/O, no clock reads in the checks (time is an argument), only the standard library
and ``cryptography``. The raw JOSE pieces live in :mod:`coupon.token.hazmat`.
"""

from ._chain import COUPON_TYP, SEPARATOR, Link, check_links, link_hash, parse_chain
from ._claims import FORMAT_VERSION, Binding, Claims, Parent
from ._dpop import (
    DpopProof,
    NonceChecker,
    ath_for,
    create_dpop_proof,
    normalize_htu,
    verify_dpop_proof,
)
from ._keys import KeySet, Signer, SigningKey, VerifyingKey
from ._mint import DEFAULT_MAX_DEPTH, CouponBuilder, attenuate, mint, new_jti
from ._mtls import check_certificate_binding, x5t_s256, x5t_s256_from_pem
from ._narrowing import widening
from ._scope import ResourcePattern, parse_resource, purpose_covers
from ._stores import (
    MemoryReplayStore,
    MemoryRevocations,
    ReplayStore,
    RevocationChecker,
    RevocationFacts,
)
from ._verify import (
    DEFAULT_LEEWAY,
    DEFAULT_MAX_SIZE,
    DEFAULT_MAX_TTL,
    AsyncReplayStore,
    Decision,
    Request,
    Verified,
    Verifier,
)

__all__ = [
    "COUPON_TYP",
    "DEFAULT_LEEWAY",
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_SIZE",
    "DEFAULT_MAX_TTL",
    "FORMAT_VERSION",
    "SEPARATOR",
    "AsyncReplayStore",
    "Binding",
    "Claims",
    "CouponBuilder",
    "Decision",
    "DpopProof",
    "KeySet",
    "Link",
    "MemoryReplayStore",
    "MemoryRevocations",
    "NonceChecker",
    "Parent",
    "ReplayStore",
    "Request",
    "ResourcePattern",
    "RevocationChecker",
    "RevocationFacts",
    "Signer",
    "SigningKey",
    "Verified",
    "Verifier",
    "VerifyingKey",
    "ath_for",
    "attenuate",
    "check_certificate_binding",
    "check_links",
    "create_dpop_proof",
    "link_hash",
    "mint",
    "new_jti",
    "normalize_htu",
    "parse_chain",
    "parse_resource",
    "purpose_covers",
    "verify_dpop_proof",
    "widening",
    "x5t_s256",
    "x5t_s256_from_pem",
]
