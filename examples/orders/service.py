"""An example service: orders and refunds, protected by coupons.

Run it one of two ways:

* **protected by the middleware** (``--authority URL``): the service checks every coupon
  itself with :class:`coupon.middleware.CouponMiddleware` over a
  :class:`coupon.sdk.LocalVerifier` (keys and revocations from the Authority), limits each
  tenant with :class:`coupon.ratelimit.RateLimitMiddleware`, and runs each
  ``Idempotency-Key`` once with :class:`coupon.idempotency.IdempotencyMiddleware`;
* **behind the edge** (no ``--authority``): ``coupon gateway`` or nginx with
  ``auth_request`` checked the coupon and limits; the service reads the verified tenant and
  subject from the ``X-Coupon-*`` fields the edge sets (and strips from clients), and still
  runs each ``Idempotency-Key`` once.

    python examples/orders/service.py --port 9000 --authority http://127.0.0.1:8700

The Authority API key (role verifier) is read from ``COUPON_SERVICE_API_KEY``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from coupon.idempotency import IdempotencyGuard, IdempotencyMiddleware, MemoryIdempotencyStore
from coupon.middleware import CouponMiddleware, Requirement
from coupon.ratelimit import RateLimitConfig, RateLimiter, RateLimitMiddleware, TenantLimits
from coupon.sdk import LocalVerifier
from coupon.token import Verified

AUDIENCE = "orders"
ROUTES = [
    ("GET", "/orders/{order_id}", Requirement(resource="orders/{order_id}", action="read")),
    (
        "POST",
        "/orders/{order_id}/refunds",
        Requirement(resource="orders/{order_id}", action="refund", purpose="billing"),
    ),
]
#: Small on purpose, so the example can show a tenant being throttled.
LIMITS = RateLimitConfig(TenantLimits(soft_per_s=2, hard_per_s=5, burst=5, name="orders"))
_refund_ids = itertools.count(1)


def _caller(request: Request) -> dict[str, str]:
    verified = request.scope.get("state", {}).get("coupon")
    if isinstance(verified, Verified):
        return {"subject": verified.claims.sub, "tenant": verified.claims.tid}
    return {
        "subject": request.headers.get("x-coupon-subject", ""),
        "tenant": request.headers.get("x-coupon-tenant", ""),
    }


async def read_order(request: Request) -> JSONResponse:
    order = request.path_params["order_id"]
    return JSONResponse({"order": order, "status": "shipped", "caller": _caller(request)})


async def refund(request: Request) -> JSONResponse:
    body: Any = await request.json()
    refund_id = next(_refund_ids)  # a new id per execution: a replay shows the first one
    return JSONResponse(
        {
            "refund": refund_id,
            "order": request.path_params["order_id"],
            "amount": body.get("amount"),
            "caller": _caller(request),
        },
        status_code=201,
    )


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


def _tenant(scope: Any) -> str | None:
    verified = scope.get("state", {}).get("coupon")
    if isinstance(verified, Verified):
        return verified.claims.tid
    for name, value in scope.get("headers", ()):
        if name == b"x-coupon-tenant":
            return str(value.decode("latin-1"))
    return None


def create_app(
    authority: str | None, *, api_key: str = "", public_url: str | None = None
) -> Starlette:
    """The app; checks coupons itself when ``authority`` is given."""
    guard = IdempotencyGuard(MemoryIdempotencyStore())
    middleware = []
    verifier: LocalVerifier | None = None
    if authority is not None:
        verifier = LocalVerifier(authority, api_key=api_key)
        middleware.append(
            Middleware(
                CouponMiddleware,
                verifier=verifier,
                audience=AUDIENCE,
                routes=ROUTES,
                public_url=public_url,
            )
        )
        middleware.append(
            Middleware(RateLimitMiddleware, limiter=RateLimiter(LIMITS), tenant_of=_tenant)
        )
    middleware.append(Middleware(IdempotencyMiddleware, guard=guard, tenant_of=_tenant))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if verifier is not None:
            await verifier.start()
        yield
        if verifier is not None:
            await verifier.stop()

    return Starlette(
        routes=[
            Route("/orders/{order_id}", read_order, methods=["GET"]),
            Route("/orders/{order_id}/refunds", refund, methods=["POST"]),
            Route("/health", health),
        ],
        middleware=middleware,
        lifespan=lifespan,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--authority", help="check coupons here, against this Authority")
    parser.add_argument("--public-url", help="the origin clients call (DPoP htu)")
    args = parser.parse_args()
    import uvicorn

    api_key = os.environ.get("COUPON_SERVICE_API_KEY", "")
    if args.authority and not api_key:
        parser.error("set COUPON_SERVICE_API_KEY to an Authority API key (role verifier)")
    app = create_app(args.authority, api_key=api_key, public_url=args.public_url)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
