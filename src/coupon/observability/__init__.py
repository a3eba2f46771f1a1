"""Observability: structured logs, Prometheus metrics and OpenTelemetry spans."""

from ._idempotency import IdempotencyMetrics
from ._logging import REDACTED, configure_logging, get_logger, redact
from ._metrics import AuthorityMetrics, LedgerMetrics
from ._ratelimit import RateLimitMetrics
from ._resilience import ResilienceMetrics
from ._signer import SignerMetrics
from ._tracing import CorrelationMiddleware, current_ids, tracer_provider

__all__ = [
    "REDACTED",
    "AuthorityMetrics",
    "CorrelationMiddleware",
    "IdempotencyMetrics",
    "LedgerMetrics",
    "RateLimitMetrics",
    "ResilienceMetrics",
    "SignerMetrics",
    "configure_logging",
    "current_ids",
    "get_logger",
    "redact",
    "tracer_provider",
]
