"""Fixtures for the Authority tests: real Redis, real SQL stores, and a free port nobody serves.

Redis and PostgreSQL are the real engines named by ``COUPON_TEST_REDIS_URL`` and
``COUPON_TEST_POSTGRES_URL``. When one is missing the test is skipped, except under
``CI=true``, where it fails. Tests share the Redis server with other suites, so each test
gets a random key prefix and only those keys are deleted afterwards (never ``FLUSHALL``).
PostgreSQL tests get a fresh database per module, dropped at the end.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import NoReturn

import pytest
import pytest_asyncio
import sqlalchemy as sa
from redis.asyncio import Redis
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from tests.redis_fixtures import unavailable

from coupon.authority._replay import redis_client
from coupon.storage.sql import SqlStore, normalise_url

POSTGRES_URL = os.environ.get(
    "COUPON_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def _unavailable(what: str, exc: BaseException) -> NoReturn:
    unavailable(f"{what} is not reachable: {type(exc).__name__}: {exc}")


@pytest_asyncio.fixture
async def redis_conn(redis_url: str) -> AsyncIterator[Redis]:
    """A fail-fast asyncio Redis client, closed after the test."""
    client = redis_client(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def closed_port() -> int:
    """A local TCP port with nothing listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def _admin(sql: str) -> None:
    engine = create_async_engine(normalise_url(POSTGRES_URL), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text(sql))
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test module (dropped afterwards)."""
    name = f"coupon_test_{secrets.token_hex(6)}"
    try:
        asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        _unavailable(f"PostgreSQL at {POSTGRES_URL}", exc)
    yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty store: SQLite in ``tmp_path``, or the module's PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'authority.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@asynccontextmanager
async def open_store(url: str) -> AsyncIterator[SqlStore]:
    """A migrated :class:`SqlStore` at ``url`` with no revocations (``seq`` starts at 1)."""
    sql_store = await SqlStore.connect(url)
    await sql_store.migrate()
    if sql_store.dialect == "postgresql":
        engine = create_async_engine(normalise_url(url))
        try:
            async with engine.begin() as conn:
                await conn.execute(sa.text("TRUNCATE revocations RESTART IDENTITY"))
        finally:
            await engine.dispose()
    try:
        yield sql_store
    finally:
        await sql_store.close()


@pytest_asyncio.fixture
async def store(store_url: str) -> AsyncIterator[SqlStore]:
    """An empty, migrated store on each engine (SQLite and PostgreSQL)."""
    async with open_store(store_url) as sql_store:
        yield sql_store


@pytest_asyncio.fixture
async def postgres_store(postgres_url: str) -> AsyncIterator[SqlStore]:
    """An empty, migrated store on PostgreSQL only."""
    async with open_store(postgres_url) as sql_store:
        yield sql_store
