"""A resilience hook that exports Prometheus metrics (see :mod:`coupon.resilience`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge

from coupon.resilience import (
    AttemptFailed,
    AttemptSucceeded,
    BreakerStateChanged,
    BulkheadOccupancy,
    Event,
    FallbackUsed,
)

__all__ = ["ResilienceMetrics"]


@dataclass
class ResilienceMetrics:
    """A :class:`coupon.resilience.Hook` that counts attempts and fallbacks and tracks state.

    Register one per registry with every pipeline: ``Pipeline(policy, hooks=[metrics])``.
    """

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.attempts = Counter(
            "coupon_resilience_attempts_total",
            "Attempts by pipeline and outcome (success, timeout, transient, unknown, permanent).",
            ["pipeline", "outcome"],
            registry=r,
        )
        self.breaker_state = Gauge(
            "coupon_resilience_breaker_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
            ["pipeline"],
            registry=r,
        )
        self.bulkhead_in_use = Gauge(
            "coupon_resilience_bulkhead_in_use",
            "Bulkhead slots in use.",
            ["pipeline"],
            registry=r,
        )
        self.fallbacks = Counter(
            "coupon_resilience_fallbacks_total",
            "Calls answered by the fallback (degraded).",
            ["pipeline"],
            registry=r,
        )

    def __call__(self, event: Event, /) -> None:
        """Update the metrics for one event."""
        if isinstance(event, AttemptSucceeded):
            self.attempts.labels(event.pipeline, "success").inc()
        elif isinstance(event, AttemptFailed):
            self.attempts.labels(event.pipeline, event.outcome).inc()
        elif isinstance(event, BreakerStateChanged):
            self.breaker_state.labels(event.pipeline).set(int(event.new))
        elif isinstance(event, BulkheadOccupancy):
            self.bulkhead_in_use.labels(event.pipeline).set(event.in_use)
        elif isinstance(event, FallbackUsed):
            self.fallbacks.labels(event.pipeline).inc()
