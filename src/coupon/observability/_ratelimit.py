"""A rate-limit hook that exports Prometheus metrics (see :mod:`coupon.ratelimit`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge

from coupon.ratelimit import DegradedChanged, RateLimitDecided, RateLimitEvent

__all__ = ["RateLimitMetrics"]


@dataclass
class RateLimitMetrics:
    """A :class:`coupon.ratelimit.RateLimitHook` counting decisions and tracking degraded mode.

    Labels stay bounded: ``policy`` is the configured :attr:`TenantLimits.name`, never a
    tenant id. Register it with the limiter: ``RateLimiter(config, hooks=[metrics])``.
    """

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.decisions = Counter(
            "coupon_ratelimit_decisions_total",
            "Rate-limit decisions by policy and outcome (allowed, soft, hard).",
            ["policy", "outcome"],
            registry=self.registry,
        )
        self.degraded = Gauge(
            "coupon_ratelimit_degraded",
            "1 while Redis is unreachable and limits are enforced in-process, else 0.",
            registry=self.registry,
        )

    def __call__(self, event: RateLimitEvent, /) -> None:
        """Update the metrics for one event."""
        if isinstance(event, RateLimitDecided):
            self.decisions.labels(event.policy, event.outcome).inc()
        elif isinstance(event, DegradedChanged):
            self.degraded.set(1 if event.degraded else 0)
