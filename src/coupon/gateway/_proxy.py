"""Forwarding one request to its upstream through that upstream's resilience pipeline.

The forwarding hop runs on aiohttp's client: measured here it costs a quarter of httpx's CPU
per request, and the hop is most of the gateway's own cost (docs/benchmarks-gateway.md).
The request body is read whole (bounded by the route's ``max_body``) so an attempt can be
repeated; the response streams back. Hop-by-hop fields are dropped both ways (RFC 9110
§7.6.1), client-sent ``X-Coupon-*`` and ``X-Forwarded-*`` fields are replaced by the gateway's
own, and ``traceparent`` / ``X-Request-Id`` carry the gateway's span and request id upstream.

Which calls are repeated: ``GET``, ``HEAD``, ``OPTIONS``, ``PUT`` and ``DELETE`` (idempotent by
RFC 9110), and a ``POST``/``PATCH`` with an ``Idempotency-Key``. Every other call runs once
through the same breaker and bulkhead (:meth:`Pipeline.without_retry`).

An upstream's 5xx answer counts as a failure for its breaker (and is retried when the
pipeline's ``on_status`` allows); when no attempt does better, the last 5xx is passed on
unchanged. Failures with no answer become ``CPN-GW-005`` (502, unreachable) or
``CPN-GW-006`` (504, timed out); an open breaker is ``CPN-RES-001`` (503, ``Retry-After``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import aiohttp
from multidict import CIMultiDict
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from coupon import codes
from coupon._asgi import Receive, Scope, Send, read_body
from coupon.errors import DeadlineExceeded, GatewayError, ResilienceError, RetriesExhausted
from coupon.resilience import Pipeline

from ._config import GatewayRoute, Upstream
from ._routes import identity_fields

__all__ = ["IDEMPOTENT_METHODS", "Forwarder", "UpstreamFailed"]

#: Methods whose repetition has no further effect (RFC 9110 §9.2.2).
IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
_HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Replaced by the gateway's own values, never taken from the client.
_OWN_PREFIXES: Final = (b"x-coupon-", b"x-forwarded-", b"forwarded")
_OWN: Final = frozenset(
    {b"host", b"content-length", b"traceparent", b"tracestate", b"x-request-id"}
)
_ERROR_BODY_LIMIT: Final = 64 * 1024
#: Connections kept per gateway process, all upstreams together: about the upstream
#: bulkheads' size; more only adds idle sockets to look after.
_POOL: Final = 100
_PROPAGATOR: Final = TraceContextTextMapPropagator()


class UpstreamFailed(Exception):
    """An upstream answered 5xx; the answer is kept to pass on if nothing does better."""

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        super().__init__(f"upstream answered {status}")
        self.status = status
        self.status_code = status  # read by coupon.resilience's classifier
        self.headers = headers
        self.body = body


@dataclass(frozen=True, slots=True)
class _Target:
    upstream: Upstream
    pipeline: Pipeline
    once: Pipeline


class Forwarder:
    """The ASGI app at the bottom of the gateway: forwards to the matched route's upstream.

    Args:
        upstreams: every upstream, by name.
        session: the pooled aiohttp session all forwarding goes through (made lazily, in the
            serving event loop, when not given).
        pipelines: one pipeline per upstream name (shared with the metrics hooks).
    """

    def __init__(
        self,
        upstreams: Mapping[str, Upstream],
        *,
        pipelines: Mapping[str, Pipeline],
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self._session = session
        self._targets = {
            name: _Target(up, pipelines[name], pipelines[name].without_retry())
            for name, up in upstreams.items()
        }

    def pipeline(self, name: str) -> Pipeline:
        """The pipeline toward upstream ``name`` (for operators: force open, isolate)."""
        return self._targets[name].pipeline

    def session(self) -> aiohttp.ClientSession:
        """The forwarding session, made on first use in the running event loop."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=_POOL, keepalive_timeout=30),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=2.0, sock_read=30.0),
                auto_decompress=False,  # bodies pass through as the upstream encoded them
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def close(self) -> None:
        """Close the pooled connections."""
        if self._session is not None:
            await self._session.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route: GatewayRoute = scope["state"]["gateway_route"]
        target = self._targets[route.upstream]
        body = await read_body(
            receive,
            route.max_body,
            lambda: GatewayError(
                codes.GATEWAY_BODY_SIZE, f"the body passes {route.max_body} bytes"
            ),
        )
        if body is None:
            return
        method = str(scope["method"])
        headers = CIMultiDict(
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in _forward_headers(scope, route)
        )
        url = _url(target.upstream, route, scope)
        pipeline = target.pipeline if _repeatable(method, scope) else target.once
        session = self.session()

        async def attempt() -> aiohttp.ClientResponse:
            response = await session.request(
                method, url, headers=headers, data=body or None, allow_redirects=False
            )
            if response.status >= 500:
                try:
                    kept = await response.content.read(_ERROR_BODY_LIMIT)
                finally:
                    response.release()
                raise UpstreamFailed(response.status, _response_headers(response), kept)
            return response

        try:
            response = await pipeline.call(attempt)
        except UpstreamFailed as failed:
            await _send_whole(send, failed.status, failed.headers, failed.body)
            return
        except RetriesExhausted as exc:
            cause = exc.__cause__
            if isinstance(cause, UpstreamFailed):
                await _send_whole(send, cause.status, cause.headers, cause.body)
                return
            raise _no_answer(cause, exc) from exc
        except ResilienceError as exc:
            if isinstance(exc, DeadlineExceeded):
                raise GatewayError(
                    codes.GATEWAY_TIMEOUT, "the upstream did not answer in time"
                ) from exc
            raise
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise _no_answer(exc, exc) from exc
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status,
                    "headers": _response_headers(response),
                }
            )
            async for chunk in response.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            response.release()


def _repeatable(method: str, scope: Scope) -> bool:
    if method in IDEMPOTENT_METHODS:
        return True
    return any(name.lower() == b"idempotency-key" for name, _ in scope.get("headers", ()))


def _no_answer(cause: BaseException | None, exc: BaseException) -> GatewayError:
    if isinstance(cause, TimeoutError):
        return GatewayError(codes.GATEWAY_TIMEOUT, "the upstream did not answer in time")
    name = type(cause if cause is not None else exc).__name__
    return GatewayError(codes.GATEWAY_UPSTREAM, f"the upstream could not be reached ({name})")


def _url(upstream: Upstream, route: GatewayRoute, scope: Scope) -> str:
    raw = scope.get("raw_path")
    path = raw.decode("latin-1").split("?", 1)[0] if isinstance(raw, bytes) else scope["path"]
    if route.strip_prefix:
        path = path[len(route.strip_prefix) :] or "/"
    query = scope.get("query_string", b"")
    return upstream.url + path + ("?" + query.decode("latin-1") if query else "")


def _connection_named(headers: list[tuple[bytes, bytes]]) -> frozenset[bytes]:
    named: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            named.update(t.strip().lower() for t in value.split(b","))
    return frozenset(named)


def _forward_headers(scope: Scope, route: GatewayRoute) -> list[tuple[bytes, bytes]]:
    incoming: list[tuple[bytes, bytes]] = list(scope.get("headers", ()))
    drop = _HOP_BY_HOP | _connection_named(incoming)
    out: list[tuple[bytes, bytes]] = []
    host = b""
    for name, value in incoming:
        lower = name.lower()
        if lower == b"host":
            host = value
        if lower in drop or lower in _OWN or lower.startswith(_OWN_PREFIXES):
            continue
        out.append((lower, value))
    state = scope.get("state", {})
    client = scope.get("client")
    if client:
        out.append((b"x-forwarded-for", str(client[0]).encode("latin-1")))
    out.append((b"x-forwarded-proto", str(scope.get("scheme", "http")).encode("latin-1")))
    if host:
        out.append((b"x-forwarded-host", host))
    request_id = state.get("request_id")
    if request_id:
        out.append((b"x-request-id", str(request_id).encode("latin-1")))
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)  # the gateway's current span becomes the upstream's parent
    for field, text in carrier.items():
        out.append((field.encode("latin-1"), text.encode("latin-1")))
    return out + identity_fields(scope)


def _response_headers(response: aiohttp.ClientResponse) -> list[tuple[bytes, bytes]]:
    raw = [(k.lower(), v) for k, v in response.raw_headers]
    # The gateway's own request id and span go back to the client, not the upstream's.
    drop = _HOP_BY_HOP | _connection_named(raw) | {b"x-request-id", b"traceparent"}
    return [(k, v) for k, v in raw if k not in drop]


async def _send_whole(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    fixed = [(k, v) for k, v in headers if k != b"content-length"]
    fixed.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": fixed})
    await send({"type": "http.response.body", "body": body, "more_body": False})
