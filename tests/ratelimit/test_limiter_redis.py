"""The limiter against real Redis: shared limits, soft flags, expiry, NOSCRIPT, and outages.

The shared server is ``COUPON_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``); each
test uses a random key prefix and deletes only its keys. When it is unreachable the tests
skip, except under ``CI=true``, where they fail. The outage tests start a private
``redis-server`` on a free port, kill it and start it again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import redis
from tests.redis_fixtures import PrivateRedis, free_port

from coupon.errors import RateLimited
from coupon.observability import RateLimitMetrics
from coupon.ratelimit import (
    DegradedChanged,
    RateLimitConfig,
    RateLimiter,
    RateLimitEvent,
    RedisGcra,
    TenantLimits,
    raise_for,
    redis_client,
)

LIMITS = TenantLimits(soft_per_s=1, hard_per_s=2, burst=8, window=10, name="std")


@pytest_asyncio.fixture
async def gcra_store(redis_url: str, redis_prefix: str) -> AsyncIterator[RedisGcra]:
    """A Redis GCRA on the shared server under the test's prefix."""
    store = RedisGcra(redis_client(redis_url, timeout=0.5), prefix=redis_prefix)
    yield store
    await store.close()


class TestSharedRedis:
    """Limits shared by every limiter that uses the same Redis and prefix."""

    @pytest.mark.asyncio
    async def test_two_replicas_share_the_hard_limit(self, gcra_store: RedisGcra) -> None:
        """Two limiters together admit one burst, then refuse with retry_after."""
        config = RateLimitConfig(TenantLimits(1, 1, 3, window=60))
        a, b = RateLimiter(config, redis=gcra_store), RateLimiter(config, redis=gcra_store)
        decisions = [await (a if i % 2 else b).check("t1") for i in range(4)]
        assert [d.allowed for d in decisions] == [True, True, True, False]
        assert [d.remaining for d in decisions] == [2, 1, 0, 0]
        refused = decisions[-1]
        assert not refused.degraded
        assert 0 < refused.retry_after <= 1.0
        assert (refused.limit, refused.window) == (60, 60)
        with pytest.raises(RateLimited) as info:
            raise_for(refused)
        assert info.value.retry_after == refused.retry_after
        other = await a.check("t2")
        assert other.allowed  # tenants are apart
        assert (await a.check("t1", "other")).allowed  # so are route keys

    @pytest.mark.asyncio
    async def test_soft_flag(self, gcra_store: RedisGcra) -> None:
        """Soft burst spent: admitted and flagged, until the hard limit refuses."""
        limiter = RateLimiter(RateLimitConfig(TenantLimits(0.1, 1, 2)), redis=gcra_store)
        flags = [(d.allowed, d.soft_exceeded) for d in [await limiter.check("t") for _ in range(3)]]
        assert flags == [(True, False), (True, False), (False, False)]
        limiter = RateLimiter(RateLimitConfig(TenantLimits(0.1, 1000, 2)), redis=gcra_store)
        flags = [(d.allowed, d.soft_exceeded) for d in [await limiter.check("u") for _ in range(2)]]
        await asyncio.sleep(0.005)  # the hard limit (1 ms per cell) refills; the soft does not
        later = await limiter.check("u")
        assert flags == [(True, False), (True, False)]
        assert (later.allowed, later.soft_exceeded, later.outcome) == (True, True, "soft")

    @pytest.mark.asyncio
    async def test_key_layout_and_expiry(
        self, gcra_store: RedisGcra, redis_prefix: str, redis_url: str
    ) -> None:
        """One hash per tenant and key, expiring when the bucket is full again."""
        limiter = RateLimiter(RateLimitConfig(TenantLimits(1, 1, 1)), redis=gcra_store)
        await limiter.check("acme", "mint")
        client = redis.Redis.from_url(redis_url)
        try:
            assert client.hkeys(f"{redis_prefix}rl:acme:mint") == [b"h", b"s"]
            assert 0 < client.pttl(f"{redis_prefix}rl:acme:mint") <= 1001
        finally:
            client.close()

    @pytest.mark.asyncio
    async def test_bad_arguments(self, gcra_store: RedisGcra) -> None:
        """Tenant and key names are checked; cost must fit the burst."""
        limiter = RateLimiter(RateLimitConfig(TenantLimits(1, 1, 2)), redis=gcra_store)
        with pytest.raises(ValueError, match="tenant"):
            await limiter.check("a:b")
        with pytest.raises(ValueError, match="cost"):
            await limiter.check("a", cost=3)


@pytest.mark.asyncio
async def test_noscript_falls_back_to_eval(private_redis: PrivateRedis) -> None:
    """After SCRIPT FLUSH the check still works (EVAL), and EVALSHA works again after."""
    store = RedisGcra(redis_client(private_redis.url))
    limiter = RateLimiter(RateLimitConfig(TenantLimits(1, 1, 5)), redis=store)
    await store.load()
    assert (await limiter.check("t")).remaining == 4
    client = redis.Redis(port=private_redis.port)
    try:
        client.script_flush()
        assert (await limiter.check("t")).remaining == 3
        assert client.script_exists(store.sha) == [True]
    finally:
        client.close()
        await store.close()


@pytest.mark.asyncio
async def test_redis_dies_mid_test(private_redis: PrivateRedis) -> None:
    """Kill Redis: degraded at limit/replicas, hooks told; restart: back to Redis."""
    events: list[RateLimitEvent] = []
    metrics = RateLimitMetrics()
    now = [0.0]
    store = RedisGcra(redis_client(private_redis.url, timeout=0.1))
    limiter = RateLimiter(
        RateLimitConfig(LIMITS, replicas=4),
        redis=store,
        hooks=[events.append, metrics],
        clock=lambda: now[0],
    )
    try:
        healthy = await limiter.check("t")
        assert healthy.allowed
        assert not healthy.degraded
        assert (healthy.limit, healthy.remaining) == (20, 7)

        private_redis.kill()
        started = time.monotonic()
        down = [await limiter.check("t") for _ in range(3)]
        assert time.monotonic() - started < 1.0  # fail fast, no retry storm
        assert all(d.degraded for d in down)
        assert [d.allowed for d in down] == [True, True, False]  # burst 8 // 4
        assert down[0].limit == 5  # 20 per 10 s / 4 replicas
        assert down[-1].retry_after > 0
        assert limiter.degraded
        assert [e for e in events if isinstance(e, DegradedChanged)] == [
            DegradedChanged(True, "ConnectionError")
        ]
        assert metrics.registry.get_sample_value("coupon_ratelimit_degraded") == 1
        sample = metrics.registry.get_sample_value(
            "coupon_ratelimit_decisions_total", {"policy": "std", "outcome": "hard"}
        )
        assert sample == 1

        private_redis.start()
        still = await limiter.check("t")  # no probe before a second has passed
        assert still.degraded
        now[0] += 1.0
        back = await limiter.check("t")
        assert not back.degraded
        assert back.allowed
        assert back.limit == 20
        assert not limiter.degraded
        assert events[-2] == DegradedChanged(False)
        assert metrics.registry.get_sample_value("coupon_ratelimit_degraded") == 0
    finally:
        await store.close()


@pytest.mark.asyncio
async def test_unreachable_from_the_start_never_raises() -> None:
    """A Redis that never answers: every check is decided in-process, none raises."""
    store = RedisGcra(redis_client(f"redis://127.0.0.1:{free_port()}/0", timeout=0.05))
    limiter = RateLimiter(RateLimitConfig(TenantLimits(1, 1, 2), replicas=2), redis=store)
    try:
        decisions = await asyncio.gather(*(limiter.check("t") for _ in range(3)))
        assert all(d.degraded for d in decisions)
        assert [d.allowed for d in decisions] == [True, False, False]
    finally:
        await store.close()


@pytest.mark.asyncio
async def test_embedded_mode_is_local_and_not_degraded() -> None:
    """Without Redis the limiter enforces the full limits in-process."""
    limiter = RateLimiter(RateLimitConfig(TenantLimits(1, 1, 2), replicas=4))
    decisions = [await limiter.check("t") for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, True, False]
    assert not any(d.degraded for d in decisions)
