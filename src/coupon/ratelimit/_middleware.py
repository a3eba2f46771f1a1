"""``RateLimitMiddleware``: soft and hard tenant limits on every request, as pure ASGI.

The tenant comes from ``tenant_of(scope)`` — usually the verified coupon's ``tid``, so the
middleware sits *inside* :class:`coupon.middleware.CouponMiddleware`. A request with no tenant
passes through unlimited here (limit anonymous traffic at the edge, by address).

Every limited response carries ``RateLimit-Policy`` and ``RateLimit``; a request over the
soft limit is admitted with ``X-RateLimit-Soft: exceeded``; one over the hard limit is
refused ``429`` (``CPN-RATE-003``) with ``Retry-After``, before the app runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from coupon._asgi import ASGIApp, Message, Receive, Scope, Send, problem, respond

from ._headers import ratelimit_headers
from ._limiter import Decision, RateLimiter, refusal

__all__ = ["SOFT_HEADER", "RateLimitMiddleware", "decision_headers"]

#: Added to an admitted response that was over the soft limit (value ``exceeded``).
SOFT_HEADER: Final = "X-RateLimit-Soft"


def decision_headers(decision: Decision, *, policy: str = "tenant") -> list[tuple[bytes, bytes]]:
    """The response header fields of ``decision``, raw, lower-case names."""
    fields = ratelimit_headers(decision, policy=policy)
    if decision.allowed and decision.soft_exceeded:
        fields[SOFT_HEADER] = "exceeded"
    return [(k.lower().encode("ascii"), v.encode("ascii")) for k, v in fields.items()]


class RateLimitMiddleware:
    """Check each request of a tenant against its soft and hard limits.

    Args:
        app: the ASGI app to protect.
        limiter: the :class:`RateLimiter` (Redis-backed or in-process).
        tenant_of: the tenant of a request, or ``None`` to leave it unlimited.
        key_of: the route key within the tenant's limits (``"default"`` when not given).
        policy: the policy name in the ``RateLimit`` header fields.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        limiter: RateLimiter,
        tenant_of: Callable[[Scope], str | None],
        key_of: Callable[[Scope], str] | None = None,
        policy: str = "tenant",
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.tenant_of = tenant_of
        self.key_of = key_of
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tenant = self.tenant_of(scope)
        if tenant is None:
            await self.app(scope, receive, send)
            return
        key = self.key_of(scope) if self.key_of is not None else "default"
        decision = await self.limiter.check(tenant, key)
        fields = decision_headers(decision, policy=self.policy)
        if not decision.allowed:
            await respond(send, *problem(scope, refusal(decision), headers=fields))
            return

        async def send_with_fields(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *fields]
            await send(message)

        await self.app(scope, receive, send_with_fields)
