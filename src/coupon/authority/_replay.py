"""The DPoP replay guard shared by every Authority process: each proof ``jti`` is used once.

In production the Authority processes share Redis (``SET key 1 NX PX <ttl>``); embedded, one
process keeps the identifiers in memory. Either way a store that cannot answer raises
``CPN-DEP-002`` and the proof is refused (fail closed).
"""

from __future__ import annotations

import asyncio
import math
from typing import Protocol, runtime_checkable

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from coupon import codes
from coupon.errors import DependencyUnavailable
from coupon.token import MemoryReplayStore

__all__ = [
    "AsyncReplayStore",
    "MemoryAsyncReplayStore",
    "RedisReplayStore",
    "redis_client",
]

#: What a Redis call can raise when the server is down, slow or refuses us.
REDIS_ERRORS = (RedisError, OSError, asyncio.TimeoutError)


def redis_client(url: str, *, timeout: float = 1.0, client_name: str | None = None) -> Redis:
    """A Redis client that fails fast, for calls on the request path.

    redis-py's default retries a dead server ten times with backoff, which turns an outage
    into seconds of latency per request. This client tries once more (a pooled connection
    may be stale after a Redis restart) and gives up after ``timeout`` seconds.
    """
    return Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 1),
        client_name=client_name,
    )


@runtime_checkable
class AsyncReplayStore(Protocol):
    """Remembers one-time identifiers until they expire; shared by every process."""

    async def first_use(self, key: str, *, expires_at: float, now: float) -> bool:
        """Record ``key``; return False if it was already recorded and has not expired.

        Raises:
            DependencyUnavailable: ``CPN-DEP-002`` when the store cannot answer.
        """
        ...


class MemoryAsyncReplayStore:
    """The embedded replay store: :class:`coupon.token.MemoryReplayStore` behind ``await``."""

    def __init__(self, *, capacity: int = 100_000) -> None:
        self._store = MemoryReplayStore(capacity=capacity)

    async def first_use(self, key: str, *, expires_at: float, now: float) -> bool:
        """See :meth:`AsyncReplayStore.first_use`."""
        return self._store.first_use(key, expires_at=expires_at, now=now)

    def __len__(self) -> int:
        return len(self._store)


class RedisReplayStore:
    """A replay store in Redis, shared by every process that uses the same ``prefix``.

    The entry lives ``expires_at - now`` seconds, measured on the caller's clock rather than
    as an absolute ``PXAT``: a Redis server whose clock runs ahead would otherwise forget
    identifiers early and let a replay through.

    Args:
        client: a ``redis.asyncio.Redis`` client (see :func:`redis_client`).
        prefix: prepended to every key.
    """

    def __init__(self, client: Redis, prefix: str = "coupon:dpop:") -> None:
        self._client = client
        self._prefix = prefix

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str = "coupon:dpop:", timeout: float = 1.0
    ) -> RedisReplayStore:
        """Connect (lazily) to the Redis at ``url`` with a fail-fast client."""
        return cls(redis_client(url, timeout=timeout), prefix)

    async def first_use(self, key: str, *, expires_at: float, now: float) -> bool:
        """See :meth:`AsyncReplayStore.first_use`."""
        # Round up (remember longer, never shorter), ignoring float noise at epoch scale.
        ttl_ms = max(1, math.ceil((expires_at - now) * 1000 - 1e-3))
        try:
            stored = await self._client.set(self._prefix + key, b"1", nx=True, px=ttl_ms)
        except REDIS_ERRORS as exc:
            raise DependencyUnavailable(
                codes.UNAVAILABLE_REPLAY, f"replay store unreachable: {type(exc).__name__}"
            ) from exc
        return bool(stored)

    async def close(self) -> None:
        """Close the client's connections."""
        await self._client.aclose()
