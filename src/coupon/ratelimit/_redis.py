"""The GCRA in Redis: one Lua script, one round trip, Redis server time.

The script reads ``TIME`` on the Redis server so that every replica of the service measures
against the same clock, checks the hard limit and then the soft limit (the same arithmetic
as :func:`coupon.ratelimit.soft_hard`, in integer microseconds) and stores both TATs in one
hash ``<prefix>rl:<tenant>:<key>`` that expires when the bucket is full again.
"""

from __future__ import annotations

import asyncio
import hashlib

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from ._gcra import Outcome

__all__ = ["GCRA_LUA", "REDIS_ERRORS", "RedisGcra", "redis_client"]

#: What a Redis call can raise when the server is down, slow or refuses us.
REDIS_ERRORS = (RedisError, OSError, asyncio.TimeoutError)

#: KEYS[1]: the hash. ARGV: hard T, hard tau, soft T, soft tau, cost (integer microseconds).
#: Returns {allowed, soft_exceeded, remaining, reset_after_us, retry_after_us}.
GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local ht, htau = tonumber(ARGV[1]), tonumber(ARGV[2])
local st, stau = tonumber(ARGV[3]), tonumber(ARGV[4])
local cost = tonumber(ARGV[5])
local stored = redis.call('HMGET', KEYS[1], 'h', 's')
local htat = math.max(tonumber(stored[1]) or now, now)
local stat = math.max(tonumber(stored[2]) or now, now)
local new_h = htat + cost * ht
local allow_at = new_h - htau - ht
if allow_at > now then
  local remaining = math.max(0, math.floor((now + htau + ht - htat) / ht))
  return {0, 0, remaining, htat - now, allow_at - now}
end
local remaining = math.max(0, math.floor((now + htau + ht - new_h) / ht))
local soft_exceeded = 1
local new_s = stat + cost * st
if new_s - stau - st <= now then
  soft_exceeded = 0
  stat = new_s
end
redis.call('HSET', KEYS[1], 'h', string.format('%d', new_h), 's', string.format('%d', stat))
redis.call('PEXPIRE', KEYS[1], math.ceil((math.max(new_h, stat) - now) / 1000) + 1)
return {1, soft_exceeded, remaining, new_h - now, 0}
"""


def redis_client(url: str, *, timeout: float = 0.1) -> Redis:
    """A Redis client that fails fast: one reconnect, then give up after ``timeout`` seconds.

    One retry lets a pooled connection that went stale in a Redis restart reconnect.
    """
    return Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 1),
        client_name="coupon-ratelimit",
    )


class RedisGcra:
    """Runs :data:`GCRA_LUA` with ``EVALSHA``, falling back to ``EVAL`` on ``NOSCRIPT``.

    Errors are not caught here: the limiter catches :data:`REDIS_ERRORS` and degrades.
    """

    def __init__(self, client: Redis, *, prefix: str = "coupon:") -> None:
        self._client = client
        self._prefix = prefix
        self.sha = hashlib.sha1(GCRA_LUA.encode(), usedforsecurity=False).hexdigest()

    def key(self, tenant: str, key: str) -> str:
        """The Redis key of one ``(tenant, key)`` pair."""
        return f"{self._prefix}rl:{tenant}:{key}"

    async def load(self) -> None:
        """``SCRIPT LOAD`` the script (optional: the first check loads it otherwise)."""
        await self._client.script_load(GCRA_LUA)

    async def check(
        self, tenant: str, key: str, *, hard: tuple[int, int], soft: tuple[int, int], cost: int
    ) -> Outcome:
        """Check and count one request, in one round trip (two after a Redis restart)."""
        args = (hard[0], hard[1], soft[0], soft[1], cost)
        name = self.key(tenant, key)
        try:
            reply = await self._client.evalsha(self.sha, 1, name, *args)
        except NoScriptError:
            reply = await self._client.eval(GCRA_LUA, 1, name, *args)
        allowed, soft_exceeded, remaining, reset_us, retry_us = (int(v) for v in reply)
        return Outcome(bool(allowed), bool(soft_exceeded), remaining, reset_us, retry_us)

    async def close(self) -> None:
        """Close the client's connections."""
        await self._client.aclose()
