"""The in-process GCRA store: embedded mode, and the fallback while Redis is down."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from ._gcra import Outcome, soft_hard

__all__ = ["LocalGcra", "monotonic_us"]


def monotonic_us() -> int:
    """The monotonic clock in integer microseconds."""
    return time.monotonic_ns() // 1000


class LocalGcra:
    """Keeps the hard and soft TATs of each key in a bounded, least-recently-used map.

    Times are integer microseconds from ``clock``. When more than ``capacity`` keys are
    live, the least recently used is forgotten (it starts again with a full burst).
    """

    def __init__(self, *, capacity: int = 100_000, clock: Callable[[], int] = monotonic_us) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._tats: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._capacity = capacity
        self._clock = clock

    def check(
        self, key: str, *, hard: tuple[int, int], soft: tuple[int, int], cost: int = 1
    ) -> Outcome:
        """Check and count one request; see :func:`coupon.ratelimit.soft_hard`."""
        now = self._clock()
        hard_tat, soft_tat = self._tats.pop(key, (now, now))
        outcome, hard_tat, soft_tat = soft_hard(
            hard_tat, soft_tat, now, hard=hard, soft=soft, cost=cost
        )
        if max(hard_tat, soft_tat) > now:
            self._tats[key] = (hard_tat, soft_tat)
            while len(self._tats) > self._capacity:
                self._tats.popitem(last=False)
        return outcome

    def clear(self) -> None:
        """Forget every key."""
        self._tats.clear()

    def __len__(self) -> int:
        return len(self._tats)
