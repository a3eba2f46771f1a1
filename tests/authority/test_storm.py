"""Replay-storm protection: per-coupon and per-subject limits, in memory and in Redis."""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio

from coupon import codes
from coupon.authority._replay import redis_client
from coupon.authority._storm import MemoryStormGuard, RedisStormGuard, StormGuard
from coupon.errors import DependencyUnavailable, RateLimited

NOW = 1_700_000_000.0

Factory = Callable[..., StormGuard]


@pytest_asyncio.fixture(params=["memory", "redis"])
async def make_guard(request: pytest.FixtureRequest) -> AsyncIterator[Factory]:
    """Build guards of one implementation; Redis guards share this test's key prefix."""
    if request.param == "memory":
        yield lambda **limits: MemoryStormGuard(**limits)
        return
    url: str = request.getfixturevalue("redis_url")
    prefix: str = request.getfixturevalue("redis_prefix")
    client = redis_client(url)
    yield lambda **limits: RedisStormGuard(client, prefix=prefix, **limits)
    await client.aclose()


async def admitted(guard: StormGuard, jti: str, subject: str, now: float) -> bool:
    try:
        await guard.admit(jti, subject, now=now)
    except RateLimited:
        return False
    return True


class TestLimits:
    @pytest.mark.asyncio
    async def test_is_a_storm_guard(self, make_guard: Factory) -> None:
        """Both implementations satisfy the protocol."""
        assert isinstance(make_guard(per_coupon=1, per_subject=1), StormGuard)

    @pytest.mark.asyncio
    async def test_per_coupon(self, make_guard: Factory) -> None:
        """A burst of `limit` verifications of one coupon passes; the next is shed (429)."""
        guard = make_guard(per_coupon=5, per_subject=100)
        for _ in range(5):
            await guard.admit("c1", "alice", now=NOW)
        with pytest.raises(RateLimited) as info:
            await guard.admit("c1", "alice", now=NOW)
        assert info.value.code is codes.RATE_COUPON
        assert info.value.code.status == 429
        assert info.value.retry_after == pytest.approx(0.2)
        await guard.admit("c2", "alice", now=NOW)  # another coupon is unaffected

    @pytest.mark.asyncio
    async def test_retry_after_is_exact(self, make_guard: Factory) -> None:
        """Retrying after retry_after passes; a microsecond earlier it does not."""
        guard = make_guard(per_coupon=4, per_subject=100)
        for _ in range(4):
            await guard.admit("c1", "alice", now=NOW)
        with pytest.raises(RateLimited) as info:
            await guard.admit("c1", "alice", now=NOW + 0.1)
        wait = info.value.retry_after
        assert wait == pytest.approx(0.15)
        assert not await admitted(guard, "c1", "alice", NOW + 0.1 + wait - 1e-5)
        assert await admitted(guard, "c1", "alice", NOW + 0.1 + wait)

    @pytest.mark.asyncio
    async def test_per_subject(self, make_guard: Factory) -> None:
        """Many coupons of one subject share the subject's budget."""
        guard = make_guard(per_coupon=100, per_subject=3)
        for i in range(3):
            await guard.admit(f"c{i}", "alice", now=NOW)
        with pytest.raises(RateLimited) as info:
            await guard.admit("c9", "alice", now=NOW)
        assert info.value.code is codes.RATE_SUBJECT
        assert info.value.retry_after == pytest.approx(1 / 3, abs=1e-5)
        await guard.admit("c9", "bob", now=NOW)

    @pytest.mark.asyncio
    async def test_refusals_cost_nothing(self, make_guard: Factory) -> None:
        """A request shed for its coupon does not use up its subject's budget."""
        guard = make_guard(per_coupon=1, per_subject=2)
        await guard.admit("hot", "alice", now=NOW)
        for _ in range(10):
            assert not await admitted(guard, "hot", "alice", NOW)
        assert await admitted(guard, "other", "alice", NOW)

    @pytest.mark.asyncio
    async def test_both_exhausted_reports_the_coupon_and_the_longer_wait(
        self, make_guard: Factory
    ) -> None:
        """When both limits are hit the code is the coupon's and retry_after covers both."""
        guard = make_guard(per_coupon=2, per_subject=2)
        await guard.admit("c", "s", now=NOW)
        await guard.admit("c", "s", now=NOW)
        with pytest.raises(RateLimited) as info:
            await guard.admit("c", "s", now=NOW)
        assert info.value.code is codes.RATE_COUPON
        assert info.value.retry_after == pytest.approx(0.5)

    @pytest.mark.asyncio
    async def test_never_past_the_limit(self, make_guard: Factory) -> None:
        """Under a random storm no interval [a, b] admits more than limit * (1 + (b - a))."""
        guard = make_guard(per_coupon=20, per_subject=1000)
        rng = random.Random(7)
        times = sorted(NOW + rng.uniform(0, 3) for _ in range(600))
        passed = [t for t in times if await admitted(guard, "c", "s", t)]
        assert 40 <= len(passed) <= 20 * 4
        for i, start in enumerate(passed):
            for j in range(i, len(passed)):
                assert j - i + 1 <= 20 * (1 + (passed[j] - start)) + 1e-9

    @pytest.mark.asyncio
    async def test_misuse(self, make_guard: Factory) -> None:
        """A zero limit is a programming error."""
        with pytest.raises(ValueError, match="positive"):
            make_guard(per_coupon=0, per_subject=1)


class TestRedis:
    @pytest.mark.asyncio
    async def test_processes_share_the_budget(self, redis_url: str, redis_prefix: str) -> None:
        """Two guards on separate connections (two processes) draw on one budget."""
        a = RedisStormGuard.from_url(redis_url, per_coupon=4, per_subject=100, prefix=redis_prefix)
        b = RedisStormGuard.from_url(redis_url, per_coupon=4, per_subject=100, prefix=redis_prefix)
        try:
            results = [await admitted(g, "c", "s", NOW) for g in (a, b, a, b, a, b)]
        finally:
            await a.close()
            await b.close()
        assert results == [True] * 4 + [False] * 2

    @pytest.mark.asyncio
    async def test_keys_expire(self, redis_url: str, redis_prefix: str) -> None:
        """Idle keys are gone once their TAT passes, so Redis memory stays bounded."""
        client = redis_client(redis_url)
        try:
            guard = RedisStormGuard(client, per_coupon=100, per_subject=100, prefix=redis_prefix)
            await guard.admit("c", "s", now=time.time())
            assert 0 < await client.pttl(f"{redis_prefix}c:c") <= 12
        finally:
            await client.aclose()

    @pytest.mark.asyncio
    async def test_unreachable_fails_closed(self, closed_port: int) -> None:
        """Redis on a closed port: CPN-DEP-002 (503), never an admitted request."""
        guard = RedisStormGuard.from_url(
            f"redis://127.0.0.1:{closed_port}/0", per_coupon=1, per_subject=1, timeout=0.5
        )
        try:
            with pytest.raises(DependencyUnavailable) as info:
                await guard.admit("c", "s", now=NOW)
        finally:
            await guard.close()
        assert info.value.code is codes.UNAVAILABLE_REPLAY


class TestMemory:
    @pytest.mark.asyncio
    async def test_memory_is_bounded(self) -> None:
        """Keys whose TAT has passed are dropped as new ones arrive."""
        guard = MemoryStormGuard(per_coupon=10, per_subject=10)
        for i in range(1000):
            await guard.admit(f"c{i}", f"s{i}", now=NOW + i)
        assert len(guard) <= 4

    @pytest.mark.asyncio
    async def test_full_of_live_keys_fails_closed(self) -> None:
        """More live keys than max_keys: refuse (CPN-DEP-002) rather than forget a limit."""
        guard = MemoryStormGuard(per_coupon=10, per_subject=10, max_keys=3)
        for i in range(3):
            await guard.admit(f"c{i}", "s", now=NOW)
        with pytest.raises(DependencyUnavailable) as info:
            await guard.admit("c3", "s", now=NOW)
        assert info.value.code is codes.UNAVAILABLE_REPLAY
        await guard.admit("c3", "s", now=NOW + 1)  # the others have expired by then
