"""OpenTelemetry tracing and correlation ids, as a pure ASGI middleware.

Each HTTP request gets a server span whose parent comes from an incoming ``traceparent``
(W3C Trace Context); the response carries ``traceparent`` and ``X-Request-Id`` back, and the
ids are bound into every log line of the request.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from typing import Final

import structlog
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from coupon._asgi import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CorrelationMiddleware", "current_ids", "tracer_provider"]

_REQUEST_ID: Final = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_PROPAGATOR: Final = TraceContextTextMapPropagator()
_provider: TracerProvider | None = None


def tracer_provider() -> TracerProvider:
    """The process's tracer provider (exporters are attached by deployment configuration)."""
    global _provider
    if _provider is None:
        _provider = TracerProvider()
    return _provider


def current_ids() -> tuple[str, str]:
    """(trace id, request id) of the request being served, or empty strings."""
    ctx = structlog.contextvars.get_contextvars()
    return ctx.get("trace_id", ""), ctx.get("request_id", "")


class CorrelationMiddleware:
    """Starts a span per request and propagates ``traceparent`` and ``X-Request-Id``.

    Non-HTTP scopes pass through untouched.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        on_response: Callable[[str, str, int, float], None] | None = None,
    ) -> None:
        self.app = app
        self._tracer = tracer_provider().get_tracer("coupon")
        self._on_response = on_response

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        carrier = {"traceparent": headers["traceparent"]} if "traceparent" in headers else {}
        parent = _PROPAGATOR.extract(carrier)
        given = headers.get("x-request-id", "")
        request_id = given if _REQUEST_ID.fullmatch(given) else secrets.token_hex(8)
        method = scope.get("method", "")
        started = time.perf_counter()
        status = 500
        with self._tracer.start_as_current_span(
            f"{method} {scope.get('path', '')}", context=parent, kind=SpanKind.SERVER
        ) as span:
            span_ctx = span.get_span_context()
            trace_id = f"{span_ctx.trace_id:032x}"
            span.set_attribute("http.request.method", method)
            span.set_attribute("url.path", scope.get("path", ""))
            span.set_attribute("coupon.request_id", request_id)
            out: dict[str, str] = {}
            _PROPAGATOR.inject(out)
            extra = [
                (b"x-request-id", request_id.encode()),
                (b"traceparent", out.get("traceparent", "").encode()),
            ]
            scope.setdefault("state", {})
            scope["state"]["trace_id"] = trace_id
            scope["state"]["request_id"] = request_id

            async def send_with_ids(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    message["headers"] = [*message.get("headers", []), *extra]
                    span.set_attribute("http.response.status_code", status)
                await send(message)

            with structlog.contextvars.bound_contextvars(trace_id=trace_id, request_id=request_id):
                await self.app(scope, receive, send_with_ids)
        if self._on_response is not None:
            route = scope.get("route")
            name = getattr(route, "path", None) or "unmatched"
            self._on_response(name, method, status, time.perf_counter() - started)
