"""Test helpers: the testing switch, a clock that jumps, and scripted faults.

``set_testing(True)`` is stamina's switch: backoff delays are still computed and reported,
but not slept. :class:`ManualClock` is a clock *and* a sleep: a sleeping task lets the other
tasks run, then the clock jumps to the earliest wake-up, so timeouts, backoff, breaker
windows and deadlines are exact and instant. :class:`FaultInjector` stands in for a
dependency and follows a script.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Fail",
    "FaultInjector",
    "ManualClock",
    "Respond",
    "Slow",
    "StatusFault",
    "is_testing",
    "set_testing",
]

_TESTING = False
_IDLE_ROUNDS = 50  # event-loop rounds a ManualClock lets pass before it jumps


def set_testing(testing: bool) -> None:
    """Turn testing mode on or off: when on, pipelines do not sleep between retries."""
    global _TESTING  # one process-wide switch, like stamina's
    _TESTING = testing


def is_testing() -> bool:
    """Whether testing mode is on."""
    return _TESTING


class ManualClock:
    """A monotonic clock that moves only when told to or when every task is asleep on it.

    Call it for the time; pass ``clock.sleep`` as a pipeline's sleep.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = 0
        self._jumper: asyncio.Task[None] | None = None

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by hand, waking whoever is due."""
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    async def sleep(self, seconds: float) -> None:
        """Sleep on this clock."""
        loop = asyncio.get_running_loop()
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = loop.create_future()
        self._seq += 1
        heapq.heappush(self._sleepers, (self._now + seconds, self._seq, future))
        if self._jumper is None or self._jumper.done():
            self._jumper = loop.create_task(self._jump())
        try:
            await future
        finally:
            future.cancel()

    async def _jump(self) -> None:
        while True:
            for _ in range(_IDLE_ROUNDS):
                await asyncio.sleep(0)
            while self._sleepers and self._sleepers[0][2].done():
                heapq.heappop(self._sleepers)
            if not self._sleepers:
                return
            self.advance(max(0.0, self._sleepers[0][0] - self._now))


class StatusFault(Exception):
    """An HTTP error answer, shaped like ``httpx.HTTPStatusError`` for the classifier."""

    def __init__(self, status_code: int, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code
        self.headers = dict(headers or {})


@dataclass(frozen=True)
class Fail:
    """Raise ``error``."""

    error: BaseException


@dataclass(frozen=True)
class Respond:
    """Answer with HTTP ``status``: return ``value`` below 400, raise :class:`StatusFault` else."""

    status: int
    value: Any = None
    retry_after: str | None = None


@dataclass(frozen=True)
class Slow:
    """Take ``seconds`` on the injector's sleep, then return ``value``."""

    seconds: float
    value: Any = None


Step = Fail | Respond | Slow


@dataclass
class FaultInjector:
    """A stand-in dependency that plays ``script`` one step per call, then ``then`` forever.

    Args:
        script: the steps, in order.
        then: the step once the script is spent (by default: return ``"ok"``).
        sleep: what a :class:`Slow` step sleeps on (a :class:`ManualClock`'s ``sleep``).
    """

    script: Iterable[Step] = ()
    then: Step = field(default_factory=lambda: Respond(200, "ok"))
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    calls: int = 0

    def __post_init__(self) -> None:
        self._steps = list(self.script)

    async def __call__(self) -> Any:
        step = self._steps[self.calls] if self.calls < len(self._steps) else self.then
        self.calls += 1
        if isinstance(step, Fail):
            raise step.error
        if isinstance(step, Slow):
            await self.sleep(step.seconds)
            return step.value
        if step.status >= 400:
            headers = {} if step.retry_after is None else {"Retry-After": step.retry_after}
            raise StatusFault(step.status, headers)
        return step.value
