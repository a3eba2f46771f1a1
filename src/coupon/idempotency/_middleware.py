"""A pure ASGI middleware that makes ``POST``/``PATCH`` requests with an Idempotency-Key safe
to retry (starlette style: non-HTTP scopes and requests without the header pass through)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from coupon import codes
from coupon._asgi import (
    PROBLEM_JSON,
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    problem,
    read_body,
    respond,
)
from coupon.errors import CouponError, InvalidRequest
from coupon.observability import get_logger

from ._guard import IdempotencyGuard, Replay, Token

__all__ = [
    "DEFAULT_REPLAY_HEADERS",
    "IDEMPOTENT_REPLAYED",
    "MAX_REQUEST_BODY",
    "PROBLEM_JSON",
    "IdempotencyMiddleware",
]

#: The header every replayed response carries (value ``true``).
IDEMPOTENT_REPLAYED = "idempotent-replayed"
#: Response headers stored with the first answer and replayed (``content-length`` is
#: recomputed; ``set-cookie`` and per-request ids are deliberately never replayed).
DEFAULT_REPLAY_HEADERS = (
    "cache-control",
    "content-language",
    "content-location",
    "content-type",
    "etag",
    "last-modified",
    "location",
    "vary",
)
#: A guarded request body larger than this is refused with ``CPN-REQ-009``.
MAX_REQUEST_BODY = 1024 * 1024

_log = get_logger("coupon.idempotency")


class IdempotencyMiddleware:
    """Run each (tenant, Idempotency-Key) once; replay its first answer for the TTL.

    Args:
        app: the ASGI application to guard.
        guard: the :class:`IdempotencyGuard` (store, TTL, lease, metrics).
        tenant_of: the tenant of a request scope, or ``None`` to leave the request unguarded
            (keys are tenant-scoped; with no tenant there is no safe scope to share).
        methods: the methods that are guarded (others pass through).
        max_request_body: larger guarded request bodies are refused (``CPN-REQ-009``).
        replay_headers: the response headers stored and replayed (lower case).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        guard: IdempotencyGuard,
        tenant_of: Callable[[Scope], str | None],
        methods: Iterable[str] = ("POST", "PATCH"),
        max_request_body: int = MAX_REQUEST_BODY,
        replay_headers: Iterable[str] = DEFAULT_REPLAY_HEADERS,
    ) -> None:
        self.app = app
        self.guard = guard
        self.tenant_of = tenant_of
        self.methods = frozenset(m.upper() for m in methods)
        self.max_request_body = max_request_body
        self.replay_headers = frozenset(h.lower().encode("latin-1") for h in replay_headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in self.methods:
            await self.app(scope, receive, send)
            return
        values = [v for k, v in scope.get("headers", ()) if k.lower() == b"idempotency-key"]
        tenant = self.tenant_of(scope) if values else None
        if tenant is None:
            await self.app(scope, receive, send)
            return
        try:
            body = await read_body(receive, self.max_request_body, self._too_large)
            if body is None:
                return  # the client left
            route = scope.get("path", "")
            if scope.get("query_string"):
                route += "?" + scope["query_string"].decode("latin-1")
            begin = await self.guard.begin(tenant, b", ".join(values), scope["method"], route, body)
        except CouponError as exc:
            await respond(send, *problem(scope, exc))
            return
        if isinstance(begin, Replay):
            response = begin.response
            headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
            headers += [
                (b"content-length", str(len(response.body)).encode()),
                (IDEMPOTENT_REPLAYED.encode(), b"true"),
            ]
            await respond(send, response.status, headers, response.body)
            return
        await self._run(scope, receive, send, begin.token, body)

    def _too_large(self) -> InvalidRequest:
        return InvalidRequest(
            codes.REQUEST_BODY,
            f"a request with an Idempotency-Key may carry at most {self.max_request_body} bytes",
        )

    async def _run(
        self, scope: Scope, receive: Receive, send: Send, token: Token, body: bytes
    ) -> None:
        body_given = False
        status = 500
        headers: list[tuple[str, str]] = []
        chunks: list[bytes] = []
        size = 0
        settled = False

        async def replayed_receive() -> Message:
            nonlocal body_given
            if not body_given:
                body_given = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def capture(message: Message) -> None:
            nonlocal status, size, settled
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers.extend(
                    (k.decode("latin-1").lower(), v.decode("latin-1"))
                    for k, v in message.get("headers", ())
                    if k.lower() in self.replay_headers
                )
            elif message["type"] == "http.response.body" and not settled:
                chunk = message.get("body", b"")
                size += len(chunk)
                if size <= self.guard.max_stored_body:
                    chunks.append(chunk)
                if not message.get("more_body", False):
                    # Store before the client sees the end, so an immediate retry replays.
                    settled = True
                    await self._settle(token, status, tuple(headers), chunks, size)
            await send(message)

        try:
            await self.app(scope, replayed_receive, capture)
        except BaseException:
            if not settled:
                settled = True
                await self._release(token)
            raise
        if not settled:
            await self._release(token)

    async def _settle(
        self,
        token: Token,
        status: int,
        headers: tuple[tuple[str, str], ...],
        chunks: list[bytes],
        size: int,
    ) -> None:
        if size > self.guard.max_stored_body:
            _log.info("idempotency_not_stored", reason="body too large", size=size)
            await self._release(token)
            return
        try:
            stored = await self.guard.complete(
                token, self.guard.response(status, headers, b"".join(chunks))
            )
        except CouponError as exc:
            # The answer is already computed; the lease expires and the key is free again.
            _log.warning("idempotency_store_failed", code=exc.code.code, reason=exc.reason)
            return
        if not stored and status < 500:
            _log.warning("idempotency_lease_lost", status=status)

    async def _release(self, token: Token) -> None:
        try:
            await self.guard.abandon(token)
        except CouponError as exc:
            _log.warning("idempotency_release_failed", code=exc.code.code, reason=exc.reason)
