"""A circuit breaker over a sliding time window of buckets, with bounded half-open probes.

Closed: calls pass; each outcome lands in the bucket of the current ``window / buckets``
slice of time, and buckets older than the window are dropped. When the window holds at least
``min_throughput`` outcomes and at least ``failure_ratio`` of them are failures, the breaker
opens. Open: calls are refused with :class:`~coupon.errors.CircuitOpen` until
``break_duration`` has passed; then it is half-open. Half-open: at most ``probes`` calls are
let through; ``probes`` successes close it, one failure opens it again. An operator may
``isolate()`` it (open until ``reset()``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from coupon import codes
from coupon.errors import CircuitOpen

from ._events import BreakerState, BreakerStateChanged
from ._policy import BreakerPolicy
from ._timeout import Clock

__all__ = ["CircuitBreaker"]


class _Window:
    """Success and failure counts per time bucket, for the last ``window`` seconds."""

    __slots__ = ("_buckets", "_count", "_width")

    def __init__(self, window: float, buckets: int) -> None:
        self._width = window / buckets
        self._count = buckets
        self._buckets: deque[list[int]] = deque()  # [bucket index, successes, failures]

    def _trim(self, now: float) -> int:
        index = int(now // self._width)
        while self._buckets and self._buckets[0][0] <= index - self._count:
            self._buckets.popleft()
        return index

    def add(self, now: float, *, failed: bool) -> None:
        index = self._trim(now)
        if not self._buckets or self._buckets[-1][0] != index:
            self._buckets.append([index, 0, 0])
        self._buckets[-1][2 if failed else 1] += 1

    def totals(self, now: float) -> tuple[int, int]:
        """(outcomes, failures) in the window ending at ``now``."""
        self._trim(now)
        return (
            sum(b[1] + b[2] for b in self._buckets),
            sum(b[2] for b in self._buckets),
        )

    def clear(self) -> None:
        self._buckets.clear()


class CircuitBreaker:
    """One dependency's circuit breaker.

    Args:
        policy: thresholds and durations.
        name: the pipeline's name, for errors and events.
        clock: a monotonic clock in seconds.
        on_change: called with a :class:`BreakerStateChanged` on every transition.
    """

    def __init__(
        self,
        policy: BreakerPolicy,
        *,
        name: str = "",
        clock: Clock,
        on_change: Callable[[BreakerStateChanged], None] | None = None,
    ) -> None:
        self.policy = policy
        self.name = name
        self._clock = clock
        self._on_change = on_change
        self._window = _Window(policy.window, policy.buckets)
        self._state = BreakerState.CLOSED
        self._opened_at = 0.0
        self._isolated = False
        self._admitted = 0  # probes let through while half-open
        self._successes = 0  # probes that succeeded while half-open

    @property
    def state(self) -> BreakerState:
        """The current state (an open breaker turns half-open once the break is over)."""
        if (
            self._state is BreakerState.OPEN
            and not self._isolated
            and self._clock() >= self._opened_at + self.policy.break_duration
        ):
            self._move(BreakerState.HALF_OPEN)
        return self._state

    @property
    def isolated(self) -> bool:
        """Whether an operator forced the breaker open."""
        return self._isolated

    def totals(self) -> tuple[int, int]:
        """(outcomes, failures) in the current window."""
        return self._window.totals(self._clock())

    def acquire(self) -> None:
        """Admit one call, or raise :class:`~coupon.errors.CircuitOpen`."""
        state = self.state
        if state is BreakerState.CLOSED:
            return
        if state is BreakerState.HALF_OPEN and self._admitted < self.policy.probes:
            self._admitted += 1
            return
        if self._isolated:
            raise CircuitOpen(codes.RES_CIRCUIT_OPEN, "isolated by an operator", pipeline=self.name)
        if state is BreakerState.OPEN:
            wait = self._opened_at + self.policy.break_duration - self._clock()
            reason = "open"
        else:
            wait, reason = None, "half-open, every probe is taken"
        raise CircuitOpen(codes.RES_CIRCUIT_OPEN, reason, pipeline=self.name, retry_after=wait)

    def record(self, outcome: bool | None) -> None:
        """Record the outcome of an admitted call: ``True`` success, ``False`` failure.

        ``None`` (cancelled, or refused by a later stage) counts for nothing and gives a
        half-open probe back.
        """
        state = self._state
        if state is BreakerState.HALF_OPEN:
            if outcome is None:
                self._admitted = max(0, self._admitted - 1)
            elif not outcome:
                self._open()
            else:
                self._successes += 1
                if self._successes >= self.policy.probes:
                    self._move(BreakerState.CLOSED)
            return
        if state is not BreakerState.CLOSED or outcome is None:
            return  # an outcome of a call admitted before the breaker opened
        now = self._clock()
        self._window.add(now, failed=not outcome)
        total, failures = self._window.totals(now)
        if total >= self.policy.min_throughput and failures >= self.policy.failure_ratio * total:
            self._open()

    def isolate(self) -> None:
        """Force the breaker open until :meth:`reset`."""
        self._isolated = True
        self._open()

    def reset(self) -> None:
        """Close the breaker, end an isolation and forget the window."""
        self._isolated = False
        self._move(BreakerState.CLOSED)

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._move(BreakerState.OPEN)

    def _move(self, new: BreakerState) -> None:
        old = self._state
        self._state = new
        self._admitted = self._successes = 0
        self._window.clear()
        if old is not new and self._on_change is not None:
            self._on_change(BreakerStateChanged(self.name, old, new, self._isolated))
