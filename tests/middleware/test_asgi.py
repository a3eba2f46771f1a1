"""``CouponMiddleware``: allow, the refusals and what each party hears, pass-through, fuzz."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from coupon import codes
from coupon.errors import NonceRequired
from coupon.middleware import CouponDecision, CouponMiddleware, Requirement, RouteTable
from coupon.token import Binding, KeySet, MemoryReplayStore, SigningKey, Verifier, mint

NOW = 1_800_000_000
AUDIENCE = "orders-api"
BASE = "https://api.example"


class AsyncMemoryReplay:
    """An :class:`~coupon.token.AsyncReplayStore` over the in-memory store."""

    def __init__(self) -> None:
        self.inner = MemoryReplayStore()

    async def first_use(self, key: str, *, expires_at: float, now: float) -> bool:
        return self.inner.first_use(key, expires_at=expires_at, now=now)


async def order(request: StarletteRequest) -> JSONResponse:
    verified = request.state.coupon
    return JSONResponse(
        {
            "order": request.path_params.get("order_id"),
            "sub": verified.claims.sub,
            "kid": verified.kid,
        }
    )


async def public(request: StarletteRequest) -> PlainTextResponse:
    return PlainTextResponse("hello")


ROUTES = [
    ("GET", "/orders/{order_id}", Requirement(resource="orders/{order_id}", action="read")),
    (
        "POST",
        "/orders/{order_id}/refund",
        Requirement(resource="orders/{order_id}", action="refund", purpose="billing"),
    ),
    ("GET", "/files/{rest:path}", Requirement(resource="files/{rest}", action="read")),
]


class World:
    """An issuer, a holder, a protected Starlette app and the decisions it reported."""

    def __init__(self, *, replay: bool = False) -> None:
        self.issuer = SigningKey.generate(kid="issuer-1")
        self.holder = SigningKey.generate()
        self.decisions: list[CouponDecision] = []
        self.now = float(NOW)
        starlette = Starlette(
            routes=[
                Route("/orders/{order_id}", order),
                Route("/orders/{order_id}/refund", order, methods=["POST"]),
                Route("/files/{rest:path}", order),
                Route("/public", public),
            ]
        )
        self.app = CouponMiddleware(
            starlette,
            verifier=Verifier(KeySet([self.issuer.public])),
            audience=AUDIENCE,
            routes=ROUTES,
            replay=AsyncMemoryReplay() if replay else None,
            on_decision=self.decisions.append,
            clock=lambda: self.now,
        )

    def coupon(
        self, *, resource: str = "orders/1", actions: tuple[str, ...] = ("read",), **kw: Any
    ) -> str:
        return mint(
            self.issuer,
            issuer="https://authority.example",
            subject="svc-fulfilment",
            audience=AUDIENCE,
            tenant="acme",
            resource=resource,
            actions=actions,
            purpose=kw.pop("purpose", "billing"),
            binding=Binding(jkt=self.holder.public.thumbprint),
            now=kw.pop("now", NOW),
            ttl=kw.pop("ttl", 300),
        )

    def auth(self, coupon: str, **kw: Any) -> httpx.Auth:
        from coupon.sdk import DPoPAuth

        return DPoPAuth(self.holder, coupon, clock=lambda: self.now, **kw)

    def call(
        self, method: str, path: str, *, auth: httpx.Auth | None = None, **kw: Any
    ) -> httpx.Response:
        async def main() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
                return await client.request(method, path, auth=auth, **kw)

        return asyncio.run(main())


@pytest.fixture
def world() -> World:
    return World()


def assert_anonymous(response: httpx.Response, status: int, protocol: str) -> None:
    """Only the protocol error and a request id: no code, no reason."""
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == f'DPoP error="{protocol}", algs="EdDSA ES256"'
    body = response.json()
    assert body["error"] == protocol
    assert body["request_id"] == response.headers["x-request-id"]
    assert set(body) == {"type", "title", "status", "error", "request_id"}
    assert "CPN-" not in response.text


# -- allowed ------------------------------------------------------------------------------------


def test_allowed_handler_sees_the_principal(world: World) -> None:
    """A coupon for ``orders/1`` with a fresh proof reaches the handler, which sees it."""
    response = world.call("GET", "/orders/1", auth=world.auth(world.coupon()))
    assert response.status_code == 200
    assert response.json() == {"order": "1", "sub": "svc-fulfilment", "kid": "issuer-1"}
    (decision,) = world.decisions
    assert decision.allowed
    assert decision.resource == "orders/1"
    assert decision.action == "read"
    assert decision.subject == "svc-fulfilment"
    assert decision.tenant == "acme"


def test_wildcard_coupon_and_multi_segment_path(world: World) -> None:
    """A ``files/**`` coupon covers ``files/a/b``; the path parameter spans segments."""
    response = world.call(
        "GET", "/files/a/b.txt", auth=world.auth(world.coupon(resource="files/**"))
    )
    assert response.status_code == 200
    assert world.decisions[0].resource == "files/a/b.txt"


def test_purpose_and_action_on_post(world: World) -> None:
    """The refund route needs ``refund`` for purpose ``billing``."""
    token = world.coupon(actions=("refund",))
    assert world.call("POST", "/orders/1/refund", auth=world.auth(token)).status_code == 200
    other = world.coupon(actions=("refund",), purpose="marketing")
    response = world.call("POST", "/orders/1/refund", auth=world.auth(other))
    assert_anonymous(response, 403, "insufficient_scope")


# -- wider requests -----------------------------------------------------------------------------


def test_another_order_is_insufficient_scope(world: World) -> None:
    """A coupon for ``orders/1`` does not open ``orders/2``."""
    response = world.call("GET", "/orders/2", auth=world.auth(world.coupon()))
    assert_anonymous(response, 403, "insufficient_scope")
    assert world.decisions[-1].code == "CPN-SCOPE-001"


def test_another_action_is_insufficient_scope(world: World) -> None:
    """A ``read`` coupon does not refund."""
    response = world.call("POST", "/orders/1/refund", auth=world.auth(world.coupon()))
    assert_anonymous(response, 403, "insufficient_scope")
    assert world.decisions[-1].code == "CPN-SCOPE-002"


# -- 401s ---------------------------------------------------------------------------------------


def test_no_coupon_gets_a_bare_challenge(world: World) -> None:
    """No credentials: 401 and a challenge without an error (RFC 6750 §3.1)."""
    response = world.call("GET", "/orders/1", headers={"X-Request-Id": "req-42"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'DPoP algs="EdDSA ES256"'
    assert response.headers["x-request-id"] == "req-42"
    assert response.json()["request_id"] == "req-42"
    assert world.decisions[-1].code == "CPN-AUTH-001"
    assert world.decisions[-1].request_id == "req-42"


def test_bearer_coupon_is_refused(world: World) -> None:
    """A coupon sent as ``Bearer`` (no proof of possession) is refused."""
    headers = {"Authorization": f"Bearer {world.coupon()}"}
    response = world.call("GET", "/orders/1", headers=headers)
    assert_anonymous(response, 401, "invalid_token")
    assert "Bearer" in (world.decisions[-1].reason or "")


def test_missing_proof(world: World) -> None:
    """``DPoP`` scheme without a ``DPoP`` header: invalid_dpop_proof."""
    response = world.call("GET", "/orders/1", headers={"Authorization": f"DPoP {world.coupon()}"})
    assert_anonymous(response, 401, "invalid_dpop_proof")


def test_replayed_proof_is_refused() -> None:
    """With a shared replay store, the same proof twice: the second is refused."""
    world = World(replay=True)
    auth = world.auth(world.coupon(), jti=lambda: "same-jti-every-time")
    assert world.call("GET", "/orders/1", auth=auth).status_code == 200
    response = world.call("GET", "/orders/1", auth=auth)
    assert_anonymous(response, 401, "invalid_dpop_proof")
    assert world.decisions[-1].code == "CPN-RPL-001"


def test_expired_coupon(world: World) -> None:
    """An expired coupon: 401 invalid_token; the hook hears ``CPN-TIME-001``."""
    token = world.coupon(ttl=60)
    world.now = NOW + 3600
    response = world.call("GET", "/orders/1", auth=world.auth(token))
    assert_anonymous(response, 401, "invalid_token")
    assert world.decisions[-1].code == "CPN-TIME-001"
    assert world.decisions[-1].reason


def test_oversized_coupon(world: World) -> None:
    """A coupon over the verifier's size limit is a 401, not a crash."""
    response = world.call("GET", "/orders/1", auth=world.auth("a" * 10_000))
    assert_anonymous(response, 401, "invalid_token")
    assert world.decisions[-1].code == "CPN-TOK-001"
    huge = world.call("GET", "/orders/1", headers={"Authorization": "DPoP " + "a" * 20_000})
    assert_anonymous(huge, 401, "invalid_token")


def test_anonymous_answer_hides_the_reason(world: World) -> None:
    """The client hears the protocol error; the hook hears the exact code and reason."""
    other_issuer = SigningKey.generate(kid="rogue")
    token = mint(
        other_issuer,
        issuer="https://rogue.example",
        subject="x",
        audience=AUDIENCE,
        tenant="acme",
        resource="orders/1",
        actions=["read"],
        purpose="billing",
        binding=Binding(jkt=world.holder.public.thumbprint),
        now=NOW,
    )
    response = world.call("GET", "/orders/1", auth=world.auth(token))
    assert_anonymous(response, 401, "invalid_token")
    decision = world.decisions[-1]
    assert not decision.allowed
    assert decision.code == "CPN-HDR-004"
    assert decision.reason
    assert decision.reason not in response.text
    assert "rogue" not in response.text


# -- path parameters ----------------------------------------------------------------------------


def test_encoded_slash_is_refused(world: World) -> None:
    """``/orders/1%2F2`` is refused (not routed past the table as ``/orders/1/2``)."""
    token = world.coupon(resource="orders/**")
    response = world.call("GET", "/orders/1%2F2", auth=world.auth(token))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert world.decisions[-1].code == "CPN-REQ-001"
    assert not world.decisions[-1].allowed


@pytest.mark.parametrize("raw", [b"/orders/..", b"/orders/.", b"/orders/%2E%2E", b"/orders/a%20b"])
def test_bad_segments_are_refused(world: World, raw: bytes) -> None:
    """Dot segments and escapes in a parameter never reach the handler."""
    status, _headers, body = run_asgi(world.app, http_scope(raw, world.coupon()))
    assert status == 400
    assert json.loads(body)["error"] == "invalid_request"
    assert world.decisions[-1].code == "CPN-REQ-001"


# -- pass-through -------------------------------------------------------------------------------


def test_unprotected_route_passes_through(world: World) -> None:
    """A route not in the table needs no coupon and reports no decision."""
    response = world.call("GET", "/public")
    assert response.status_code == 200
    assert response.text == "hello"
    assert world.decisions == []


def test_unlisted_method_passes_through(world: World) -> None:
    """``DELETE /orders/1`` is not listed: the app answers (405 here)."""
    assert world.call("DELETE", "/orders/1").status_code == 405
    assert world.decisions == []


def test_websocket_passes_through(world: World) -> None:
    """A websocket scope, even on a protected path, goes straight to the app."""
    seen: list[dict[str, Any]] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope)

    app = CouponMiddleware(inner, verifier=world.app.verifier, audience=AUDIENCE, routes=ROUTES)
    scope = {"type": "websocket", "path": "/orders/1", "raw_path": b"/orders/1", "headers": []}

    async def noop_receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def noop_send(message: Any) -> None:
        return None

    asyncio.run(app(scope, noop_receive, noop_send))
    assert seen == [scope]
    assert "coupon" not in scope.get("state", {})


def test_lifespan_passes_through(world: World) -> None:
    """A lifespan startup reaches the app."""
    sent: list[dict[str, Any]] = []
    events = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def receive() -> dict[str, Any]:
        return next(events)

    async def send(message: Any) -> None:
        sent.append(dict(message))

    asyncio.run(world.app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send))
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


# -- configuration ------------------------------------------------------------------------------


def test_route_table_rejects_unknown_parameters() -> None:
    """A template naming a parameter the path lacks is a programming error."""
    with pytest.raises(ValueError, match="no parameter"):
        RouteTable(
            [("GET", "/orders/{id}", Requirement(resource="orders/{order_id}", action="read"))]
        )
    with pytest.raises(ValueError, match="resource template"):
        Requirement(resource="orders/../{x}", action="read")


def test_verifier_and_audience_required(world: World) -> None:
    """Misuse raises ``TypeError``/``ValueError``."""
    with pytest.raises(TypeError):
        CouponMiddleware(world.app, verifier=object(), audience="a", routes=[])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="audience"):
        CouponMiddleware(world.app, verifier=world.app.verifier, audience="", routes=[])


# -- garbage never makes a 500 ------------------------------------------------------------------


def http_scope(
    raw_path: bytes, coupon: str | None = None, headers: list[tuple[bytes, bytes]] | None = None
) -> dict[str, Any]:
    hs = list(headers or [])
    if coupon is not None:
        hs.append((b"authorization", b"DPoP " + coupon.encode()))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "https",
        "path": raw_path.decode("latin-1").replace("%2E", ".").replace("%20", " "),
        "raw_path": raw_path,
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"api.example"), *hs],
        "server": ("api.example", 443),
    }


def run_asgi(app: Any, scope: dict[str, Any]) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        messages.append(dict(message))

    asyncio.run(app(scope, receive, send))
    start = messages[0]
    body = b"".join(m.get("body", b"") for m in messages[1:])
    return start["status"], start["headers"], body


_HEADER_TEXT = st.binary(max_size=300).filter(lambda b: b"\r" not in b and b"\n" not in b)
_SCHEMES = st.sampled_from([b"DPoP ", b"dpop ", b"Bearer ", b"", b"Basic ", b"DPoP  "])


def _fuzz_world() -> Iterator[World]:
    world = World()
    yield from itertools.repeat(world)


_WORLD = _fuzz_world()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    scheme=_SCHEMES,
    authorization=_HEADER_TEXT,
    dpop=st.one_of(st.none(), _HEADER_TEXT),
    dup=st.booleans(),
)
def test_garbage_headers_never_500(
    scheme: bytes, authorization: bytes, dpop: bytes | None, dup: bool
) -> None:
    """Any ``Authorization``/``DPoP`` bytes give 400/401/403 with a challenge, never a 500."""
    world = next(_WORLD)
    headers = [(b"authorization", scheme + authorization)]
    if dpop is not None:
        headers.append((b"dpop", dpop))
        if dup:
            headers.append((b"dpop", dpop))
    status, out, body = run_asgi(world.app, http_scope(b"/orders/1", headers=headers))
    assert status in (400, 401, 403)
    names = {name for name, _ in out}
    assert b"www-authenticate" in names
    assert b"x-request-id" in names
    assert b"CPN-" not in body


class Nonces:
    """Issues one nonce and accepts only it (a :class:`~coupon.token.NonceChecker`)."""

    def issue(self, now: float) -> str:
        return "n-1"

    def check(self, nonce: str | None, *, now: float) -> None:
        if nonce != "n-1":
            raise NonceRequired(codes.POP_NONCE, "nonce missing or stale", step="binding")


def test_use_dpop_nonce_challenge_and_sdk_retry(world: World) -> None:
    """The verifier wants a nonce: 401 ``use_dpop_nonce`` + ``DPoP-Nonce``; DPoPAuth retries."""
    app = CouponMiddleware(
        world.app.app,
        verifier=Verifier(KeySet([world.issuer.public]), nonces=Nonces()),
        audience=AUDIENCE,
        routes=ROUTES,
        nonces=Nonces(),
        on_decision=world.decisions.append,
        clock=lambda: world.now,
    )
    world.app = app
    auth = world.auth(world.coupon())
    response = world.call("GET", "/orders/1", auth=auth)
    assert response.status_code == 200
    assert auth.nonce_for(BASE) == "n-1"  # type: ignore[attr-defined]
    assert [d.code for d in world.decisions][-2:] == ["CPN-POP-011", None]
