"""Composable async resilience pipelines: timeout → circuit breaker → retry → bulkhead → fallback.

One :class:`Pipeline` per dependency, configured from data (:func:`load`, :data:`DEFAULTS`),
reporting frozen-dataclass events to hooks, testable with an injected clock and sleep
(:class:`ManualClock`), :func:`set_testing` and a :class:`FaultInjector`. See
``docs/resilience.md``.
"""

from ._breaker import CircuitBreaker
from ._bulkhead import Bulkhead
from ._classify import (
    PERMANENT_STATUS,
    TRANSIENT_STATUS,
    Verdict,
    classify,
    classify_status,
    parse_retry_after,
    retry_after_of,
)
from ._events import (
    AttemptFailed,
    AttemptSucceeded,
    BreakerState,
    BreakerStateChanged,
    BulkheadOccupancy,
    BulkheadRejected,
    Event,
    FallbackUsed,
    Hook,
    RetryScheduled,
)
from ._pipeline import Outcome, Pipeline
from ._policy import (
    DEFAULTS,
    BreakerPolicy,
    BudgetPolicy,
    BulkheadPolicy,
    PipelinePolicy,
    RetryPolicy,
    from_dict,
    load,
)
from ._retry import RetryBudget
from ._testing import (
    Fail,
    FaultInjector,
    ManualClock,
    Respond,
    Slow,
    StatusFault,
    is_testing,
    set_testing,
)

__all__ = [
    "DEFAULTS",
    "PERMANENT_STATUS",
    "TRANSIENT_STATUS",
    "AttemptFailed",
    "AttemptSucceeded",
    "BreakerPolicy",
    "BreakerState",
    "BreakerStateChanged",
    "BudgetPolicy",
    "Bulkhead",
    "BulkheadOccupancy",
    "BulkheadPolicy",
    "BulkheadRejected",
    "CircuitBreaker",
    "Event",
    "Fail",
    "FallbackUsed",
    "FaultInjector",
    "Hook",
    "ManualClock",
    "Outcome",
    "Pipeline",
    "PipelinePolicy",
    "Respond",
    "RetryBudget",
    "RetryPolicy",
    "RetryScheduled",
    "Slow",
    "StatusFault",
    "Verdict",
    "classify",
    "classify_status",
    "from_dict",
    "is_testing",
    "load",
    "parse_retry_after",
    "retry_after_of",
    "set_testing",
]
