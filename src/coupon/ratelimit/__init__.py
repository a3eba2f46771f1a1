"""Tenant rate limits: soft and hard GCRA limits, shared through Redis, degraded in-process.

See ``docs/ratelimit.md``.
"""

from ._gcra import GcraResult, Outcome, gcra, soft_hard
from ._headers import ratelimit_headers
from ._limiter import (
    Decision,
    DegradedChanged,
    RateLimitConfig,
    RateLimitDecided,
    RateLimiter,
    RateLimitEvent,
    RateLimitHook,
    TenantLimits,
    raise_for,
    refusal,
)
from ._local import LocalGcra, monotonic_us
from ._middleware import SOFT_HEADER, RateLimitMiddleware, decision_headers
from ._redis import GCRA_LUA, REDIS_ERRORS, RedisGcra, redis_client

__all__ = [
    "GCRA_LUA",
    "REDIS_ERRORS",
    "SOFT_HEADER",
    "Decision",
    "DegradedChanged",
    "GcraResult",
    "LocalGcra",
    "Outcome",
    "RateLimitConfig",
    "RateLimitDecided",
    "RateLimitEvent",
    "RateLimitHook",
    "RateLimitMiddleware",
    "RateLimiter",
    "RedisGcra",
    "TenantLimits",
    "decision_headers",
    "gcra",
    "monotonic_us",
    "raise_for",
    "ratelimit_headers",
    "redis_client",
    "refusal",
    "soft_hard",
]
