"""Chaos toward the upstream: timeouts, 5xx storms and slow answers open the breaker, and
then the gateway fails fast without calling the upstream (seed 003 §8.2)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from tests.gateway.world import World, closed_port, routes_file

from coupon import codes

pytestmark = pytest.mark.asyncio

# Small numbers so a test takes well under a second: 100 ms per attempt, 250 ms overall,
# the breaker opening at half failures of at least 4 calls, for 0.5 s.
FAST = {
    "timeout": 0.25,
    "attempt_timeout": 0.1,
    "retry": {"max_retries": 1, "base_delay": 0.0, "jitter": 0.0, "budget": False},
    "breaker": {"failure_ratio": 0.5, "min_throughput": 4, "break_duration": 0.5, "window": 10},
}


def _world() -> World:
    return World(routes_file(**FAST))


async def _gets(w: World, n: int) -> list[httpx.Response]:
    return [await w.client.get("/public/x") for _ in range(n)]


async def test_timeouts_open_the_breaker_then_fail_fast() -> None:
    async with _world() as w:
        w.upstream.delay = 1.0
        started = time.perf_counter()
        slow = await _gets(w, 4)
        assert [r.status_code for r in slow] == [504] * 4
        assert {r.json()["code"] for r in slow} == {codes.GATEWAY_TIMEOUT.code}
        # Each call was bounded by the overall timeout, not the upstream's second.
        assert time.perf_counter() - started < 4 * 0.25 + 0.5
        calls = w.upstream.calls
        started = time.perf_counter()
        fast = await _gets(w, 20)
        elapsed = time.perf_counter() - started
        assert {r.status_code for r in fast} == {503}
        assert {r.json()["code"] for r in fast} == {codes.RES_CIRCUIT_OPEN.code}
        assert all(int(r.headers["retry-after"]) >= 1 for r in fast)
        assert w.upstream.calls == calls  # open: nothing reached the upstream
        assert elapsed < 0.5  # 20 refusals without waiting on anything
        assert w.metric("coupon_resilience_breaker_state", {"pipeline": "upstream-orders"}) == 2


async def test_5xx_storm_opens_the_breaker_and_passes_the_last_answer_on() -> None:
    async with _world() as w:
        w.upstream.status = 503
        storm = await _gets(w, 4)
        # The upstream's own 503 comes back (its body), after one retry each.
        assert [r.status_code for r in storm] == [503] * 4
        assert all(r.json() == {"upstream": "failing"} for r in storm)
        assert w.upstream.calls == 8
        refused = await w.client.get("/public/x")
        assert refused.json()["code"] == codes.RES_CIRCUIT_OPEN.code
        assert w.upstream.calls == 8


async def test_breaker_recovers_through_a_half_open_probe() -> None:
    async with _world() as w:
        w.upstream.status = 500
        await _gets(w, 4)
        assert (await w.client.get("/public/x")).json()["code"] == codes.RES_CIRCUIT_OPEN.code
        w.upstream.status = None
        await asyncio.sleep(0.55)
        probe = await w.client.get("/public/x")
        assert probe.status_code == 200
        assert [r.status_code for r in await _gets(w, 3)] == [200] * 3
        assert w.metric("coupon_resilience_breaker_state", {"pipeline": "upstream-orders"}) == 0


async def test_post_without_key_is_never_repeated() -> None:
    """A POST that may have had its effect runs once, even when the pipeline retries."""
    async with _world() as w:
        w.upstream.status = 503
        r = await w.client.post("/orders/1/refunds", json={"a": 1}, auth=w.auth())
        assert r.status_code == 503
        assert w.upstream.calls == 1


async def test_post_with_idempotency_key_is_retried() -> None:
    async with _world() as w:
        w.upstream.status = 503
        await w.client.post(
            "/orders/1/refunds",
            json={"a": 1},
            headers={"Idempotency-Key": '"retry-me"'},
            auth=w.auth(),
        )
        assert w.upstream.calls == 2
        # A 5xx is not stored: the key is free again and a later try runs.
        w.upstream.status = None
        ok = await w.client.post(
            "/orders/1/refunds",
            json={"a": 1},
            headers={"Idempotency-Key": '"retry-me"'},
            auth=w.auth(),
        )
        assert ok.status_code == 200
        assert "idempotent-replayed" not in ok.headers


async def test_unreachable_upstream_is_502() -> None:
    config = routes_file(**FAST)
    config["upstreams"]["orders"]["url"] = f"http://127.0.0.1:{closed_port()}"
    async with World(config) as w:
        r = await w.client.get("/public/x")
        assert r.status_code == 502
        assert r.json()["code"] == codes.GATEWAY_UPSTREAM.code


async def test_slow_answers_within_the_deadline_still_arrive() -> None:
    """Slow but inside the attempt timeout is not a failure."""
    async with _world() as w:
        w.upstream.delay = 0.03
        answers = await _gets(w, 5)
        assert [r.status_code for r in answers] == [200] * 5
        assert w.metric("coupon_resilience_breaker_state", {"pipeline": "upstream-orders"}) == 0


async def test_bulkhead_full_fails_fast() -> None:
    config = routes_file(
        timeout=2.0, attempt_timeout=1.0, bulkhead={"max_concurrent": 2, "max_queue": 0}
    )
    async with World(config) as w:
        w.upstream.delay = 0.3
        answers = await asyncio.gather(*(w.client.get("/public/x") for _ in range(5)))
        statuses = sorted(r.status_code for r in answers)
        assert statuses == [200, 200, 503, 503, 503]
        full = [r for r in answers if r.status_code == 503]
        assert {r.json()["code"] for r in full} == {codes.RES_BULKHEAD_FULL.code}


async def test_over_max_in_flight_is_shed_at_once() -> None:
    """Past max_in_flight a request is refused before any work, with Retry-After."""
    config = routes_file(timeout=2.0, attempt_timeout=1.0)
    config["gateway"]["max_in_flight"] = 2
    async with World(config) as w:
        w.upstream.delay = 0.3
        answers = await asyncio.gather(*(w.client.get("/public/x") for _ in range(5)))
        assert sorted(r.status_code for r in answers) == [200, 200, 503, 503, 503]
        shed = [r for r in answers if r.status_code == 503]
        assert {r.json()["code"] for r in shed} == {codes.GATEWAY_BUSY.code}
        assert all(r.headers["retry-after"] == "1" for r in shed)
        assert w.upstream.calls == 2
        assert w.metric("coupon_gateway_shed_total") == 3
        assert w.metric("coupon_gateway_in_flight") == 0
        assert (await w.client.get("/_coupon/healthz")).status_code == 200  # never shed
