"""The gateway's own Prometheus metrics (pipelines, limits and keys export theirs)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from coupon.middleware import CouponDecision

__all__ = ["GatewayMetrics"]

# Edge latency is dominated by the upstream; buckets from 0.5 ms to 10 s.
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class GatewayMetrics:
    """Requests by route and status class, their latency, and coupon decisions by code.

    Labels stay bounded: ``route`` is the routes file's path template (or ``unmatched``),
    never the request path; ``code`` is a stable error code.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "coupon_gateway_requests_total",
            "Requests by route template, method and status class (2xx, 4xx...).",
            ["route", "method", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "coupon_gateway_request_seconds",
            "Time from the request's arrival to its answer's start, by route template.",
            ["route"],
            buckets=_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "coupon_gateway_in_flight",
            "Routed requests being served now.",
            registry=registry,
        )
        self.shed = Counter(
            "coupon_gateway_shed_total",
            "Requests refused at once because max_in_flight were already being served.",
            registry=registry,
        )
        self.decisions = Counter(
            "coupon_gateway_coupon_decisions_total",
            "Coupon checks by outcome (allowed, denied) and code (empty when allowed).",
            ["outcome", "code"],
            registry=registry,
        )

    def response(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request (the correlation middleware's ``on_response``)."""
        self.requests.labels(route, method, f"{status // 100}xx").inc()
        self.latency.labels(route).observe(seconds)

    def decision(self, decision: CouponDecision) -> None:
        """Count one coupon decision (the coupon middleware's ``on_decision``)."""
        outcome = "allowed" if decision.allowed else "denied"
        self.decisions.labels(outcome, decision.code or "").inc()
