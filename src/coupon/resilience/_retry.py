"""Backoff delays and the retry budget."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from ._policy import BudgetPolicy, RetryPolicy
from ._timeout import Clock

__all__ = ["RetryBudget", "backoff"]


def backoff(policy: RetryPolicy, retry: int, random: Callable[[], float]) -> float:
    """The wait before retry number ``retry`` (1 for the first retry).

    Exponential (``base_delay * multiplier ** (retry - 1)``, capped at ``max_delay``), drawn
    uniformly below that with full jitter, plus a uniform draw below ``jitter``.
    """
    cap = min(policy.max_delay, policy.base_delay * policy.multiplier ** (retry - 1))
    delay = cap * random() if policy.full_jitter else cap
    return delay + policy.jitter * random()


class RetryBudget:
    """Retries may add at most ``ratio`` (plus ``min_retries``) on top of first attempts.

    Both are counted over a sliding ``window`` of seconds, so a dependency that fails for
    everyone is not hammered by every caller's retries at once (a retry storm); the budget
    refills as first attempts keep coming. Shared by every call of one pipeline.
    """

    def __init__(self, policy: BudgetPolicy, *, clock: Clock) -> None:
        self.policy = policy
        self._clock = clock
        self._firsts: deque[float] = deque()
        self._retries: deque[float] = deque()

    def _trim(self) -> float:
        now = self._clock()
        horizon = now - self.policy.window
        for times in (self._firsts, self._retries):
            while times and times[0] <= horizon:
                times.popleft()
        return now

    def record_first(self) -> None:
        """Count a first attempt."""
        self._firsts.append(self._trim())

    def try_retry(self) -> bool:
        """Spend one retry if the budget allows it; return whether it did."""
        now = self._trim()
        allowed = self.policy.min_retries + self.policy.ratio * len(self._firsts)
        if len(self._retries) + 1 > allowed:
            return False
        self._retries.append(now)
        return True

    def available(self) -> float:
        """Retries that could still be spent now."""
        self._trim()
        allowed = self.policy.min_retries + self.policy.ratio * len(self._firsts)
        return max(0.0, allowed - len(self._retries))
