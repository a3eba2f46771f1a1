"""Real-Redis fixtures shared by every suite that needs the engine (a pytest plugin).

Redis is the server named by ``COUPON_TEST_REDIS_URL`` (default
``redis://127.0.0.1:6379/0``). When it is unreachable the tests that need it skip, except
under ``CI=true``, where they fail. Each test gets a random key prefix and only its keys are
deleted afterwards (never ``FLUSHALL``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import NoReturn

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

REDIS_URL = os.environ.get("COUPON_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def unavailable(message: str) -> NoReturn:
    """Skip the test for a missing engine or tool, or fail it under ``CI=true``."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def redis_server() -> str:
    """The live Redis server's URL, checked once per session."""
    client = redis.Redis.from_url(
        REDIS_URL, socket_connect_timeout=1, socket_timeout=1, retry=Retry(NoBackoff(), 0)
    )
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        unavailable(f"Redis at {REDIS_URL} is not reachable: {type(exc).__name__}: {exc}")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """The URL of a live Redis (skip, or fail under CI, when there is none)."""
    return redis_server


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A random key (and channel) prefix for this test; its keys are deleted afterwards."""
    prefix = f"coupon-test:{secrets.token_hex(8)}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class PrivateRedis:
    """A throwaway ``redis-server`` that a test may kill and restart on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable("redis-server is not on PATH")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 5
        try:
            while True:
                try:
                    client.ping()
                    return
                except (redis.RedisError, OSError):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)
        finally:
            client.close()

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A private Redis server, killed at the end of the test."""
    server = PrivateRedis()
    server.start()
    yield server
    server.kill()
