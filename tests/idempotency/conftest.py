"""Fixtures for the idempotency tests: a fake clock and every store adapter.

Redis is the real server named by ``COUPON_TEST_REDIS_URL`` (default
``redis://127.0.0.1:6379/0``). When it is unreachable the Redis cases are skipped, except
under ``CI=true``, where they fail. Each test gets a random key prefix and only its keys are
deleted afterwards (never ``FLUSHALL``).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import AsyncIterator, Iterator
from typing import NoReturn

import pytest
import pytest_asyncio
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from tests.idempotency.idem_support import FakeClock, StoreCase

from coupon.idempotency import MemoryIdempotencyStore, RedisIdempotencyStore

REDIS_URL = os.environ.get("COUPON_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _unavailable(what: str, exc: BaseException) -> NoReturn:
    message = f"{what} is not reachable: {type(exc).__name__}: {exc}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def _redis_server() -> str:
    client = redis.Redis.from_url(
        REDIS_URL, socket_connect_timeout=1, socket_timeout=1, retry=Retry(NoBackoff(), 0)
    )
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        _unavailable(f"Redis at {REDIS_URL}", exc)
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def redis_url(_redis_server: str) -> str:
    """The URL of a live Redis (skip, or fail under CI, when there is none)."""
    return _redis_server


@pytest.fixture
def redis_prefix(_redis_server: str) -> Iterator[str]:
    """A random key prefix for this test; its keys are deleted afterwards."""
    prefix = f"coupon-test:{secrets.token_hex(8)}:"
    yield prefix
    client = redis.Redis.from_url(_redis_server)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest_asyncio.fixture
async def redis_store(
    _redis_server: str, redis_prefix: str
) -> AsyncIterator[RedisIdempotencyStore]:
    """A Redis store under a random prefix, closed after the test."""
    store = RedisIdempotencyStore.from_url(_redis_server, prefix=redis_prefix)
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
