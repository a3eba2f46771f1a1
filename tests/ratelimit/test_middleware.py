"""``RateLimitMiddleware``: headers on every limited answer, 429 before the app runs."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from coupon import codes
from coupon._asgi import Scope
from coupon.ratelimit import RateLimitConfig, RateLimiter, RateLimitMiddleware, TenantLimits

pytestmark = pytest.mark.asyncio


def _tenant(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-tenant":
            return str(value.decode())
    return None


def _client(limits: TenantLimits) -> tuple[httpx.AsyncClient, list[str]]:
    ran: list[str] = []

    async def hello(request: Request) -> PlainTextResponse:
        ran.append(request.url.path)
        return PlainTextResponse("hi")

    app = Starlette(routes=[Route("/{p:path}", hello)])
    limited = RateLimitMiddleware(
        app,
        limiter=RateLimiter(RateLimitConfig(limits)),
        tenant_of=_tenant,
        key_of=lambda scope: "reads",
        policy="acme-reads",
    )
    transport = httpx.ASGITransport(app=limited)
    return httpx.AsyncClient(transport=transport, base_url="http://t"), ran


async def test_hard_limit_refuses_before_the_app() -> None:
    client, ran = _client(TenantLimits(soft_per_s=1, hard_per_s=1, burst=2))
    async with client:
        answers = [await client.get("/a", headers={"x-tenant": "acme"}) for _ in range(3)]
    assert [r.status_code for r in answers] == [200, 200, 429]
    assert len(ran) == 2
    refused = answers[2]
    assert refused.json()["code"] == codes.RATE_TENANT.code
    assert refused.headers["content-type"] == "application/problem+json"
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["ratelimit-policy"] == '"acme-reads";q=1;w=1'
    assert answers[0].headers["ratelimit"].startswith('"acme-reads";r=1;')


async def test_soft_limit_admits_and_flags() -> None:
    client, ran = _client(TenantLimits(soft_per_s=0.5, hard_per_s=10_000, burst=1))
    async with client:
        first = await client.get("/a", headers={"x-tenant": "acme"})
        second = await client.get("/a", headers={"x-tenant": "acme"})
    assert "x-ratelimit-soft" not in first.headers
    assert second.status_code == 200
    assert second.headers["x-ratelimit-soft"] == "exceeded"
    assert len(ran) == 2


async def test_no_tenant_passes_unlimited() -> None:
    client, ran = _client(TenantLimits(soft_per_s=1, hard_per_s=1, burst=1))
    async with client:
        answers = [await client.get("/a") for _ in range(5)]
    assert {r.status_code for r in answers} == {200}
    assert "ratelimit" not in answers[0].headers
    assert len(ran) == 5


async def test_tenants_are_limited_apart() -> None:
    client, _ = _client(TenantLimits(soft_per_s=1, hard_per_s=1, burst=1))
    async with client:
        a = [await client.get("/a", headers={"x-tenant": "acme"}) for _ in range(2)]
        b = await client.get("/a", headers={"x-tenant": "globex"})
    assert [r.status_code for r in a] == [200, 429]
    assert b.status_code == 200
