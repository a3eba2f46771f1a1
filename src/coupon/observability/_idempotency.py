"""An idempotency hook that exports Prometheus metrics (see :mod:`coupon.idempotency`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter

__all__ = ["IdempotencyMetrics"]


@dataclass
class IdempotencyMetrics:
    """A :class:`coupon.idempotency.IdempotencyHook` counting ``coupon_idempotency_total``.

    ``outcome`` is ``proceed``, ``replay``, ``conflict`` (409, in flight), ``reused`` (422,
    another payload) or ``invalid`` (400, malformed key). Register one per registry:
    ``IdempotencyGuard(store, hooks=[metrics])``.
    """

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter(
            "coupon_idempotency",
            "Requests with an Idempotency-Key by outcome (proceed, replay, conflict, reused, "
            "invalid).",
            ["outcome"],
            registry=self.registry,
        )

    def __call__(self, outcome: str, /) -> None:
        """Count one outcome."""
        self.requests.labels(outcome).inc()
