"""A Python SDK for the Authority: DPoP for httpx, an async API client, a refreshing coupon.

* :class:`DPoPAuth` — an ``httpx.Auth`` presenting a coupon with a DPoP proof, answering one
  ``use_dpop_nonce`` challenge per request (sync and async clients).
* :class:`AuthorityClient` — issue, attenuate, verify, revoke, introspect, each through a
  :class:`coupon.resilience.Pipeline`; errors are typed :class:`~coupon.errors.CouponError`.
* :class:`CouponSource` — the current coupon, re-issued before it expires (single flight).
* :func:`propagate_correlation` — an httpx hook carrying ``traceparent`` and ``X-Request-Id``
  of the request being served onto outgoing calls (the :class:`AuthorityClient` uses it).
* :class:`PurposeBound` — a sub-coupon narrowed offline to one purpose (and resource,
  actions) for the calls that need only that, as :class:`DPoPAuth`'s coupon.
* :class:`LocalVerifier` — verify in-process over :class:`RemoteKeySet` (the Authority's JWKS)
  and :class:`RevocationSync` (its revocation stream, with the pull feed as fallback), failing
  closed when revocations go stale.

See ``docs/sdk.md``.
"""

from ._auth import CouponSupplier, DPoPAuth
from ._client import AuthorityClient, CouponSource, Issued
from ._correlation import correlation_headers, propagate_correlation, propagate_correlation_sync
from ._local import LocalVerifier, RemoteKeySet
from ._purpose import PurposeBound
from ._revocations import RevocationSync, SyncedRevocations

__all__ = [
    "AuthorityClient",
    "CouponSource",
    "CouponSupplier",
    "DPoPAuth",
    "Issued",
    "LocalVerifier",
    "PurposeBound",
    "RemoteKeySet",
    "RevocationSync",
    "SyncedRevocations",
    "correlation_headers",
    "propagate_correlation",
    "propagate_correlation_sync",
]
