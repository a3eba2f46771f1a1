"""The service-side guard: proceed, replay, reuse, in flight, release, expiry, metrics."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry
from tests.idempotency.idem_support import KEY, FakeClock, StoreCase

from coupon import codes
from coupon.errors import Conflict, InvalidRequest
from coupon.idempotency import (
    IdempotencyGuard,
    MemoryIdempotencyStore,
    Proceed,
    Replay,
    StoredResponse,
)
from coupon.observability import IdempotencyMetrics

BODY = b'{"sku":"x","qty":1}'


def _proceed(result: object) -> Proceed:
    assert isinstance(result, Proceed)
    return result


@pytest.mark.asyncio
class TestGuard:
    async def test_first_proceeds_then_replays(self, store_case: StoreCase) -> None:
        guard = IdempotencyGuard(store_case.store)
        first = _proceed(await guard.begin("acme", KEY, "POST", "/orders", BODY))
        answer = guard.response(201, (("content-type", "application/json"),), b'{"id":7}')
        assert await guard.complete(first.token, answer)
        again = await guard.begin("acme", KEY, "POST", "/orders", BODY)
        assert isinstance(again, Replay)
        assert again.response == answer

    async def test_tenants_are_separate(self, store_case: StoreCase) -> None:
        guard = IdempotencyGuard(store_case.store)
        _proceed(await guard.begin("acme", KEY, "POST", "/orders", BODY))
        _proceed(await guard.begin("globex", KEY, "POST", "/orders", BODY))

    @pytest.mark.parametrize(
        ("method", "route", "body"),
        [("POST", "/orders", b"{}"), ("PATCH", "/orders", BODY), ("POST", "/other", BODY)],
    )
    async def test_other_payload_is_422(
        self, store_case: StoreCase, method: str, route: str, body: bytes
    ) -> None:
        guard = IdempotencyGuard(store_case.store)
        first = _proceed(await guard.begin("acme", KEY, "POST", "/orders", BODY))
        for _ in range(2):  # in flight, then completed
            with pytest.raises(InvalidRequest) as info:
                await guard.begin("acme", KEY, method, route, body)
            assert info.value.code is codes.IDEM_REUSED
            assert info.value.code.status == 422
            await guard.complete(first.token, guard.response(200, (), b"ok"))

    async def test_in_flight_is_409(self, store_case: StoreCase) -> None:
        guard = IdempotencyGuard(store_case.store)
        _proceed(await guard.begin("acme", KEY, "POST", "/orders", BODY))
        with pytest.raises(Conflict) as info:
            await guard.begin("acme", KEY, "POST", "/orders", BODY)
        assert info.value.code is codes.IDEM_IN_FLIGHT
        assert info.value.code.status == 409

    async def test_abandon_releases(self, store_case: StoreCase) -> None:
        guard = IdempotencyGuard(store_case.store)
        first = _proceed(await guard.begin("acme", KEY, "POST", "/orders", BODY))
        await guard.abandon(first.token)
        _proceed(await guard.begin("acme", KEY, "POST", "/orders", BODY))

    @pytest.mark.parametrize("status", [500, 502, 503])
    async def test_5xx_releases(self, store_case: StoreCase, status: int) -> None:
        guard = IdempotencyGuard(store_case.store)
        first = _proceed(await guard.begin("acme", KEY, "POST", "/orders", BODY))
        assert not await guard.complete(first.token, guard.response(status, (), b"oops"))
        _proceed(await guard.begin("acme", KEY, "POST", "/orders", BODY))

    async def test_4xx_is_stored(self, store_case: StoreCase) -> None:
        guard = IdempotencyGuard(store_case.store)
        first = _proceed(await guard.begin("acme", KEY, "POST", "/orders", BODY))
        assert await guard.complete(first.token, guard.response(409, (), b"sold out"))
        again = await guard.begin("acme", KEY, "POST", "/orders", BODY)
        assert isinstance(again, Replay)
        assert again.response.status == 409

    async def test_large_body_is_not_stored(self, store_case: StoreCase) -> None:
        guard = IdempotencyGuard(store_case.store, max_stored_body=10)
        first = _proceed(await guard.begin("acme", KEY, "POST", "/orders", BODY))
        assert not await guard.complete(first.token, guard.response(200, (), b"x" * 11))
        _proceed(await guard.begin("acme", KEY, "POST", "/orders", BODY))

    async def test_lease_expiry(self, store_case: StoreCase) -> None:
        """A worker that never completes does not block the key forever."""
        guard = IdempotencyGuard(store_case.store, lease=0.1)
        crashed = _proceed(await guard.begin("acme", KEY, "POST", "/orders", BODY))
        await store_case.wait(0.25)
        retry = _proceed(await guard.begin("acme", KEY, "POST", "/orders", BODY))
        assert not await guard.complete(crashed.token, guard.response(200, (), b"late"))
        assert await guard.complete(retry.token, guard.response(200, (), b"fresh"))

    async def test_ttl_expiry(self, store_case: StoreCase) -> None:
        guard = IdempotencyGuard(store_case.store, ttl=0.1)
        first = _proceed(await guard.begin("acme", KEY, "POST", "/orders", BODY))
        await guard.complete(first.token, guard.response(200, (), b"ok"))
        await store_case.wait(0.25)
        _proceed(await guard.begin("acme", KEY, "POST", "/orders", BODY))

    async def test_invalid_key(self, store_case: StoreCase) -> None:
        guard = IdempotencyGuard(store_case.store)
        with pytest.raises(InvalidRequest) as info:
            await guard.begin("acme", "unquoted", "POST", "/orders", BODY)
        assert info.value.code is codes.IDEM_KEY


class TestGuardMisc:
    def test_misuse(self) -> None:
        with pytest.raises(ValueError, match="positive"):
            IdempotencyGuard(MemoryIdempotencyStore(), ttl=0)

    def test_response_uses_clock(self) -> None:
        guard = IdempotencyGuard(MemoryIdempotencyStore(), clock=FakeClock(5.0))
        assert guard.response(200, (), b"") == StoredResponse(200, (), b"", 5.0)

    @pytest.mark.asyncio
    async def test_metrics(self) -> None:
        registry = CollectorRegistry()
        guard = IdempotencyGuard(MemoryIdempotencyStore(), hooks=[IdempotencyMetrics(registry)])
        first = _proceed(await guard.begin("t", KEY, "POST", "/o", BODY))
        with pytest.raises(Conflict):
            await guard.begin("t", KEY, "POST", "/o", BODY)
        with pytest.raises(InvalidRequest):
            await guard.begin("t", KEY, "POST", "/o", b"other")
        with pytest.raises(InvalidRequest):
            await guard.begin("t", "bad", "POST", "/o", BODY)
        await guard.complete(first.token, guard.response(200, (), b"ok"))
        await guard.begin("t", KEY, "POST", "/o", BODY)
        counts = {
            outcome: registry.get_sample_value("coupon_idempotency_total", {"outcome": outcome})
            for outcome in ("proceed", "replay", "conflict", "reused", "invalid")
        }
        assert counts == {
            "proceed": 1.0,
            "replay": 1.0,
            "conflict": 1.0,
            "reused": 1.0,
            "invalid": 1.0,
        }
