"""Replay-storm protection: per-coupon and per-subject rate limits on verification.

Both limiters use GCRA (the generic cell rate algorithm): each key holds one number, its
theoretical arrival time (TAT). With ``limit`` requests per ``period``, a request is admitted
when ``max(TAT, now) + period/limit - now <= period``, so a burst of ``limit`` requests passes
at once and after that one more every ``period/limit`` seconds. A refused request changes
nothing and learns exactly when it would pass (``retry_after``). Times are integer
microseconds so that the Python and Lua implementations agree to the unit.

A request is admitted only if both its coupon and its subject have room; when a limiter
cannot answer (Redis down, memory table full) the request is refused, never waved through.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final, Protocol, runtime_checkable

from redis.asyncio import Redis

from coupon import codes
from coupon.codes import ErrorCode
from coupon.errors import DependencyUnavailable, RateLimited

from ._replay import REDIS_ERRORS, redis_client

__all__ = ["MemoryStormGuard", "RedisStormGuard", "StormGuard"]

_US: Final = 1_000_000


@runtime_checkable
class StormGuard(Protocol):
    """Sheds verification load per coupon (``jti``) and per subject."""

    async def admit(self, jti: str, subject: str, *, now: float) -> None:
        """Count one verification, or refuse it.

        Raises:
            RateLimited: ``CPN-RATE-001`` (coupon) or ``CPN-RATE-002`` (subject), with
                ``retry_after`` in seconds.
            DependencyUnavailable: ``CPN-DEP-002`` when the limiter cannot answer.
        """
        ...


def _intervals(per_coupon: int, per_subject: int, period: float) -> tuple[int, int, int]:
    if per_coupon <= 0 or per_subject <= 0 or period <= 0:
        raise ValueError("limits and period must be positive")
    period_us = round(period * _US)
    return period_us // per_coupon, period_us // per_subject, period_us


def _limited(code: ErrorCode, what: str, wait_us: int) -> RateLimited:
    exc = RateLimited(code, f"too many verifications for this {what}")
    exc.retry_after = wait_us / _US
    return exc


def _refuse(coupon_wait: int, subject_wait: int) -> None:
    if coupon_wait > 0:
        raise _limited(codes.RATE_COUPON, "coupon", max(coupon_wait, subject_wait))
    if subject_wait > 0:
        raise _limited(codes.RATE_SUBJECT, "subject", subject_wait)


class MemoryStormGuard:
    """The embedded storm guard: GCRA state for the keys seen in the last ``period``.

    Entries whose TAT has passed are equivalent to absent and are dropped as they age, so
    the tables hold roughly the keys active in the last ``period``. If more than ``max_keys``
    are active at once the guard refuses new keys (``CPN-DEP-002``) rather than forget.
    """

    def __init__(
        self, *, per_coupon: int, per_subject: int, period: float = 1.0, max_keys: int = 100_000
    ) -> None:
        self._coupon_t, self._subject_t, self._period = _intervals(per_coupon, per_subject, period)
        self._max_keys = max_keys
        self._coupons: OrderedDict[str, int] = OrderedDict()
        self._subjects: OrderedDict[str, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._coupons) + len(self._subjects)

    async def admit(self, jti: str, subject: str, *, now: float) -> None:
        """See :meth:`StormGuard.admit`."""
        now_us = round(now * _US)
        coupon_tat, coupon_wait = self._try(self._coupons, jti, self._coupon_t, now_us)
        subject_tat, subject_wait = self._try(self._subjects, subject, self._subject_t, now_us)
        _refuse(coupon_wait, subject_wait)
        self._make_room(self._coupons, jti, now_us)
        self._make_room(self._subjects, subject, now_us)
        for table, key, tat in (
            (self._coupons, jti, coupon_tat),
            (self._subjects, subject, subject_tat),
        ):
            table[key] = tat
            table.move_to_end(key)

    def _try(self, table: OrderedDict[str, int], key: str, step: int, now: int) -> tuple[int, int]:
        tat = max(table.get(key, now), now) + step
        return tat, max(0, tat - now - self._period)

    def _make_room(self, table: OrderedDict[str, int], key: str, now: int) -> None:
        # Oldest-updated first: drop the front while it has expired (amortised O(1)).
        while table:
            oldest, oldest_tat = next(iter(table.items()))
            if oldest_tat > now or oldest == key:
                break
            del table[oldest]
        if key not in table and len(table) >= self._max_keys:
            for stale in [k for k, v in table.items() if v <= now]:
                del table[stale]
            if len(table) >= self._max_keys:
                raise DependencyUnavailable(codes.UNAVAILABLE_REPLAY, "storm guard is full")


# KEYS: coupon key, subject key. ARGV: now, coupon step, subject step, period (microseconds).
# Returns the two waits in microseconds; both 0 means admitted (and counted).
_GCRA: Final = """
local now = tonumber(ARGV[1])
local period = tonumber(ARGV[4])
local tats = {}
local waits = {0, 0}
for i = 1, 2 do
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  tats[i] = tat + tonumber(ARGV[i + 1])
  local wait = tats[i] - now - period
  if wait > 0 then waits[i] = wait end
end
if waits[1] > 0 or waits[2] > 0 then
  return waits
end
for i = 1, 2 do
  redis.call('SET', KEYS[i], string.format('%.0f', tats[i]),
             'PX', math.ceil((tats[i] - now) / 1000) + 1)
end
return waits
"""


class RedisStormGuard:
    """The shared storm guard: the same GCRA in one Lua script, atomic across processes.

    Args:
        client: a ``redis.asyncio.Redis`` client (see :func:`redis_client`).
        per_coupon, per_subject: admitted verifications per ``period``.
        prefix: prepended to every key.
    """

    def __init__(
        self,
        client: Redis,
        *,
        per_coupon: int,
        per_subject: int,
        period: float = 1.0,
        prefix: str = "coupon:storm:",
    ) -> None:
        self._client = client
        self._coupon_t, self._subject_t, self._period = _intervals(per_coupon, per_subject, period)
        self._prefix = prefix
        self._script = client.register_script(_GCRA)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        per_coupon: int,
        per_subject: int,
        period: float = 1.0,
        prefix: str = "coupon:storm:",
        timeout: float = 1.0,
    ) -> RedisStormGuard:
        """Connect (lazily) to the Redis at ``url`` with a fail-fast client."""
        client = redis_client(url, timeout=timeout)
        return cls(
            client, per_coupon=per_coupon, per_subject=per_subject, period=period, prefix=prefix
        )

    async def admit(self, jti: str, subject: str, *, now: float) -> None:
        """See :meth:`StormGuard.admit`."""
        keys = [f"{self._prefix}c:{jti}", f"{self._prefix}s:{subject}"]
        args = [round(now * _US), self._coupon_t, self._subject_t, self._period]
        try:
            waits = await self._script(keys=keys, args=args)
        except REDIS_ERRORS as exc:
            raise DependencyUnavailable(
                codes.UNAVAILABLE_REPLAY, f"storm guard unreachable: {type(exc).__name__}"
            ) from exc
        _refuse(int(waits[0]), int(waits[1]))

    async def close(self) -> None:
        """Close the client's connections."""
        await self._client.aclose()
