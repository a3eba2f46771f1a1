"""The overall deadline and the race that bounds an awaitable by an (injected) sleep."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["Clock", "Deadline", "Sleep", "race"]

T = TypeVar("T")

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class Deadline:
    """A point in time, on the injected clock, that every attempt and every wait must respect.

    Args:
        clock: a monotonic clock (seconds).
        timeout: seconds from now; ``None`` for no deadline.
    """

    __slots__ = ("_clock", "at")

    def __init__(self, clock: Clock, timeout: float | None) -> None:
        self._clock = clock
        self.at = None if timeout is None else clock() + timeout

    def remaining(self) -> float | None:
        """Seconds left (0 when past), or ``None`` without a deadline."""
        if self.at is None:
            return None
        return max(0.0, self.at - self._clock())

    def expired(self) -> bool:
        """Whether the deadline has passed."""
        return self.at is not None and self._clock() >= self.at

    def bound(self, seconds: float | None) -> float | None:
        """The smaller of ``seconds`` and the time left (``None`` when neither bounds)."""
        left = self.remaining()
        if left is None:
            return seconds
        return left if seconds is None else min(seconds, left)


async def race(awaitable: Awaitable[T], seconds: float, sleep: Sleep) -> T:
    """Await ``awaitable``, or raise ``TimeoutError`` once ``sleep(seconds)`` returns first.

    The timer is the injected sleep rather than the event loop's clock, so a test clock that
    jumps decides timeouts too. On a tie the result wins. The loser is cancelled and awaited.
    """
    task = asyncio.ensure_future(awaitable)
    timer = asyncio.ensure_future(sleep(seconds))
    try:
        done, _ = await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        timer.cancel()
        await asyncio.gather(task, timer, return_exceptions=True)
        raise
    if task in done:
        timer.cancel()
        await asyncio.gather(timer, return_exceptions=True)
        return task.result()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    raise TimeoutError(f"timed out after {seconds:g} s")
