"""Rate-limit check latency: our Redis GCRA and in-process GCRA beside the ``limits`` library.

Each contender runs ``--count`` sequential checks (after a warm-up) of a generous limit, so
every check is admitted and does the full work. ``limits`` runs through ``limits.aio`` with
its Redis storage (redis-py) when Redis answers, and with its memory storage always.
Not run in CI.

Usage::

    .venv/bin/python bench/ratelimit.py [--redis redis://127.0.0.1:6379/0] [--count 5000]

One JSON document goes to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable

import redis
from limits import RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter
from limits.aio.strategies import RateLimiter as LimitsStrategy

from coupon.ratelimit import RateLimitConfig, RateLimiter, RedisGcra, TenantLimits, redis_client

LIMITS = TenantLimits(soft_per_s=1e6, hard_per_s=1e6, burst=1_000_000, window=1)


def _summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "p50_us": round(pick(0.50) * 1e6, 1),
        "p99_us": round(pick(0.99) * 1e6, 1),
        "mean_us": round(statistics.fmean(ordered) * 1e6, 1),
    }


async def _measure(check: Callable[[], Awaitable[object]], count: int) -> dict[str, float]:
    for _ in range(min(200, count)):
        await check()
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        await check()
        samples.append(time.perf_counter() - start)
    return _summary(samples)


def _limits_check(strategy: LimitsStrategy, key: str) -> Callable[[], Awaitable[object]]:
    item = RateLimitItemPerSecond(1_000_000)
    return lambda: strategy.hit(item, key)


async def main(url: str, count: int) -> dict[str, object]:
    prefix = f"coupon-bench:{secrets.token_hex(6)}:"
    results: dict[str, object] = {"count": count, "redis": url}
    local = RateLimiter(RateLimitConfig(LIMITS))
    results["coupon_local_gcra"] = await _measure(lambda: local.check("bench"), count)
    memory: Storage = MemoryStorage()
    results["limits_memory_fixed_window"] = await _measure(
        _limits_check(FixedWindowRateLimiter(memory), "bench"), count
    )
    results["limits_memory_moving_window"] = await _measure(
        _limits_check(MovingWindowRateLimiter(memory), "bench-mw"), count
    )
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except (redis.RedisError, OSError) as exc:
        results["redis_error"] = f"{type(exc).__name__}: {exc}"
        return results
    store = RedisGcra(redis_client(url, timeout=1.0), prefix=prefix)
    shared = RateLimiter(RateLimitConfig(LIMITS), redis=store)
    results["coupon_redis_gcra"] = await _measure(lambda: shared.check("bench"), count)
    await store.close()
    storage = RedisStorage(
        url.replace("redis://", "async+redis://", 1), implementation="redispy", key_prefix=prefix
    )
    results["limits_redis_fixed_window"] = await _measure(
        _limits_check(FixedWindowRateLimiter(storage), "bench"), count
    )
    results["limits_redis_moving_window"] = await _measure(
        _limits_check(MovingWindowRateLimiter(storage), "bench-mw"), count
    )
    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    keys += list(client.scan_iter(match=f"*{prefix}*", count=1000))
    if keys:
        client.delete(*set(keys))
    client.close()
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--count", type=int, default=5000)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.redis, args.count)), indent=2))
