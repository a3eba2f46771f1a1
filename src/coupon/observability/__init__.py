"""Observability: structured logs, Prometheus metrics and OpenTelemetry spans."""

from ._logging import REDACTED, configure_logging, get_logger, redact
from ._metrics import AuthorityMetrics, LedgerMetrics
from ._resilience import ResilienceMetrics
from ._tracing import CorrelationMiddleware, current_ids, tracer_provider

__all__ = [
    "REDACTED",
    "AuthorityMetrics",
    "CorrelationMiddleware",
    "LedgerMetrics",
    "ResilienceMetrics",
    "configure_logging",
    "current_ids",
    "get_logger",
    "redact",
    "tracer_provider",
]
