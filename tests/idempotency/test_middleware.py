"""The ASGI middleware over a tiny Starlette app, through ``httpx.ASGITransport``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from tests.idempotency.idem_support import KEY, StoreCase

from coupon import codes
from coupon._asgi import Message, Receive, Scope, Send
from coupon.idempotency import IdempotencyGuard, IdempotencyMiddleware, MemoryIdempotencyStore


class Orders:
    """An order-like resource whose creations we count."""

    def __init__(self) -> None:
        self.created = 0
        self.attempts = 0
        self.fail_next = 0

    async def create(self, request: Request) -> Response:
        self.attempts += 1
        payload = await request.json()
        await asyncio.sleep(0.05)  # long enough for concurrent retries to overlap
        if self.fail_next:
            self.fail_next -= 1
            return PlainTextResponse("try later", status_code=503)
        self.created += 1
        return JSONResponse(
            {"id": self.created, **payload},
            status_code=201,
            headers={"location": f"/orders/{self.created}", "set-cookie": "s=1"},
        )

    async def boom(self, request: Request) -> Response:
        self.attempts += 1
        raise RuntimeError("handler crashed")

    async def big(self, request: Request) -> Response:
        self.attempts += 1
        return PlainTextResponse("x" * 100)

    async def rejected(self, request: Request) -> Response:
        self.attempts += 1
        return JSONResponse({"error": "no"}, status_code=400)


def tenant_of(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-tenant":
            return str(value.decode())
    return None


def build(orders: Orders, guard: IdempotencyGuard, **options: Any) -> Starlette:
    return Starlette(
        routes=[
            Route("/orders", orders.create, methods=["POST", "PUT"]),
            Route("/boom", orders.boom, methods=["POST"]),
            Route("/big", orders.big, methods=["POST"]),
            Route("/rejected", orders.rejected, methods=["POST"]),
        ],
        middleware=[Middleware(IdempotencyMiddleware, guard=guard, tenant_of=tenant_of, **options)],
    )


@pytest.fixture
def orders() -> Orders:
    return Orders()


@pytest_asyncio.fixture
async def client(store_case: StoreCase, orders: Orders) -> AsyncIterator[httpx.AsyncClient]:
    guard = IdempotencyGuard(store_case.store, max_stored_body=50)
    app = build(orders, guard, max_request_body=1000)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        yield http


HEADERS = {"idempotency-key": KEY, "x-tenant": "acme"}


def problem_code(response: httpx.Response) -> str:
    assert response.headers["content-type"] == "application/problem+json"
    body = json.loads(response.content)
    assert body["status"] == response.status_code
    code: str = body["code"]
    return code


@pytest.mark.asyncio
class TestMiddleware:
    async def test_retries_create_once(self, client: httpx.AsyncClient, orders: Orders) -> None:
        first = await client.post("/orders", json={"sku": "a"}, headers=HEADERS)
        assert first.status_code == 201
        assert "idempotent-replayed" not in first.headers
        for _ in range(3):
            again = await client.post("/orders", json={"sku": "a"}, headers=HEADERS)
            assert again.status_code == 201
            assert again.content == first.content
            assert again.headers["idempotent-replayed"] == "true"
            assert again.headers["location"] == "/orders/1"
            assert again.headers["content-type"] == "application/json"
            assert "set-cookie" not in again.headers
        assert orders.created == 1

    async def test_concurrent_retries(self, client: httpx.AsyncClient, orders: Orders) -> None:
        responses = await asyncio.gather(
            *(client.post("/orders", json={"sku": "a"}, headers=HEADERS) for _ in range(8))
        )
        assert orders.created == 1
        created = [r for r in responses if r.status_code == 201]
        assert len([r for r in created if "idempotent-replayed" not in r.headers]) == 1
        for r in responses:
            assert r.status_code in (201, 409)
            if r.status_code == 409:
                assert problem_code(r) == codes.IDEM_IN_FLIGHT.code

    async def test_other_payload_is_422(self, client: httpx.AsyncClient, orders: Orders) -> None:
        await client.post("/orders", json={"sku": "a"}, headers=HEADERS)
        other = await client.post("/orders", json={"sku": "b"}, headers=HEADERS)
        assert other.status_code == 422
        assert problem_code(other) == codes.IDEM_REUSED.code
        query = await client.post("/orders?x=1", json={"sku": "a"}, headers=HEADERS)
        assert query.status_code == 422
        assert orders.created == 1

    async def test_malformed_key_is_400(self, client: httpx.AsyncClient, orders: Orders) -> None:
        bad = await client.post(
            "/orders", json={}, headers={"idempotency-key": "unquoted", "x-tenant": "a"}
        )
        assert bad.status_code == 400
        assert problem_code(bad) == codes.IDEM_KEY.code
        assert json.loads(bad.content)["instance"] == "/orders"
        assert orders.attempts == 0

    async def test_two_key_headers_are_400(self, client: httpx.AsyncClient) -> None:
        headers = [("idempotency-key", '"a"'), ("idempotency-key", '"b"'), ("x-tenant", "a")]
        bad = await client.post("/orders", json={}, headers=headers)
        assert bad.status_code == 400

    async def test_5xx_releases(self, client: httpx.AsyncClient, orders: Orders) -> None:
        orders.fail_next = 1
        failed = await client.post("/orders", json={"sku": "a"}, headers=HEADERS)
        assert failed.status_code == 503
        retried = await client.post("/orders", json={"sku": "a"}, headers=HEADERS)
        assert retried.status_code == 201
        assert "idempotent-replayed" not in retried.headers
        assert orders.created == 1

    async def test_exception_releases(self, client: httpx.AsyncClient, orders: Orders) -> None:
        for _ in range(2):
            crashed = await client.post("/boom", content=b"{}", headers=HEADERS)
            assert crashed.status_code == 500
        assert orders.attempts == 2

    async def test_4xx_is_replayed(self, client: httpx.AsyncClient, orders: Orders) -> None:
        for _ in range(2):
            answer = await client.post("/rejected", content=b"{}", headers=HEADERS)
            assert answer.status_code == 400
        assert answer.headers["idempotent-replayed"] == "true"
        assert orders.attempts == 1

    async def test_large_response_not_stored(
        self, client: httpx.AsyncClient, orders: Orders
    ) -> None:
        for _ in range(2):
            answer = await client.post("/big", content=b"{}", headers=HEADERS)
            assert answer.status_code == 200
            assert answer.content == b"x" * 100
            assert "idempotent-replayed" not in answer.headers
        assert orders.attempts == 2

    async def test_large_request_refused(self, client: httpx.AsyncClient, orders: Orders) -> None:
        answer = await client.post("/orders", content=b"x" * 1001, headers=HEADERS)
        assert answer.status_code == 422
        assert problem_code(answer) == codes.REQUEST_BODY.code
        assert orders.attempts == 0

    async def test_unguarded_requests_pass(self, client: httpx.AsyncClient, orders: Orders) -> None:
        for _ in range(2):
            await client.post("/orders", json={"sku": "a"})  # no key
            await client.post("/orders", json={"sku": "a"}, headers={"idempotency-key": KEY})
            await client.put("/orders", json={"sku": "a"}, headers=HEADERS)  # not guarded
        assert orders.created == 6


@pytest.mark.asyncio
async def test_store_down_is_503(orders: Orders, closed_port: int) -> None:
    from coupon.idempotency import RedisIdempotencyStore

    store = RedisIdempotencyStore.from_url(f"redis://127.0.0.1:{closed_port}/0", timeout=0.5)
    app = build(orders, IdempotencyGuard(store))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        answer = await http.post("/orders", json={}, headers=HEADERS)
    await store.close()
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "1"
    assert problem_code(answer) == codes.UNAVAILABLE_STORAGE.code
    assert orders.attempts == 0, "fail closed: the request did not run"


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["websocket", "lifespan"])
async def test_other_scopes_pass_through(kind: str) -> None:
    seen: list[Scope] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)

    async def receive() -> Message:
        raise AssertionError("the middleware must not read")

    async def send(message: Message) -> None:
        raise AssertionError("the middleware must not answer")

    guard = IdempotencyGuard(MemoryIdempotencyStore())
    middleware = IdempotencyMiddleware(inner, guard=guard, tenant_of=tenant_of)
    scope: Scope = {"type": kind, "headers": [(b"idempotency-key", KEY.encode())]}
    await middleware(scope, receive, send)
    assert seen == [scope]
