"""What a pipeline reports: frozen dataclasses sent to Protocol hooks (stamina style).

A hook is any callable taking one event. Hooks run synchronously, in registration order, on
the task that made the call, so they must be quick and must not raise; metrics and logs are
what they are for (:class:`coupon.observability.ResilienceMetrics` is one).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol, TypeAlias

__all__ = [
    "AttemptFailed",
    "AttemptSucceeded",
    "BreakerState",
    "BreakerStateChanged",
    "BulkheadOccupancy",
    "BulkheadRejected",
    "Event",
    "FallbackUsed",
    "Hook",
    "RetryScheduled",
]


class BreakerState(enum.IntEnum):
    """The state of a circuit breaker; the values are the ``breaker_state`` gauge's."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


@dataclass(frozen=True, slots=True)
class AttemptSucceeded:
    """An attempt returned."""

    pipeline: str
    attempt: int
    elapsed: float


@dataclass(frozen=True, slots=True)
class AttemptFailed:
    """An attempt raised; ``outcome`` is timeout, transient, unknown or permanent."""

    pipeline: str
    attempt: int
    elapsed: float
    outcome: str
    error: BaseException


@dataclass(frozen=True, slots=True)
class RetryScheduled:
    """Attempt ``attempt`` failed and the next one starts after ``delay`` seconds.

    ``retry_after`` is the delay the dependency asked for, when it asked.
    """

    pipeline: str
    attempt: int
    delay: float
    retry_after: float | None
    error: BaseException


@dataclass(frozen=True, slots=True)
class BreakerStateChanged:
    """The circuit breaker moved from ``old`` to ``new`` (``isolated``: forced open by hand)."""

    pipeline: str
    old: BreakerState
    new: BreakerState
    isolated: bool = False


@dataclass(frozen=True, slots=True)
class BulkheadOccupancy:
    """The bulkhead's slots in use or its queue changed."""

    pipeline: str
    in_use: int
    queued: int


@dataclass(frozen=True, slots=True)
class BulkheadRejected:
    """A call was turned away because every slot and queue place was taken."""

    pipeline: str
    in_use: int
    queued: int


@dataclass(frozen=True, slots=True)
class FallbackUsed:
    """The fallback answered instead of the dependency; ``reason`` is a code or a class name."""

    pipeline: str
    reason: str
    error: BaseException


Event: TypeAlias = (
    AttemptSucceeded
    | AttemptFailed
    | RetryScheduled
    | BreakerStateChanged
    | BulkheadOccupancy
    | BulkheadRejected
    | FallbackUsed
)


class Hook(Protocol):
    """Receives every event of the pipelines it is registered with."""

    def __call__(self, event: Event, /) -> None:
        """Handle one event; must be quick and must not raise."""
