"""Fixtures for the service tests: real ``coupon up`` processes on real engines.

The ``engine`` parameter runs a test on the embedded default (SQLite under a data directory,
in-process fan-out) and on production (PostgreSQL + Redis). The engines are the ones named by
``COUPON_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``) and
``COUPON_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``). When one is unreachable the
tests that need it skip, except under ``CI=true``, where they fail.

Isolation: each production "deployment" gets a fresh database (created here, dropped at the end
of the session) and a random Redis key prefix (its keys deleted at the end, never FLUSHALL).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from typing import NoReturn

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from tests.services.harness import AuthorityProcess, Launcher

from coupon.storage.sql import normalise_url

POSTGRES_URL = os.environ.get(
    "COUPON_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("COUPON_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ENGINES = ("embedded", "production")


def unavailable(what: str, exc: BaseException) -> NoReturn:
    """Skip the test for a missing engine, or fail it under ``CI=true``."""
    message = (
        f"{what} is not reachable ({type(exc).__name__}: {exc}); start it or point "
        "COUPON_TEST_POSTGRES_URL / COUPON_TEST_REDIS_URL at one (under CI=true this fails)"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


class PostgresServer:
    """Creates throw-away databases on one PostgreSQL server and drops them all at the end."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.created: list[str] = []

    def _run(self, *statements: str) -> None:
        async def run() -> None:
            engine = create_async_engine(
                normalise_url(self.url), isolation_level="AUTOCOMMIT", connect_args={"timeout": 3}
            )
            try:
                async with engine.connect() as conn:
                    for statement in statements:
                        await conn.execute(sa.text(statement))
            finally:
                await engine.dispose()

        asyncio.run(run())

    def ping(self) -> None:
        """Raise if the server does not answer."""
        self._run("SELECT 1")

    def create_database(self) -> str:
        """A fresh, empty database; returns its URL."""
        name = f"coupon_svc_{secrets.token_hex(6)}"
        self._run(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return make_url(self.url).set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        """Drop every database this object created."""
        if self.created:
            self._run(*(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)' for name in self.created))
            self.created.clear()


class RedisServer:
    """Hands out random key prefixes on one Redis server and deletes their keys at the end."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.prefixes: list[str] = []

    def ping(self) -> None:
        """Raise if the server does not answer."""
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1, socket_timeout=1)
        try:
            client.ping()
        finally:
            client.close()

    def new_prefix(self) -> str:
        """A prefix no other test session uses (``coupon-svc:<hex>:``)."""
        prefix = f"coupon-svc:{secrets.token_hex(8)}:"
        self.prefixes.append(prefix)
        return prefix

    def clean(self) -> None:
        """Delete the keys under every prefix handed out (only those keys)."""
        client = redis.Redis.from_url(self.url)
        try:
            for prefix in self.prefixes:
                keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
                if keys:
                    client.delete(*keys)
        finally:
            client.close()
        self.prefixes.clear()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """The PostgreSQL server (skip, or fail under CI, when unreachable)."""
    server = PostgresServer(POSTGRES_URL)
    try:
        server.ping()
    except Exception as exc:
        unavailable(f"PostgreSQL at {POSTGRES_URL}", exc)
    yield server
    server.drop_all()


@pytest.fixture(scope="session")
def pg_url(postgres: PostgresServer) -> str:
    """A fresh PostgreSQL database for this test session (dropped at the end)."""
    return postgres.create_database()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """The Redis server (skip, or fail under CI, when unreachable)."""
    server = RedisServer(REDIS_URL)
    try:
        server.ping()
    except (redis.RedisError, OSError) as exc:
        unavailable(f"Redis at {REDIS_URL}", exc)
    yield server
    server.clean()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    """The URL of the live Redis server."""
    return redis_server.url


@pytest.fixture(scope="module", params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """The engine a module's authority runs on: ``embedded`` or ``production``."""
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def authority(engine: str, module_launcher: Launcher) -> Iterator[AuthorityProcess]:
    """A running Authority shared by the tests of one module, on each engine in turn."""
    proc = module_launcher.start(engine, name=f"{engine}-shared")
    yield proc
    proc.close()
