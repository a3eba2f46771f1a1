"""The generic cell rate algorithm (GCRA), as a pure function over numbers.

GCRA keeps one number per limited thing, the *theoretical arrival time* (TAT): the time at
which the bucket would be empty again if no more requests came. A request of ``cost`` cells
conforms when ``max(tat, now) + cost * T <= now + tau + T``, where ``T`` (the emission
interval) is the time one cell takes to drain and ``tau`` (the burst tolerance) is how far
ahead of ``now`` the TAT may run. With ``tau = (burst - 1) * T`` a fresh bucket admits
``burst`` cells at once, then one every ``T``; over any interval of length ``t`` it never
admits more than ``burst + t / T`` cells.

The function works in whatever unit the caller picks; the limiter uses integer microseconds
(exact, and the same arithmetic as the Lua script in Redis).
"""

from __future__ import annotations

import math
from typing import NamedTuple

__all__ = ["GcraResult", "Outcome", "gcra", "soft_hard"]


class GcraResult(NamedTuple):
    """The outcome of one :func:`gcra` step.

    Attributes:
        allowed: whether the request conforms (and was counted).
        new_tat: the TAT to store: advanced when allowed, unchanged when refused.
        retry_after: how long until the same request would conform (0 when allowed).
        remaining: how many more one-cell requests would conform right now.
    """

    allowed: bool
    new_tat: float
    retry_after: float
    remaining: int


def gcra(
    tat: float, now: float, emission_interval: float, burst_tolerance: float, *, cost: int = 1
) -> GcraResult:
    """Decide one request of ``cost`` cells at time ``now`` against the stored ``tat``.

    Args:
        tat: the stored theoretical arrival time (0, or anything ``<= now``, for a new key).
        now: the current time.
        emission_interval: ``T``, the time one cell takes to drain (``period / rate``).
        burst_tolerance: ``tau``, how far the TAT may run ahead of ``now``
            (``(burst - 1) * T``).
        cost: the number of cells this request takes.

    Raises:
        ValueError: ``emission_interval <= 0``, ``burst_tolerance < 0`` or ``cost < 1``.
    """
    if not emission_interval > 0:
        raise ValueError("emission_interval must be positive")
    if not burst_tolerance >= 0:
        raise ValueError("burst_tolerance must not be negative")
    if cost < 1:
        raise ValueError("cost must be at least 1")
    start = max(tat, now)
    new_tat = start + cost * emission_interval
    allow_at = new_tat - burst_tolerance - emission_interval
    if allow_at > now:
        remaining = _remaining(start, now, emission_interval, burst_tolerance)
        return GcraResult(False, tat, allow_at - now, remaining)
    remaining = _remaining(new_tat, now, emission_interval, burst_tolerance)
    return GcraResult(True, new_tat, 0, remaining)


def _remaining(tat: float, now: float, emission_interval: float, burst_tolerance: float) -> int:
    return max(0, math.floor((now + burst_tolerance + emission_interval - tat) / emission_interval))


class Outcome(NamedTuple):
    """One soft-and-hard check, in the clock's unit (the Lua script returns the same fields).

    Attributes:
        allowed: the hard limit admitted the request.
        soft_exceeded: admitted, but over the soft limit.
        remaining: one-cell requests the hard limit would still admit right now.
        reset_after: time until the hard bucket is empty again.
        retry_after: when refused, time until the same request would be admitted; else 0.
    """

    allowed: bool
    soft_exceeded: bool
    remaining: int
    reset_after: float
    retry_after: float


def soft_hard(
    hard_tat: float,
    soft_tat: float,
    now: float,
    *,
    hard: tuple[float, float],
    soft: tuple[float, float],
    cost: int = 1,
) -> tuple[Outcome, float, float]:
    """Check the hard limit, then the soft one; return the outcome and the TATs to store.

    ``hard`` and ``soft`` are ``(emission_interval, burst_tolerance)`` pairs. A refused
    request changes neither TAT. An admitted request that is over the soft limit leaves the
    soft TAT alone (the soft meter counts what it would have admitted), so the flag clears as
    soon as the traffic drops back under the soft rate.
    """
    h = gcra(hard_tat, now, *hard, cost=cost)
    if not h.allowed:
        reset = max(hard_tat, now) - now
        return Outcome(False, False, h.remaining, reset, h.retry_after), hard_tat, soft_tat
    s = gcra(soft_tat, now, *soft, cost=cost)
    outcome = Outcome(True, not s.allowed, h.remaining, h.new_tat - now, 0)
    return outcome, h.new_tat, s.new_tat
