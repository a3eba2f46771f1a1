"""``CouponMiddleware``: check the coupon of every request to a protected route, locally.

Pure ASGI (the shape of starlette's ``middleware/trustedhost.py``): non-HTTP scopes and
routes not in the table pass through untouched. For a protected route the middleware reads
``Authorization: DPoP <coupon>`` and the ``DPoP`` proof, verifies both with the
:class:`~coupon.token.Verifier` it was given, and either calls the app with the
:class:`~coupon.token.Verified` principal in ``scope["state"]["coupon"]`` or answers.

Who hears the reason: the client gets only the protocol error (``invalid_token``,
``insufficient_scope``, ``invalid_dpop_proof``, ``use_dpop_nonce``...) in
``WWW-Authenticate`` and a request id. The precise code and reason go to the log and to the
``on_decision`` audit hook.
"""

from __future__ import annotations

import inspect
import json
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Final, Protocol
from urllib.parse import quote

from coupon import codes
from coupon.codes import ErrorCode
from coupon.errors import CouponError
from coupon.observability import get_logger
from coupon.token import AsyncReplayStore, Request, Verified, Verifier

from ._requirements import Match, Requirement, RouteTable

__all__ = [
    "ALGS",
    "MAX_HEADER",
    "AsyncVerifier",
    "CouponDecision",
    "CouponMiddleware",
    "DecisionHook",
    "NonceIssuer",
]

#: The DPoP algorithms announced in every challenge.
ALGS: Final = "EdDSA ES256"
#: Longest ``Authorization`` / ``DPoP`` header read; longer ones are refused unread.
MAX_HEADER: Final = 16_384

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_REQUEST_ID: Final = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_log = get_logger("coupon.middleware")


@dataclass(frozen=True, slots=True)
class CouponDecision:
    """The audit event of one protected request: allowed, or denied with the exact reason."""

    allowed: bool
    request_id: str
    method: str
    path: str
    route: str
    resource: str | None
    action: str
    code: str | None = None
    protocol: str | None = None
    status: int = 200
    reason: str | None = None
    subject: str | None = None
    tenant: str | None = None
    jti: str | None = None
    kid: str | None = None


class DecisionHook(Protocol):
    """Receives every :class:`CouponDecision` (an audit sink, a metrics counter...)."""

    def __call__(self, decision: CouponDecision, /) -> None: ...


class AsyncVerifier(Protocol):
    """Verifies a coupon asynchronously, with its own keys and replay store.

    :class:`coupon.sdk.LocalVerifier` is one: keys fetched from the Authority and rotated,
    revocations synchronised.
    """

    async def verify(
        self, token: str, request: Request, *, now: float | None = None
    ) -> Verified: ...


class NonceIssuer(Protocol):
    """Makes a fresh ``DPoP-Nonce`` (the Authority's ``NonceService`` is one)."""

    def issue(self, now: float) -> str: ...


class _Denied(Exception):
    def __init__(self, code: ErrorCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class CouponMiddleware:
    """Require a DPoP-bound coupon on the routes in ``routes``.

    Args:
        app: the ASGI app to protect.
        verifier: verifies coupons and proofs: a :class:`~coupon.token.Verifier` with fixed
            keys, or an :class:`AsyncVerifier` such as :class:`coupon.sdk.LocalVerifier`.
        audience: this service's audience (a route's :class:`Requirement` may override it).
        routes: ``[(method, path, Requirement), ...]``, see :class:`RouteTable`.
        replay: a shared asynchronous replay store for a :class:`~coupon.token.Verifier`;
            without one the verifier's own is used (an :class:`AsyncVerifier` has its own).
        on_decision: called with every allow and deny, with the precise code and reason.
        nonces: issues ``DPoP-Nonce`` values when the verifier asks for one.
        clock: POSIX seconds.
        public_url: the origin (and any prefix a proxy strips) the clients call, e.g.
            ``https://api.example``; the DPoP ``htu`` is this plus the request path. Without
            it the origin comes from the scope's scheme and ``Host`` header.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        verifier: Verifier | AsyncVerifier,
        audience: str,
        routes: Iterable[tuple[str, str, Requirement]] | RouteTable,
        replay: AsyncReplayStore | None = None,
        on_decision: DecisionHook | None = None,
        nonces: NonceIssuer | None = None,
        clock: Callable[[], float] = time.time,
        public_url: str | None = None,
    ) -> None:
        if not isinstance(verifier, Verifier):
            if not inspect.iscoroutinefunction(getattr(verifier, "verify", None)):
                raise TypeError("verifier must be a coupon.token.Verifier or an AsyncVerifier")
            if replay is not None:
                raise ValueError("an AsyncVerifier brings its own replay store")
        if not isinstance(audience, str) or not audience:
            raise ValueError("audience is required")
        self.app = app
        self.verifier = verifier
        self.audience = audience
        self.routes = routes if isinstance(routes, RouteTable) else RouteTable(routes)
        self.replay = replay
        self.on_decision = on_decision
        self.nonces = nonces
        self.clock = clock
        self.public_url = public_url.rstrip("/") if public_url is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = str(scope.get("method", "GET")).upper()
        path = _route_path(scope)
        raw = scope.get("raw_path")
        raw_path = _route_raw_path(scope, raw) if isinstance(raw, bytes) else None
        match = self.routes.match(method, path, raw_path)
        if match is None:
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        request_id = _request_id(headers)
        now = self.clock()
        resource: str | None = None
        try:
            resource = match.resource()
            verified = await self._verify(scope, headers, match, resource, now)
        except (CouponError, _Denied) as exc:
            await self._deny(scope, send, match, resource, exc, request_id, now, headers)
            return
        self._decide(_allowed(match, scope, request_id, resource, verified))
        state = scope.setdefault("state", {})
        state["coupon"] = verified
        await self.app(scope, receive, send)

    # -- verification ---------------------------------------------------------------------------

    async def _verify(
        self,
        scope: Scope,
        headers: dict[str, list[str]],
        match: Match,
        resource: str,
        now: float,
    ) -> Verified:
        token = _coupon(headers)
        proofs = headers.get("dpop", [])
        if len(proofs) > 1:
            raise _Denied(codes.POP_MALFORMED, "more than one DPoP header")
        proof = proofs[0] if proofs else None
        if proof is not None and len(proof) > MAX_HEADER:
            raise _Denied(codes.POP_MALFORMED, f"DPoP header longer than {MAX_HEADER}")
        need = match.requirement
        request = Request(
            audience=need.audience or self.audience,
            resource=resource,
            action=need.action,
            purpose=need.purpose,
            method=match.method,
            uri=self._htu(scope, headers),
            dpop=proof,
        )
        verifier = self.verifier
        if not isinstance(verifier, Verifier):
            return await verifier.verify(token, request, now=now)
        if self.replay is not None:
            return await verifier.verify_async(token, request, replay=self.replay, now=now)
        return verifier.verify(token, request, now=now)

    def _htu(self, scope: Scope, headers: dict[str, list[str]]) -> str:
        raw = scope.get("raw_path")
        if isinstance(raw, bytes):
            path = raw.decode("latin-1").split("?", 1)[0]
        else:
            path = quote(str(scope.get("path", "/")), safe="/:@!$&'()*+,;=-._~")
        if self.public_url is not None:
            return self.public_url + path
        scheme = str(scope.get("scheme", "http"))
        hosts = headers.get("host", [])
        if len(hosts) == 1 and hosts[0]:
            host = hosts[0]
        else:
            server = scope.get("server") or ("localhost", None)
            host = str(server[0]) if server[1] is None else f"{server[0]}:{server[1]}"
        return f"{scheme}://{host}{path}"

    # -- answers --------------------------------------------------------------------------------

    async def _deny(
        self,
        scope: Scope,
        send: Send,
        match: Match,
        resource: str | None,
        exc: CouponError | _Denied,
        request_id: str,
        now: float,
        headers: dict[str, list[str]],
    ) -> None:
        code = exc.code
        anonymous = code is codes.AUTH_MISSING
        _log.info(
            "coupon_denied",
            code=code.code,
            reason=exc.reason,
            request_id=request_id,
            method=match.method,
            route=match.path,
        )
        self._decide(
            _decision(
                match,
                scope,
                request_id,
                resource,
                allowed=False,
                code=code.code,
                protocol=code.protocol,
                status=code.status,
                reason=exc.reason,
            )
        )
        extra: list[tuple[bytes, bytes]] = []
        if code.status in (400, 401, 403):
            challenge = f'DPoP algs="{ALGS}"'
            if not anonymous:
                challenge = f'DPoP error="{code.protocol}", algs="{ALGS}"'
            extra.append((b"www-authenticate", challenge.encode("ascii")))
        if code is codes.POP_NONCE:
            nonce = getattr(exc, "dpop_nonce", None)
            if nonce is None and self.nonces is not None:
                nonce = self.nonces.issue(now)
            if nonce:
                extra.append((b"dpop-nonce", str(nonce).encode("ascii")))
        if code.status == 503:
            extra.append((b"retry-after", b"1"))
        body: dict[str, Any] = {
            "type": "about:blank",
            "title": HTTPStatus(code.status).phrase,
            "status": code.status,
            "request_id": request_id,
        }
        if not anonymous:
            body["error"] = code.protocol
        await _send_problem(send, code.status, body, request_id, extra)

    def _decide(self, decision: CouponDecision) -> None:
        if self.on_decision is not None:
            self.on_decision(decision)


def _decision(
    match: Match, scope: Scope, request_id: str, resource: str | None, **outcome: Any
) -> CouponDecision:
    """The audit record of one decision: the request's place, plus what was decided."""
    return CouponDecision(
        request_id=request_id,
        method=match.method,
        path=str(scope.get("path", "")),
        route=match.path,
        resource=resource,
        action=match.requirement.action,
        **outcome,
    )


def _allowed(
    match: Match, scope: Scope, request_id: str, resource: str, verified: Verified
) -> CouponDecision:
    claims = verified.claims
    return _decision(
        match,
        scope,
        request_id,
        resource,
        allowed=True,
        subject=claims.sub,
        tenant=claims.tid,
        jti=claims.jti,
        kid=verified.kid,
    )


async def _send_problem(
    send: Send,
    status: int,
    body: dict[str, Any],
    request_id: str,
    extra: list[tuple[bytes, bytes]],
) -> None:
    payload = json.dumps(body, separators=(",", ":")).encode()
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(payload)).encode()),
        (b"cache-control", b"no-store"),
        (b"x-request-id", request_id.encode("ascii")),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


# -- reading the scope --------------------------------------------------------------------------


def _headers(scope: Scope) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in scope.get("headers", ()):
        out.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
    return out


def _request_id(headers: dict[str, list[str]]) -> str:
    given = headers.get("x-request-id", [])
    if len(given) == 1 and _REQUEST_ID.fullmatch(given[0]):
        return given[0]
    return secrets.token_hex(16)


def _coupon(headers: dict[str, list[str]]) -> str:
    values = headers.get("authorization", [])
    if not values:
        raise _Denied(codes.AUTH_MISSING, "no Authorization header")
    if len(values) > 1:
        raise _Denied(codes.AUTH_INVALID, "more than one Authorization header")
    value = values[0]
    if len(value) > MAX_HEADER:
        raise _Denied(codes.TOKEN_TOO_LARGE, f"Authorization header longer than {MAX_HEADER}")
    scheme, _, token = value.strip().partition(" ")
    token = token.strip()
    if scheme.lower() == "bearer":
        raise _Denied(codes.AUTH_INVALID, "coupon sent as Bearer; coupons need DPoP")
    if scheme.lower() != "dpop":
        raise _Denied(codes.AUTH_INVALID, f"unsupported Authorization scheme {scheme[:20]!r}")
    if not token:
        raise _Denied(codes.AUTH_INVALID, "empty DPoP credential")
    return token


def _route_path(scope: Scope) -> str:
    """The path the router matches: ``path`` without ``root_path`` (Starlette's rule)."""
    path = str(scope.get("path", "/"))
    root = str(scope.get("root_path", ""))
    if root and path.startswith(root) and path != root:
        return path[len(root) :]
    return path


def _route_raw_path(scope: Scope, raw: bytes) -> str:
    text = raw.decode("latin-1").split("?", 1)[0]
    root = quote(str(scope.get("root_path", "")), safe="/")
    if root and text.startswith(root) and text != root:
        return text[len(root) :]
    return text
