"""Finding a request's route, and refusing paths that could mean two different things.

The gateway forwards the raw path it received, but the route (and so the coupon check) is
chosen on the decoded path. Any path whose raw and decoded forms could name different
resources — an encoded ``/`` or ``\\``, a NUL, a dot segment, an empty segment — is refused
with ``CPN-GW-007`` before any route is looked at: an upstream that decodes differently must
never see a path the gateway checked as something else.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final
from urllib.parse import unquote

from starlette.routing import compile_path

from coupon import codes
from coupon._asgi import Scope
from coupon.errors import GatewayError, InvalidRequest
from coupon.token import Verified

from ._config import GatewayRoute

__all__ = [
    "GatewayTable",
    "check_body_rules",
    "check_headers",
    "check_path",
    "identity_fields",
    "route_of",
    "tenant_of",
]

_BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})
_TOKEN: Final = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CONTROL: Final = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # horizontal tab is allowed
# %2F, %5C and %00 in any case; these decode into separators or terminators.
_AMBIGUOUS: Final = re.compile(r"%(?:2[fF]|5[cC]|00)")


def check_path(raw_path: str) -> str:
    """The decoded form of ``raw_path``, if it can only mean one thing.

    Raises:
        GatewayError: ``CPN-GW-007`` for an ambiguous or malformed path.
    """
    if not raw_path.startswith("/") or _AMBIGUOUS.search(raw_path):
        raise GatewayError(codes.GATEWAY_PATH, "ambiguous request path")
    path = unquote(raw_path, errors="strict")
    if "\\" in path or any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        raise GatewayError(codes.GATEWAY_PATH, "control characters or '\\' in the path")
    segments = path.split("/")[1:]
    inner = segments[:-1]  # the last may be empty: a trailing slash
    if any(s in (".", "..") for s in segments) or any(s == "" for s in inner):
        raise GatewayError(codes.GATEWAY_PATH, "dot or empty segments in the path")
    return path


class GatewayTable:
    """Every route of the gateway, matched in file order on the decoded path."""

    def __init__(self, routes: Iterable[GatewayRoute]) -> None:
        self._routes = tuple((route, compile_path(route.path)[0]) for route in routes)

    def match(self, method: str, path: str) -> GatewayRoute:
        """The first route for ``method`` and the decoded ``path``.

        Raises:
            GatewayError: ``CPN-GW-001`` (404) when no route has the path,
                ``CPN-GW-002`` (405) when routes have it but not the method.
        """
        path_known = False
        for route, regex in self._routes:
            if regex.match(path) is None:
                continue
            if method in route.methods or (method == "HEAD" and "GET" in route.methods):
                return route
            path_known = True
        if path_known:
            raise GatewayError(codes.GATEWAY_METHOD, f"{method} is not routed for this path")
        raise GatewayError(codes.GATEWAY_NO_ROUTE, "no route for this path")


def route_of(scope: Scope) -> GatewayRoute:
    """The route :class:`~coupon.gateway.Edge` matched for this request."""
    route: GatewayRoute = scope["state"]["gateway_route"]
    return route


def tenant_of(scope: Scope) -> str | None:
    """The verified coupon's tenant, if the request carries one."""
    verified = scope.get("state", {}).get("coupon")
    return verified.claims.tid if isinstance(verified, Verified) else None


def identity_fields(scope: Scope) -> list[tuple[bytes, bytes]]:
    """``X-Coupon-Subject``, ``-Tenant`` and ``-Id`` of the verified coupon (none without)."""
    verified = scope.get("state", {}).get("coupon")
    if not isinstance(verified, Verified):
        return []
    claims = verified.claims
    return [
        (b"x-coupon-subject", claims.sub.encode("latin-1")),
        (b"x-coupon-tenant", claims.tid.encode("latin-1")),
        (b"x-coupon-id", claims.jti.encode("latin-1")),
    ]


def check_headers(scope: Scope) -> None:
    """Header fields the gateway can pass on as they are (RFC 9110 §5.5).

    Raises:
        GatewayError: ``CPN-GW-008`` for a control character (NUL, CR, LF...) in a value,
            or a name that is not a token.
    """
    for name, value in scope.get("headers", ()):
        if not name or not _TOKEN.fullmatch(name) or _CONTROL.search(value):
            raise GatewayError(codes.GATEWAY_HEADER, "a header field cannot be passed on")


def check_body_rules(scope: Scope, route: GatewayRoute) -> None:
    """The route's ``max_body`` (by ``Content-Length``) and ``content_types``.

    Raises:
        GatewayError: ``CPN-GW-003`` (413) for a declared body over the limit,
            ``CPN-GW-004`` (415) for a body of a media type the route does not take.
        InvalidRequest: ``CPN-REQ-009`` for a malformed or repeated ``Content-Length``.
    """
    length: int | None = None
    media = ""
    chunked = False
    for name, value in scope.get("headers", ()):
        lower = name.lower()
        if lower == b"content-length":
            text = value.decode("latin-1").strip()
            if not text.isascii() or not text.isdigit() or length is not None:
                raise InvalidRequest(codes.REQUEST_BODY, "a malformed or repeated Content-Length")
            length = int(text)
        elif lower == b"content-type":
            media = value.decode("latin-1").split(";", 1)[0].strip().lower()
        elif lower == b"transfer-encoding":
            chunked = True
    if length is not None and length > route.max_body:
        raise GatewayError(codes.GATEWAY_BODY_SIZE, f"the body passes {route.max_body} bytes")
    has_body = (length or 0) > 0 or chunked
    method = str(scope.get("method", "GET")).upper()
    if method in _BODY_METHODS and has_body and media not in route.content_types:
        raise GatewayError(codes.GATEWAY_MEDIA, f"{media or 'no media type'} is not accepted")
