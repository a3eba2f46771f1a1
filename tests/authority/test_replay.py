"""The DPoP replay store: once per key, shared by processes, and closed when Redis is away."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from coupon import codes
from coupon.authority._replay import (
    AsyncReplayStore,
    MemoryAsyncReplayStore,
    RedisReplayStore,
    redis_client,
)
from coupon.errors import DependencyUnavailable

NOW = 1_700_000_000.0


@pytest_asyncio.fixture(params=["memory", "redis"])
async def replay(request: pytest.FixtureRequest) -> AsyncIterator[AsyncReplayStore]:
    """Each implementation of the replay store, fresh."""
    if request.param == "memory":
        yield MemoryAsyncReplayStore()
        return
    url: str = request.getfixturevalue("redis_url")
    prefix: str = request.getfixturevalue("redis_prefix")
    store = RedisReplayStore.from_url(url, prefix=prefix)
    yield store
    await store.close()


class TestContract:
    @pytest.mark.asyncio
    async def test_is_an_async_replay_store(self, replay: AsyncReplayStore) -> None:
        """Both implementations satisfy the protocol."""
        assert isinstance(replay, AsyncReplayStore)

    @pytest.mark.asyncio
    async def test_second_use_refused(self, replay: AsyncReplayStore) -> None:
        """A key is accepted once; until it expires every later use is a replay."""
        assert await replay.first_use("jti-1", expires_at=NOW + 60, now=NOW)
        assert not await replay.first_use("jti-1", expires_at=NOW + 60, now=NOW + 1)
        assert await replay.first_use("jti-2", expires_at=NOW + 60, now=NOW + 1)

    @pytest.mark.asyncio
    async def test_already_expired_key_does_not_block(self, replay: AsyncReplayStore) -> None:
        """An identifier recorded past its expiry does not block a later use."""
        assert await replay.first_use("old", expires_at=NOW - 1, now=NOW)
        await asyncio.sleep(0.01)
        assert await replay.first_use("old", expires_at=NOW + 60, now=NOW)


class TestRedis:
    @pytest.mark.asyncio
    async def test_two_processes_share_the_store(self, redis_url: str, redis_prefix: str) -> None:
        """Two separate clients (two Authority processes): the same jti passes exactly once."""
        first = RedisReplayStore(redis_client(redis_url), redis_prefix)
        second = RedisReplayStore(redis_client(redis_url), redis_prefix)
        try:
            now = time.time()
            results = await asyncio.gather(
                *(
                    store.first_use("proof-jti", expires_at=now + 60, now=now)
                    for store in (first, second, first, second)
                )
            )
            assert sorted(results) == [False, False, False, True]
        finally:
            await first.close()
            await second.close()

    @pytest.mark.asyncio
    async def test_expiry(self, redis_conn: Redis, redis_prefix: str) -> None:
        """The entry lives expires_at - now seconds, then the key is free again."""
        store = RedisReplayStore(redis_conn, redis_prefix)
        assert await store.first_use("k", expires_at=NOW + 0.15, now=NOW)
        ttl = await redis_conn.pttl(f"{redis_prefix}k")
        assert 0 < ttl <= 150
        assert not await store.first_use("k", expires_at=NOW + 0.15, now=NOW)
        await asyncio.sleep(0.2)
        assert await store.first_use("k", expires_at=NOW + 60, now=NOW)

    @pytest.mark.asyncio
    async def test_prefixes_separate_deployments(
        self, redis_conn: Redis, redis_prefix: str
    ) -> None:
        """Stores with different prefixes do not see each other's keys."""
        a = RedisReplayStore(redis_conn, f"{redis_prefix}a:")
        b = RedisReplayStore(redis_conn, f"{redis_prefix}b:")
        assert await a.first_use("k", expires_at=NOW + 60, now=NOW)
        assert await b.first_use("k", expires_at=NOW + 60, now=NOW)

    @pytest.mark.asyncio
    async def test_unreachable_fails_closed(self, closed_port: int) -> None:
        """Redis on a closed port: CPN-DEP-002 quickly, never an accepted proof."""
        store = RedisReplayStore.from_url(f"redis://127.0.0.1:{closed_port}/0", timeout=0.5)
        started = time.perf_counter()
        try:
            with pytest.raises(DependencyUnavailable) as info:
                await store.first_use("k", expires_at=NOW + 60, now=NOW)
        finally:
            await store.close()
        assert info.value.code is codes.UNAVAILABLE_REPLAY
        assert time.perf_counter() - started < 2


class TestMemory:
    @pytest.mark.asyncio
    async def test_full_store_fails_closed(self) -> None:
        """Full of live entries, the memory store refuses new ones instead of forgetting."""
        store = MemoryAsyncReplayStore(capacity=2)
        assert await store.first_use("a", expires_at=NOW + 60, now=NOW)
        assert await store.first_use("b", expires_at=NOW + 60, now=NOW)
        with pytest.raises(DependencyUnavailable) as info:
            await store.first_use("c", expires_at=NOW + 60, now=NOW)
        assert info.value.code is codes.UNAVAILABLE_REPLAY
        assert len(store) == 2
