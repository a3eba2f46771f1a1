"""Inbound coupon checks for Starlette and FastAPI services.

:class:`CouponMiddleware` is a pure ASGI middleware: it verifies the DPoP-bound coupon of
every request to a route listed in its table, locally with a :class:`~coupon.token.Verifier`,
and puts the :class:`~coupon.token.Verified` principal in ``request.state.coupon``. Clients
that are refused learn only the protocol error and a request id; the precise reason goes to
the log and to the ``on_decision`` audit hook. See ``docs/middleware.md``.
"""

from ._asgi import (
    ALGS,
    MAX_HEADER,
    AsyncVerifier,
    CouponDecision,
    CouponMiddleware,
    DecisionHook,
    NonceIssuer,
)
from ._requirements import Match, Requirement, RouteTable

__all__ = [
    "ALGS",
    "MAX_HEADER",
    "AsyncVerifier",
    "CouponDecision",
    "CouponMiddleware",
    "DecisionHook",
    "Match",
    "NonceIssuer",
    "Requirement",
    "RouteTable",
]
