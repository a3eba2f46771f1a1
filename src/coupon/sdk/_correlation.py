"""Correlation ids on outgoing calls: the caller's trace and request id travel with them.

Inside a request served with :class:`coupon.observability.CorrelationMiddleware` (the
Authority, the gateway, a service), the current OpenTelemetry span and the bound request id
are known. :func:`propagate_correlation` is an httpx request hook that puts them on every
outgoing call — ``traceparent`` (W3C Trace Context) and ``X-Request-Id`` — so one id follows
a request across services and shows in each one's log lines. Fields the caller set itself
are kept.
"""

from __future__ import annotations

from typing import Final

import httpx
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from coupon.observability import current_ids

__all__ = ["correlation_headers", "propagate_correlation", "propagate_correlation_sync"]

_PROPAGATOR: Final = TraceContextTextMapPropagator()


def correlation_headers() -> dict[str, str]:
    """``traceparent`` of the current span and ``X-Request-Id`` of the current request.

    Empty outside a traced request: nothing is invented.
    """
    fields: dict[str, str] = {}
    _PROPAGATOR.inject(fields)
    _, request_id = current_ids()
    if request_id:
        fields["X-Request-Id"] = request_id
    return fields


def propagate_correlation_sync(request: httpx.Request) -> None:
    """An ``httpx.Client`` request hook adding :func:`correlation_headers`."""
    for name, value in correlation_headers().items():
        request.headers.setdefault(name, value)


async def propagate_correlation(request: httpx.Request) -> None:
    """An ``httpx.AsyncClient`` request hook adding :func:`correlation_headers`.

    Example::

        httpx.AsyncClient(event_hooks={"request": [propagate_correlation]})
    """
    propagate_correlation_sync(request)
