"""``/_coupon/check``: the decision nginx's ``auth_request`` understands (2xx, 401, 403)."""

from __future__ import annotations

import httpx
import pytest
from tests.gateway.world import EDGE, World, routes_file

from coupon import codes
from coupon.sdk import DPoPAuth

pytestmark = pytest.mark.asyncio


class AsOriginal(httpx.Auth):
    """Signs the DPoP proof for the client's URL, then sends it to the check endpoint."""

    def __init__(self, dpop: DPoPAuth, method: str, uri: str) -> None:
        self.dpop, self.method, self.uri = dpop, method, uri

    def auth_flow(self, request: httpx.Request):  # type: ignore[no-untyped-def]
        original = httpx.Request(self.method, EDGE + self.uri)
        signed = next(self.dpop.auth_flow(original))
        request.headers["authorization"] = signed.headers["authorization"]
        request.headers["dpop"] = signed.headers["dpop"]
        yield request


async def _check(
    w: World, method: str, uri: str, *, auth: DPoPAuth | None = None, **headers: str
) -> httpx.Response:
    fields = {"X-Original-Method": method, "X-Original-URI": uri, **headers}
    flow = AsOriginal(auth, method, uri) if auth is not None else None
    return await w.client.get("/_coupon/check", headers=fields, auth=flow)


async def test_allowed_is_204_with_identity_and_limits() -> None:
    async with World() as w:
        r = await _check(w, "GET", "/orders/1?x=1", auth=w.auth())
        assert r.status_code == 204, r.text
        assert r.headers["x-coupon-subject"] == "alice"
        assert r.headers["x-coupon-tenant"] == "acme"
        assert r.headers["x-coupon-id"]
        assert r.headers["ratelimit-policy"].startswith('"tenant"')
        assert w.upstream.calls == 0  # the check never forwards


async def test_public_route_is_204_without_identity() -> None:
    async with World() as w:
        r = await _check(w, "GET", "/public/a")
        assert r.status_code == 204
        assert "x-coupon-tenant" not in r.headers


async def test_missing_coupon_is_a_plain_401_challenge() -> None:
    async with World() as w:
        r = await _check(w, "GET", "/orders/1")
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("DPoP ")
        assert "x-coupon-status" not in r.headers


async def test_wider_request_is_403() -> None:
    async with World() as w:
        r = await _check(w, "GET", "/orders/2", auth=w.auth())
        assert r.status_code == 403
        assert 'error="insufficient_scope"' in r.headers["www-authenticate"]


@pytest.mark.parametrize(
    ("method", "uri", "status"),
    [
        ("GET", "/nowhere", 404),
        ("DELETE", "/orders/1", 405),
        ("GET", "/public/a%2Fb", 400),
        ("GET", "", 400),
    ],
)
async def test_other_refusals_become_403_with_the_real_status(
    method: str, uri: str, status: int
) -> None:
    async with World() as w:
        r = await _check(w, method, uri)
        assert r.status_code == 403
        assert r.headers["x-coupon-status"] == str(status)


async def test_throttled_tenant_is_403_carrying_429_and_retry_after() -> None:
    config = routes_file()
    config["limits"] = {"default": {"soft_per_s": 1, "hard_per_s": 1, "burst": 1}}
    async with World(config) as w:
        auth = w.auth()
        assert (await _check(w, "GET", "/orders/1", auth=auth)).status_code == 204
        r = await _check(w, "GET", "/orders/1", auth=auth)
        assert r.status_code == 403
        assert r.headers["x-coupon-status"] == "429"
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["code"] == codes.RATE_TENANT.code


async def test_proof_for_another_uri_is_refused() -> None:
    """The DPoP htu is checked against the original URI, not the check endpoint's."""
    async with World() as w:
        dpop = w.auth()
        fields = {"X-Original-Method": "GET", "X-Original-URI": "/orders/1"}
        signed = next(dpop.auth_flow(httpx.Request("GET", EDGE + "/other")))
        fields["Authorization"] = signed.headers["authorization"]
        fields["DPoP"] = signed.headers["dpop"]
        r = await w.client.get("/_coupon/check", headers=fields)
        assert r.status_code == 401
        assert 'error="invalid_dpop_proof"' in r.headers["www-authenticate"]


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ({"X-Original-Content-Length": "65", "Content-Type": "application/json"}, 413),
        ({"X-Original-Content-Length": "2", "Content-Type": "text/plain"}, 415),
        ({"X-Original-Transfer-Encoding": "chunked"}, 415),
        ({"X-Original-Content-Length": "2", "Content-Type": "application/json"}, 204),
        ({"X-Original-Content-Length": "", "Content-Type": "text/plain"}, 204),  # no body
    ],
)
async def test_route_body_rules_apply(fields: dict[str, str], status: int) -> None:
    """nginx sends the client's body fields as X-Original-*: size and media type are checked."""
    async with World() as w:
        r = await _check(w, "POST", "/orders/1/refunds", auth=w.auth(), **fields)
        if status == 204:
            assert r.status_code == 204, r.text
        else:
            assert r.status_code == 403
            assert r.headers["x-coupon-status"] == str(status)


async def test_only_the_allowed_networks_may_ask() -> None:
    """Anyone else is told there is no such endpoint: the check trusts X-Original-*."""
    async with World() as w:
        outside = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=w.gateway, client=("203.0.113.9", 4000)),
            base_url=EDGE,
        )
        async with outside:
            r = await outside.get(
                "/_coupon/check",
                headers={"X-Original-Method": "GET", "X-Original-URI": "/public/a"},
            )
        assert r.status_code == 404
        assert r.json()["code"] == codes.GATEWAY_NO_ROUTE.code
    config = routes_file()
    config["gateway"]["check_from"] = ["203.0.113.0/24"]
    async with World(config) as w:
        assert (await _check(w, "GET", "/public/a")).status_code == 404  # loopback now outside
