"""Outgoing calls carry the trace and request id of the request being served."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from coupon.observability import CorrelationMiddleware
from coupon.sdk import correlation_headers, propagate_correlation

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def _apps() -> tuple[CorrelationMiddleware, list[dict[str, str]]]:
    seen: list[dict[str, str]] = []

    async def downstream(request: Request) -> JSONResponse:
        seen.append(dict(request.headers))
        return JSONResponse({})

    back = Starlette(routes=[Route("/", downstream)])

    async def front_handler(request: Request) -> JSONResponse:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=back),
            base_url="http://back",
            event_hooks={"request": [propagate_correlation]},
        ) as client:
            await client.get("/")
            await client.get("/", headers={"X-Request-Id": "chosen"})
        return JSONResponse({})

    front = CorrelationMiddleware(Starlette(routes=[Route("/", front_handler)]))
    return front, seen


@pytest.mark.asyncio
async def test_trace_and_request_id_follow_the_call() -> None:
    front, seen = _apps()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=front), base_url="http://front"
    ) as client:
        answer = await client.get(
            "/",
            headers={"traceparent": f"00-{TRACE}-00f067aa0ba902b7-01", "X-Request-Id": "r-1"},
        )
    assert answer.headers["x-request-id"] == "r-1"
    first, second = seen
    assert first["x-request-id"] == "r-1"
    assert first["traceparent"].split("-")[1] == TRACE
    assert first["traceparent"].split("-")[2] != "00f067aa0ba902b7"  # the front's own span
    assert second["x-request-id"] == "chosen"  # what the caller set is kept


def test_nothing_is_invented_outside_a_request() -> None:
    assert correlation_headers() == {}
