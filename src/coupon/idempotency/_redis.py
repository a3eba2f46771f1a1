"""The Redis adapter: one key per claim, ``<prefix>idem:<tenant>:<sha256(key)>``.

A claim is ``SET key <pending> NX PX <lease>``; completing and releasing are Lua scripts that
act only while the key still holds *our* lease (compare-and-set), so a worker whose lease
expired cannot overwrite the record of the worker that claimed the key after it. Every Redis
error becomes ``StorageError`` (``CPN-DEP-003``): a store that cannot answer must not let the
request run twice, so the guard fails closed.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from contextlib import contextmanager

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from coupon import codes
from coupon.errors import StorageError

from ._store import Done, Pending, Record, StoredResponse, decode_record, encode_record

__all__ = ["RedisIdempotencyStore"]

#: What a Redis call can raise when the server is down, slow or refuses us.
REDIS_ERRORS = (RedisError, OSError, asyncio.TimeoutError)

_COMPLETE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""


@contextmanager
def _mapped(action: str) -> Iterator[None]:
    try:
        yield
    except REDIS_ERRORS as exc:
        raise StorageError(
            codes.UNAVAILABLE_STORAGE, f"idempotency store {action} failed: {type(exc).__name__}"
        ) from exc


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


class RedisIdempotencyStore:
    """An :class:`~coupon.idempotency.IdempotencyStore` shared through Redis.

    Args:
        client: a ``redis.asyncio.Redis`` client (see :meth:`from_url`).
        prefix: prepended to ``idem:<tenant>:<hash>``.
    """

    def __init__(self, client: Redis, *, prefix: str = "coupon:") -> None:
        self._client = client
        self._prefix = prefix
        self._complete = client.register_script(_COMPLETE)
        self._release = client.register_script(_RELEASE)

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str = "coupon:", timeout: float = 1.0
    ) -> RedisIdempotencyStore:
        """Connect (lazily) with a fail-fast client: one retry, ``timeout`` seconds."""
        client = Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1),
        )
        return cls(client, prefix=prefix)

    def _key(self, key: str) -> str:
        return f"{self._prefix}idem:{key}"

    async def claim(self, key: str, pending: Pending, *, lease: float) -> Record | None:
        """See :meth:`IdempotencyStore.claim`."""
        name = self._key(key)
        with _mapped("claim"):
            # A record may expire between the SET and the GET: then try again.
            for _ in range(3):
                if await self._client.set(name, encode_record(pending), nx=True, px=_ms(lease)):
                    return None
                raw = await self._client.get(name)
                if raw is not None:
                    return decode_record(raw)
        raise StorageError(codes.UNAVAILABLE_STORAGE, "idempotency claim did not settle")

    async def complete(
        self, key: str, pending: Pending, response: StoredResponse, *, ttl: float
    ) -> bool:
        """See :meth:`IdempotencyStore.complete`."""
        done = encode_record(Done(pending.fingerprint, response))
        args: list[bytes | int] = [encode_record(pending), done, _ms(ttl)]
        with _mapped("complete"):
            return bool(await self._complete(keys=[self._key(key)], args=args))

    async def release(self, key: str, pending: Pending) -> bool:
        """See :meth:`IdempotencyStore.release`."""
        with _mapped("release"):
            return bool(await self._release(keys=[self._key(key)], args=[encode_record(pending)]))

    async def close(self) -> None:
        """Close the client's connections."""
        await self._client.aclose()
