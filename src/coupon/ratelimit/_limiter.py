"""Tenant rate limits: configuration, decisions, hooks and the :class:`RateLimiter`."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeAlias

from coupon import codes
from coupon.errors import RateLimited

from ._gcra import Outcome
from ._local import LocalGcra, monotonic_us
from ._redis import REDIS_ERRORS, RedisGcra

__all__ = [
    "Decision",
    "DegradedChanged",
    "RateLimitConfig",
    "RateLimitDecided",
    "RateLimitEvent",
    "RateLimitHook",
    "RateLimiter",
    "TenantLimits",
    "raise_for",
    "refusal",
]

_NAME = re.compile(r"[A-Za-z0-9._~@+-]{1,128}")
_US = 1_000_000


@dataclass(frozen=True, slots=True)
class TenantLimits:
    """The limits of one tenant (or one tenant's route key).

    Attributes:
        soft_per_s: sustained requests per second before a request is flagged.
        hard_per_s: sustained requests per second before a request is refused.
        burst: requests admitted at once from idle (by each of the two limits).
        window: seconds; the ``w`` of ``RateLimit-Policy``, whose ``q`` is
            ``hard_per_s * window``.
        name: a bounded policy name, used as the metrics label.

    Raises:
        ValueError: a rate is not positive, ``soft_per_s > hard_per_s``, ``burst < 1``,
            ``window < 1`` or ``hard_per_s * window < 1``.
    """

    soft_per_s: float
    hard_per_s: float
    burst: int
    window: int = 1
    name: str = "default"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.hard_per_s) and self.hard_per_s > 0):
            raise ValueError("hard_per_s must be a positive number")
        if not (math.isfinite(self.soft_per_s) and 0 < self.soft_per_s <= self.hard_per_s):
            raise ValueError("soft_per_s must be positive and at most hard_per_s")
        if isinstance(self.burst, bool) or not isinstance(self.burst, int) or self.burst < 1:
            raise ValueError("burst must be an integer of at least 1")
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise ValueError("window must be an integer number of seconds, at least 1")
        if self.hard_per_s * self.window < 1:
            raise ValueError("hard_per_s * window must be at least 1")
        if not _NAME.fullmatch(self.name):
            raise ValueError("name must be 1-128 characters of [A-Za-z0-9._~@+-]")

    @property
    def limit(self) -> int:
        """The sustained quota per window (``q``)."""
        return max(1, math.floor(self.hard_per_s * self.window))

    def divided(self, replicas: int) -> TenantLimits:
        """This replica's share when ``replicas`` processes enforce the limits apart."""
        return TenantLimits(
            soft_per_s=self.soft_per_s / replicas,
            hard_per_s=max(self.hard_per_s / replicas, 1 / self.window),
            burst=max(1, self.burst // replicas),
            window=self.window,
            name=self.name,
        )

    def params(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """The ``(T, tau)`` pairs of the hard and soft limits, in integer microseconds.

        ``T`` is rounded up, so the limits are never looser than configured.
        """
        hard_t = max(1, math.ceil(_US / self.hard_per_s))
        soft_t = max(1, math.ceil(_US / min(self.soft_per_s, self.hard_per_s)))
        return (hard_t, (self.burst - 1) * hard_t), (soft_t, (self.burst - 1) * soft_t)


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    """Which limits apply to whom.

    Attributes:
        default: the limits of every tenant without an override.
        tenants: per-tenant overrides.
        routes: per ``(tenant, key)`` overrides, looked up first.
        replicas: how many service processes share Redis; in degraded mode each enforces
            ``1 / replicas`` of the limits on its own.
    """

    default: TenantLimits
    tenants: Mapping[str, TenantLimits] = field(default_factory=dict)
    routes: Mapping[tuple[str, str], TenantLimits] = field(default_factory=dict)
    replicas: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.replicas, bool) or not isinstance(self.replicas, int):
            raise ValueError("replicas must be an integer")
        if self.replicas < 1:
            raise ValueError("replicas must be at least 1")
        limits: Iterable[object] = [self.default, *self.tenants.values(), *self.routes.values()]
        if not all(isinstance(x, TenantLimits) for x in limits):
            raise ValueError("every limit must be a TenantLimits")

    def limits_for(self, tenant: str, key: str = "default") -> TenantLimits:
        """The limits of ``key`` for ``tenant``: route override, tenant override, default."""
        return self.routes.get((tenant, key)) or self.tenants.get(tenant) or self.default


@dataclass(frozen=True, slots=True)
class Decision:
    """What :meth:`RateLimiter.check` decided. Durations are in seconds.

    Attributes:
        allowed: False when the hard limit refused the request.
        soft_exceeded: admitted, but over the soft limit (add a header, count a metric).
        remaining: requests the hard limit would still admit right now.
        reset_after: until the hard limit is fully restored.
        retry_after: when refused, until the same request would be admitted; else 0.
        limit: the sustained quota per window (this replica's share when degraded).
        window: the window of ``limit``, in seconds.
        degraded: decided in-process because Redis could not answer.
    """

    allowed: bool
    soft_exceeded: bool
    remaining: int
    reset_after: float
    retry_after: float
    limit: int
    window: int
    degraded: bool = False

    @property
    def outcome(self) -> Literal["allowed", "soft", "hard"]:
        """``hard`` when refused, ``soft`` when flagged, else ``allowed``."""
        if not self.allowed:
            return "hard"
        return "soft" if self.soft_exceeded else "allowed"


def refusal(decision: Decision) -> RateLimited:
    """The ``CPN-RATE-003`` error of a refused ``decision``, with its ``retry_after``."""
    error = RateLimited(
        codes.RATE_TENANT,
        f"over the hard limit of {decision.limit} per {decision.window}s; "
        f"retry after {decision.retry_after:.3f}s",
    )
    error.retry_after = decision.retry_after
    return error


def raise_for(decision: Decision) -> None:
    """Raise :class:`~coupon.errors.RateLimited` (``CPN-RATE-003``) if ``decision`` refused.

    ``retry_after`` is set to the decision's, in seconds.
    """
    if not decision.allowed:
        raise refusal(decision)


@dataclass(frozen=True, slots=True)
class RateLimitDecided:
    """One check was decided; ``policy`` is the bounded :attr:`TenantLimits.name`."""

    policy: str
    outcome: Literal["allowed", "soft", "hard"]
    degraded: bool


@dataclass(frozen=True, slots=True)
class DegradedChanged:
    """The limiter left Redis (``degraded=True``, with the error's class name) or came back."""

    degraded: bool
    reason: str | None = None


RateLimitEvent: TypeAlias = RateLimitDecided | DegradedChanged


class RateLimitHook(Protocol):
    """Receives every event of a limiter; must be quick and must not raise."""

    def __call__(self, event: RateLimitEvent, /) -> None:
        """Handle one event."""
        ...


class RateLimiter:
    """Soft and hard GCRA limits per tenant and route key, shared through Redis.

    Without ``redis`` the limiter is purely in-process (embedded mode, full limits). With
    it, each check is one Lua script on the Redis server; when Redis fails (error or
    timeout) the check is decided in-process at ``1 / replicas`` of the limits and flagged
    ``degraded``. Redis is tried again at most every ``probe_interval`` seconds. A Redis
    outage never raises to the caller.

    Args:
        config: the limits.
        redis: the Redis GCRA (see :class:`RedisGcra` and :func:`redis_client`).
        hooks: called with each :data:`RateLimitEvent`.
        probe_interval: seconds between attempts to reach Redis while degraded.
        clock: monotonic seconds, for the probe schedule.
        local: the in-process store (a fresh :class:`LocalGcra` by default).
    """

    def __init__(
        self,
        config: RateLimitConfig,
        *,
        redis: RedisGcra | None = None,
        hooks: Iterable[RateLimitHook] = (),
        probe_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        local: LocalGcra | None = None,
    ) -> None:
        self.config = config
        self._redis = redis
        self._hooks = tuple(hooks)
        self._probe_interval = probe_interval
        self._clock = clock
        self._local = local if local is not None else LocalGcra(clock=monotonic_us)
        self._degraded = False
        self._next_probe = 0.0

    @property
    def degraded(self) -> bool:
        """Whether the last Redis call failed and checks are decided in-process."""
        return self._degraded

    async def check(self, tenant: str, key: str = "default", *, cost: int = 1) -> Decision:
        """Check and count one request of ``cost`` for ``tenant``'s ``key``.

        Raises:
            ValueError: ``tenant`` or ``key`` is not 1-128 characters of
                ``[A-Za-z0-9._~@+-]``, or ``cost`` is not between 1 and the burst.
        """
        if not (_NAME.fullmatch(tenant) and _NAME.fullmatch(key)):
            raise ValueError("tenant and key must be 1-128 characters of [A-Za-z0-9._~@+-]")
        limits = self.config.limits_for(tenant, key)
        if not 1 <= cost <= limits.burst:
            raise ValueError(f"cost must be between 1 and the burst ({limits.burst})")
        if self._redis is not None and (not self._degraded or self._clock() >= self._next_probe):
            hard, soft = limits.params()
            try:
                outcome = await self._redis.check(tenant, key, hard=hard, soft=soft, cost=cost)
            except REDIS_ERRORS as exc:
                self._next_probe = self._clock() + self._probe_interval
                if not self._degraded:
                    self._degraded = True
                    self._emit(DegradedChanged(True, type(exc).__name__))
            else:
                if self._degraded:
                    self._degraded = False
                    self._local.clear()
                    self._emit(DegradedChanged(False))
                return self._decide(limits, outcome, degraded=False)
        if self._redis is not None:
            limits = limits.divided(self.config.replicas)
        hard, soft = limits.params()
        outcome = self._local.check(f"{tenant}:{key}", hard=hard, soft=soft, cost=cost)
        return self._decide(limits, outcome, degraded=self._redis is not None)

    def _decide(self, limits: TenantLimits, outcome: Outcome, *, degraded: bool) -> Decision:
        decision = Decision(
            allowed=outcome.allowed,
            soft_exceeded=outcome.soft_exceeded,
            remaining=outcome.remaining,
            reset_after=outcome.reset_after / _US,
            retry_after=outcome.retry_after / _US,
            limit=limits.limit,
            window=limits.window,
            degraded=degraded,
        )
        self._emit(RateLimitDecided(limits.name, decision.outcome, degraded))
        return decision

    def _emit(self, event: RateLimitEvent) -> None:
        for hook in self._hooks:
            hook(event)
