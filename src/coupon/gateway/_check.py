"""``GET /_coupon/check``: the coupon and rate-limit decision for nginx's ``auth_request``.

nginx sends a subrequest carrying the client's ``Authorization`` and ``DPoP`` fields plus
``X-Original-Method`` and ``X-Original-URI`` (``$request_uri``, raw, with its query). The
check runs the very same layers as the gateway — path safety, the route, the coupon,
the tenant's limits — on a scope rebuilt from those fields, and answers:

* ``204`` — allowed, with ``X-Coupon-Subject``, ``X-Coupon-Tenant``, ``X-Coupon-Id`` and the
  ``RateLimit`` fields for nginx to pass on (``auth_request_set``);
* ``401`` — no or a bad coupon, with the ``WWW-Authenticate: DPoP`` challenge;
* ``403`` for everything else, because ``auth_request`` turns any status but 2xx, 401 and
  403 into a 500. ``X-Coupon-Status`` then holds the real status (403, 429, 503, 400,
  404...) and the shipped nginx configuration answers with it, with ``Retry-After``.

The endpoint trusts ``X-Original-*`` only because nginx is the only client that can reach
it: bind the gateway to loopback or a private network when it serves nginx.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any, Final

from coupon import codes
from coupon._asgi import ASGIApp, Message, Receive, Scope, Send, refuse, respond
from coupon.errors import CouponError, GatewayError
from coupon.middleware import AsyncVerifier, CouponMiddleware, DecisionHook, Requirement
from coupon.ratelimit import RateLimiter, RateLimitMiddleware

from ._config import LOOPBACK, IPNetwork
from ._routes import (
    GatewayTable,
    check_body_rules,
    check_path,
    identity_fields,
    route_of,
    tenant_of,
)

__all__ = ["STATUS_HEADER", "CheckEndpoint"]

#: Carries the real status of a refusal that ``auth_request`` only sees as 403.
STATUS_HEADER: Final = b"x-coupon-status"
# The client's body fields, which nginx cannot send as themselves on a bodiless subrequest.
_BODY_FIELDS: Final = {
    b"x-original-content-length": b"content-length",
    b"x-original-transfer-encoding": b"transfer-encoding",
}
_SUBREQUEST_OWN: Final = frozenset({b"content-length", b"transfer-encoding"})


async def _allow(scope: Scope, receive: Receive, send: Send) -> None:
    await respond(send, 204, identity_fields(scope), b"")


def _for_nginx(send: Send) -> Send:
    """Keep 2xx and 401; turn every other status into 403 plus ``X-Coupon-Status``."""

    async def mapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            status = int(message["status"])
            if not (200 <= status < 300 or status in (401, 403)):
                message["status"] = 403
                message["headers"] = [*message.get("headers", ()), (STATUS_HEADER, b"%d" % status)]
        await send(message)

    return mapped


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


class CheckEndpoint:
    """The ``auth_request`` target: one decision per subrequest, no forwarding.

    Args:
        table: the gateway's routes.
        verifier: the same verifier the gateway uses.
        audience: the default audience.
        protected: ``(method, path, Requirement)`` of the protected routes.
        limiter: the same tenant limiter the gateway uses.
        public_url: the public origin (``htu`` base) of the proxied service.
        on_decision: the coupon decision hook.
        allowed: the networks nginx asks from; anyone else is told there is no such
            endpoint (the check trusts ``X-Original-*``, so it must not be a public oracle).
    """

    def __init__(
        self,
        *,
        table: GatewayTable,
        verifier: AsyncVerifier,
        audience: str,
        protected: Iterable[tuple[str, str, Requirement]],
        limiter: RateLimiter,
        public_url: str | None,
        on_decision: DecisionHook | None = None,
        allowed: Iterable[IPNetwork] = LOOPBACK,
    ) -> None:
        self.table = table
        self.allowed = tuple(allowed)
        limited: ASGIApp = RateLimitMiddleware(
            _allow, limiter=limiter, tenant_of=tenant_of, key_of=lambda s: route_of(s).rate_key
        )
        self._layers = CouponMiddleware(
            limited,
            verifier=verifier,
            audience=audience,
            routes=protected,
            on_decision=on_decision,
            public_url=public_url,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._trusted(scope):
            await refuse(scope, send, GatewayError(codes.GATEWAY_NO_ROUTE, "no such endpoint"))
            return
        reply = _for_nginx(send)
        try:
            inner = self._original(scope)
        except CouponError as exc:
            await refuse(scope, reply, exc)
            return
        await self._layers(inner, _no_body, reply)

    def _trusted(self, scope: Scope) -> bool:
        client = scope.get("client")
        if not client:
            return False
        try:
            address = ipaddress.ip_address(str(client[0]))
        except ValueError:
            return False
        return any(address in network for network in self.allowed)

    def _original(self, scope: Scope) -> Scope:
        """The client's request, as nginx described it."""
        method = uri = ""
        headers: list[tuple[bytes, bytes]] = []
        for name, value in scope.get("headers", ()):
            lower = name.lower()
            if lower == b"x-original-method":
                method = value.decode("latin-1").strip().upper()
            elif lower == b"x-original-uri":
                uri = value.decode("latin-1").strip()
            elif lower in _BODY_FIELDS:
                if value.strip():  # nginx sends an empty value when the client sent none
                    headers.append((_BODY_FIELDS[lower], value.strip()))
            elif lower not in _SUBREQUEST_OWN:
                headers.append((lower, value))
        raw_path, _, query = uri.partition("?")
        path = check_path(raw_path)  # also refuses a missing X-Original-URI
        route = self.table.match(method or "GET", path)
        state: dict[str, Any] = dict(scope.get("state") or {})
        state["gateway_route"] = route
        original: Scope = {
            "type": "http",
            "asgi": scope.get("asgi", {"version": "3.0"}),
            "http_version": scope.get("http_version", "1.1"),
            "method": method or "GET",
            "scheme": _forwarded_proto(headers) or scope.get("scheme", "http"),
            "path": path,
            "raw_path": raw_path.encode("latin-1"),
            "query_string": query.encode("latin-1"),
            "root_path": "",
            "headers": headers,
            "client": scope.get("client"),
            "server": scope.get("server"),
            "state": state,
        }
        check_body_rules(original, route)
        return original


def _forwarded_proto(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"x-forwarded-proto" and value in (b"http", b"https"):
            return value.decode("ascii")
    return None
