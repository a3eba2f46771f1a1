"""Fixtures for the idempotency tests: a fake clock and every store adapter.

Redis is the real server of ``tests/redis_fixtures.py`` (``redis_url``, ``redis_prefix``).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from tests.idempotency.idem_support import FakeClock, StoreCase

from coupon.idempotency import MemoryIdempotencyStore, RedisIdempotencyStore


@pytest_asyncio.fixture
async def redis_store(redis_url: str, redis_prefix: str) -> AsyncIterator[RedisIdempotencyStore]:
    """A Redis store under a random prefix, closed after the test."""
    store = RedisIdempotencyStore.from_url(redis_url, prefix=redis_prefix)
    yield store
    await store.close()


@pytest.fixture(params=["memory", "redis"])
def store_case(request: pytest.FixtureRequest) -> StoreCase:
    """Each adapter: memory with a fake clock, and a real Redis (time really passes)."""
    if request.param == "memory":
        clock = FakeClock()

        async def advance(seconds: float) -> None:
            clock.advance(seconds)

        return StoreCase("memory", MemoryIdempotencyStore(clock=clock), advance)
    store: RedisIdempotencyStore = request.getfixturevalue("redis_store")
    return StoreCase("redis", store, asyncio.sleep)


@pytest.fixture
def closed_port() -> int:
    """A local TCP port with nothing listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
