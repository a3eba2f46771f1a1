"""The gateway end to end in one process: validation, coupons, forwarding, ids, endpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from tests.gateway.world import World, routes_file

from coupon import codes
from coupon.token import parse_chain

pytestmark = pytest.mark.asyncio


def _code(response: httpx.Response) -> str:
    assert response.headers["content-type"] == "application/problem+json"
    return str(response.json()["code"])


async def test_allowed_request_is_forwarded_with_identity() -> None:
    """A coupon granting the route reaches the upstream, which learns who called."""
    async with World() as w:
        r = await w.client.get("/orders/1?x=1", auth=w.auth())
        assert r.status_code == 200, r.text
        assert r.json()["path"] == "/orders/1"
        seen = w.upstream.seen[-1]
        assert seen["query"] == "x=1"
        assert seen["headers"]["x-coupon-subject"] == "alice"
        assert seen["headers"]["x-coupon-tenant"] == "acme"
        assert seen["headers"]["x-forwarded-host"] == "edge.test"
        assert seen["headers"]["x-forwarded-proto"] == "http"
        assert r.headers["x-upstream"] == "orders"
        assert "ratelimit" in r.headers
        assert "ratelimit-policy" in r.headers


async def test_client_cannot_forge_identity_or_forwarding_fields() -> None:
    """X-Coupon-* and X-Forwarded-* from the client never reach the upstream."""
    async with World() as w:
        forged = {
            "X-Coupon-Tenant": "other",
            "X-Coupon-Subject": "root",
            "X-Forwarded-For": "10.0.0.1",
            "Forwarded": "for=10.0.0.1",
        }
        r = await w.client.get("/public/a", headers=forged)
        assert r.status_code == 200
        headers = w.upstream.seen[-1]["headers"]
        assert "x-coupon-tenant" not in headers
        assert "x-coupon-subject" not in headers
        assert headers.get("x-forwarded-for") != "10.0.0.1"
        assert "forwarded" not in headers


async def test_hop_by_hop_fields_are_dropped_both_ways() -> None:
    """Connection and the fields it names stay on their own hop (RFC 9110 §7.6.1)."""
    async with World() as w:
        r = await w.client.get(
            "/public/a", headers={"Connection": "x-private", "X-Private": "1", "TE": "trailers"}
        )
        headers = w.upstream.seen[-1]["headers"]
        assert "x-private" not in headers
        assert "te" not in headers
        assert "x-secret" not in r.headers  # named by the upstream's Connection field
        assert r.headers.get("connection") != "x-secret"


async def test_strip_prefix_and_raw_path_forwarded() -> None:
    """The raw path goes upstream, less the route's strip_prefix."""
    async with World() as w:
        r = await w.client.get("/api/v1/items/a%20b")
        assert r.status_code == 200
        assert w.upstream.seen[-1]["raw_path"] == "/items/a%20b"


async def test_no_coupon_is_401_with_challenge_and_no_forwarding() -> None:
    async with World() as w:
        r = await w.client.get("/orders/1")
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("DPoP ")
        assert w.upstream.calls == 0


async def test_wider_request_is_403_insufficient_scope() -> None:
    async with World() as w:
        r = await w.client.get("/orders/2", auth=w.auth())
        assert r.status_code == 403
        assert 'error="insufficient_scope"' in r.headers["www-authenticate"]
        assert w.upstream.calls == 0
        assert (
            w.metric(
                "coupon_gateway_coupon_decisions_total",
                {"outcome": "denied", "code": codes.SCOPE_RESOURCE.code},
            )
            == 1
        )


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "code"),
    [
        ("GET", "/nowhere", {}, codes.GATEWAY_NO_ROUTE),
        ("DELETE", "/orders/1", {}, codes.GATEWAY_METHOD),
        ("GET", "/public/a%2Fb", {}, codes.GATEWAY_PATH),
        ("GET", "/public/a//b", {}, codes.GATEWAY_PATH),
        ("GET", "/public/a%5Cb", {}, codes.GATEWAY_PATH),
        ("GET", "/public/a%00", {}, codes.GATEWAY_PATH),
        ("GET", "/public/%2e%2e/x", {}, codes.GATEWAY_PATH),
        ("GET", "/_coupon/nothing", {}, codes.GATEWAY_NO_ROUTE),
        (
            "POST",
            "/orders/1/refunds",
            {"content": b"x" * 65, "headers": {"content-type": "application/json"}},
            codes.GATEWAY_BODY_SIZE,
        ),
        (
            "POST",
            "/orders/1/refunds",
            {"content": b"a=1", "headers": {"content-type": "text/plain"}},
            codes.GATEWAY_MEDIA,
        ),
        (
            "POST",
            "/orders/1/refunds",
            {"content": b"{}", "headers": {"content-length": "2, 2"}},
            codes.REQUEST_BODY,
        ),
    ],
)
async def test_refused_before_anything_runs(
    method: str, path: str, kwargs: dict[str, object], code: codes.ErrorCode
) -> None:
    """Each refusal has its stable code and status; the upstream never hears of it."""
    async with World() as w:
        r = await w.client.request(method, path, **kwargs)  # type: ignore[arg-type]
        assert r.status_code == code.status, r.text
        assert _code(r) == code.code
        assert r.json()["request_id"] == r.headers["x-request-id"]
        assert w.upstream.calls == 0


async def test_streamed_body_over_the_limit_is_413() -> None:
    """A body without Content-Length is counted as it arrives."""

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b'{"a":"' + b"x" * 10 + b'"}'

    async with World() as w:
        r = await w.client.post(
            "/orders/1/refunds",
            content=chunks(),
            headers={"content-type": "application/json"},
            auth=w.auth(),
        )
        assert r.status_code == 413
        assert _code(r) == codes.GATEWAY_BODY_SIZE.code
        assert w.upstream.calls == 0


async def test_trace_and_request_ids_propagate() -> None:
    """The client's trace continues through the gateway to the upstream; the id comes back."""
    trace = "0af7651916cd43dd8448eb211c80319c"
    async with World() as w:
        r = await w.client.get(
            "/public/a",
            headers={"traceparent": f"00-{trace}-b7ad6b7169203331-01", "X-Request-Id": "req-42"},
        )
        upstream = w.upstream.seen[-1]["headers"]
        assert upstream["x-request-id"] == "req-42"
        parts = upstream["traceparent"].split("-")
        assert parts[1] == trace
        assert parts[2] != "b7ad6b7169203331"
        assert r.headers["x-request-id"] == "req-42"
        assert r.headers["traceparent"].split("-")[1] == trace


async def test_request_id_is_generated_when_missing_or_malformed() -> None:
    async with World() as w:
        r = await w.client.get("/public/a", headers={"X-Request-Id": "bad id; not allowed"})
        made = r.headers["x-request-id"]
        assert made != "bad id; not allowed"
        assert w.upstream.seen[-1]["headers"]["x-request-id"] == made


async def test_idempotent_post_is_replayed_and_tenant_scoped() -> None:
    """The same key replays the first answer; another tenant's same key runs anew."""
    async with World() as w:
        key = {"Idempotency-Key": '"k-1"'}
        first = await w.client.post(
            "/orders/1/refunds", json={"amount": 5}, headers=key, auth=w.auth()
        )
        again = await w.client.post(
            "/orders/1/refunds", json={"amount": 5}, headers=key, auth=w.auth()
        )
        assert first.status_code == again.status_code == 200
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json() == first.json()
        assert w.upstream.calls == 1
        other = w.auth(w.coupon(tenant="globex"))
        fresh = await w.client.post(
            "/orders/1/refunds", json={"amount": 5}, headers=key, auth=other
        )
        assert "idempotent-replayed" not in fresh.headers
        assert w.upstream.calls == 2
        changed = await w.client.post(
            "/orders/1/refunds", json={"amount": 6}, headers=key, auth=w.auth()
        )
        assert changed.status_code == 422
        assert _code(changed) == codes.IDEM_REUSED.code


async def test_tenant_over_the_hard_limit_is_429() -> None:
    config = routes_file()
    config["limits"] = {"default": {"soft_per_s": 1, "hard_per_s": 2, "burst": 3}}
    async with World(config) as w:
        auth = w.auth()
        statuses = [(await w.client.get("/orders/1", auth=auth)) for _ in range(5)]
        assert [r.status_code for r in statuses[:3]] == [200, 200, 200]
        refused = statuses[3]
        assert refused.status_code == 429
        assert _code(refused) == codes.RATE_TENANT.code
        assert int(refused.headers["retry-after"]) >= 1
        assert "r=0" in refused.headers["ratelimit"]
        assert w.upstream.calls == 3


async def test_tenant_over_the_soft_limit_is_admitted_and_flagged() -> None:
    config = routes_file()
    config["limits"] = {"default": {"soft_per_s": 0.5, "hard_per_s": 10_000, "burst": 2}}
    async with World(config) as w:
        auth = w.auth()
        answers = [(await w.client.get("/orders/1", auth=auth)) for _ in range(4)]
        assert [r.status_code for r in answers] == [200] * 4
        assert [r.headers.get("x-ratelimit-soft") for r in answers] == [
            None,
            None,
            "exceeded",
            "exceeded",
        ]
        assert (
            w.metric("coupon_ratelimit_decisions_total", {"policy": "default", "outcome": "soft"})
            == 2
        )


async def test_authority_unreachable_is_503_never_401() -> None:
    """No keys could ever be fetched: fail closed as unavailable, with Retry-After."""
    w = World()
    w.authority.up = False  # down from the gateway's start
    async with w:
        r = await w.client.get("/orders/1", auth=w.auth())
        assert r.status_code == 503
        assert r.headers["retry-after"] == "1"
        assert w.upstream.calls == 0
        assert (await w.client.get("/_coupon/readyz")).status_code == 503
        assert (await w.client.get("/public/a")).status_code == 200  # no coupon needed


async def test_operator_endpoints() -> None:
    async with World() as w:
        await w.client.get("/orders/1", auth=w.auth())
        assert (await w.client.get("/_coupon/healthz")).text == "ok\n"
        assert (await w.client.get("/_coupon/readyz")).status_code == 200
        metrics = (await w.client.get("/_coupon/metrics")).text
        assert 'coupon_gateway_requests_total{method="GET",route="/orders/{order_id}"' in metrics
        assert "coupon_resilience_attempts_total" in metrics
        assert "coupon_ratelimit_decisions_total" in metrics


async def test_revoked_coupon_is_refused() -> None:
    async with World() as w:
        coupon = w.coupon()
        assert (await w.client.get("/orders/1", auth=w.auth(coupon))).status_code == 200
        jti = parse_chain(coupon, max_size=8192, max_depth=8)[-1].claims.jti
        w.authority.revoked.append(
            {"seq": 1, "kind": "jti", "value": jti, "reason": "test", "revoked_at": 1}
        )
        await w.gateway.verifier.revocations.pull()
        r = await w.client.get("/orders/1", auth=w.auth(coupon))
        assert r.status_code == 401
        assert 'error="invalid_token"' in r.headers["www-authenticate"]


async def test_control_characters_in_a_header_are_refused() -> None:
    """A field value the gateway could not pass on as it is gets 400, never a 500."""
    async with World() as w:
        r = await w.client.get("/public/a", headers={"X-Note": "a\x7fb"})
        assert r.status_code == 400
        assert r.json()["code"] == codes.GATEWAY_HEADER.code
        assert w.upstream.calls == 0
