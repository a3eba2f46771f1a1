"""The pipeline: timeout → circuit breaker → retry → bulkhead → request, then fallback.

* The **overall timeout** is outermost: one :class:`Deadline` for the whole call, across
  attempts, backoff and queueing. No attempt and no wait outlives it.
* The **circuit breaker** admits the call (or refuses it with ``CircuitOpen`` before any
  attempt) and records the call's final outcome.
* **Retry** runs attempts; each attempt is bounded by ``min(attempt_timeout, time left)``.
* The **bulkhead** is held by each attempt only, never across a backoff sleep.
* The **fallback** answers last, when the chain has failed (appendix G lists it last because
  it is the last thing that happens: wrapped around each attempt it would hide every failure
  from retry and breaker).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random as _random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from coupon import codes
from coupon.errors import (
    BulkheadFull,
    CouponError,
    DeadlineExceeded,
    ResilienceError,
    RetriesExhausted,
)

from ._breaker import CircuitBreaker
from ._bulkhead import Bulkhead
from ._classify import Verdict, classify, retry_after_of, status_of
from ._events import AttemptFailed, AttemptSucceeded, Event, FallbackUsed, Hook, RetryScheduled
from ._policy import PipelinePolicy
from ._retry import RetryBudget, backoff
from ._testing import is_testing
from ._timeout import Clock, Deadline, Sleep, race

__all__ = ["Outcome", "Pipeline"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Outcome(Generic[T]):
    """What :meth:`Pipeline.execute` returns.

    Attributes:
        value: the dependency's answer, or the fallback's.
        degraded: ``True`` when the fallback answered.
        reason: why the fallback was used: the error code (``"CPN-RES-001"``) or the
            exception's class name; ``None`` when not degraded.
        error: the exception the fallback replaced.
    """

    value: T
    degraded: bool = False
    reason: str | None = None
    error: BaseException | None = None


class Pipeline:
    """Calls one dependency through its resilience strategies.

    Args:
        policy: the configuration (see :data:`DEFAULTS` and :func:`load`).
        hooks: receive every :data:`Event`.
        classify: the transient/unknown/permanent classifier.
        clock: a monotonic clock in seconds.
        sleep: the sleep for backoff and timers.
        wall_clock: POSIX time, to read ``Retry-After`` dates.
        random: a uniform draw in [0, 1), for jitter.
    """

    def __init__(
        self,
        policy: PipelinePolicy,
        *,
        hooks: Iterable[Hook] = (),
        classify: Callable[[BaseException], Verdict] = classify,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        wall_clock: Clock = time.time,
        random: Callable[[], float] = _random.random,
    ) -> None:
        self.policy = policy
        self.name = policy.name
        self.hooks = list(hooks)
        self._classify = classify
        self._clock = clock
        self._sleep = sleep
        self._wall_clock = wall_clock
        self._random = random
        self.breaker = (
            None
            if policy.breaker is None
            else CircuitBreaker(policy.breaker, name=self.name, clock=clock, on_change=self._emit)
        )
        self.bulkhead = (
            None
            if policy.bulkhead is None
            else Bulkhead(policy.bulkhead, name=self.name, emit=self._emit)
        )
        budget = None if policy.retry is None else policy.retry.budget
        self.budget = None if budget is None else RetryBudget(budget, clock=clock)

    def without_retry(self) -> Pipeline:
        """A twin for calls that must not be repeated (a ``POST`` without a key).

        It shares this pipeline's breaker, bulkhead, hooks and timeouts, so its failures
        count toward the same dependency's state, and it never retries.
        """
        twin = Pipeline(
            dataclasses.replace(self.policy, retry=None),
            classify=self._classify,
            clock=self._clock,
            sleep=self._sleep,
            wall_clock=self._wall_clock,
            random=self._random,
        )
        twin.hooks = self.hooks
        twin.breaker = self.breaker
        twin.bulkhead = self.bulkhead
        return twin

    def _emit(self, event: Event) -> None:
        for hook in self.hooks:
            hook(event)

    async def call(self, fn: Callable[[], Awaitable[T]], /) -> T:
        """Call ``fn`` through the pipeline and return its answer.

        Raises:
            CircuitOpen: the breaker is open; ``fn`` was not called.
            BulkheadFull: no slot and no queue place; not retried.
            DeadlineExceeded: the overall timeout ran out, or a wait would outlive it.
            RetriesExhausted: a transient failure outlasted the attempts or the budget.
            Exception: a permanent failure of ``fn``, unchanged.
        """
        breaker = self.breaker
        if breaker is not None:
            breaker.acquire()
        deadline = Deadline(self._clock, self.policy.timeout)
        try:
            if self.policy.timeout is None:
                result = await self._attempts(fn, deadline)
            else:
                try:
                    result = await race(
                        self._attempts(fn, deadline), self.policy.timeout, self._sleep
                    )
                except TimeoutError as exc:
                    raise self._deadline("the overall timeout ran out") from exc
        except BaseException as exc:
            if breaker is not None:
                breaker.record(self._breaker_outcome(exc))
            raise
        if breaker is not None:
            breaker.record(True)
        return result

    async def execute(
        self,
        fn: Callable[[], Awaitable[T]],
        /,
        *,
        fallback: Callable[[BaseException], Awaitable[T]] | None = None,
    ) -> Outcome[T]:
        """Like :meth:`call`, but answer from ``fallback`` when the dependency cannot.

        The fallback is used for every :class:`~coupon.errors.ResilienceError` and every
        transient or unknown failure; a permanent failure (a 404, a bug) is raised unchanged.

        Returns:
            An :class:`Outcome`, with ``degraded=True`` when the fallback answered.
        """
        try:
            return Outcome(await self.call(fn))
        except Exception as exc:
            if fallback is None:
                raise
            if not isinstance(exc, ResilienceError) and self._classify(exc) is Verdict.PERMANENT:
                raise
            reason = exc.code.code if isinstance(exc, CouponError) else type(exc).__name__
            self._emit(FallbackUsed(self.name, reason, exc))
            return Outcome(await fallback(exc), degraded=True, reason=reason, error=exc)

    def _breaker_outcome(self, exc: BaseException) -> bool | None:
        if isinstance(exc, DeadlineExceeded | RetriesExhausted):
            return False
        if isinstance(exc, ResilienceError) or not isinstance(exc, Exception):
            return None  # refused by the bulkhead, or cancelled: says nothing of the dependency
        return self._classify(exc) is Verdict.PERMANENT

    def _verdict(self, exc: BaseException) -> Verdict:
        verdict = self._classify(exc)
        status = status_of(exc)
        retry = self.policy.retry
        if (
            verdict is not Verdict.PERMANENT
            and status is not None
            and retry is not None
            and status not in retry.on_status
        ):
            return Verdict.PERMANENT
        return verdict

    def _deadline(self, reason: str, attempts: int = 0) -> DeadlineExceeded:
        return DeadlineExceeded(codes.RES_DEADLINE, reason, pipeline=self.name, attempts=attempts)

    async def _attempts(self, fn: Callable[[], Awaitable[T]], deadline: Deadline) -> T:
        retry = self.policy.retry
        attempt = 0
        unknown_seen = False
        if self.budget is not None:
            self.budget.record_first()
        while True:
            attempt += 1
            started = self._clock()
            try:
                result = await self._attempt(fn, deadline)
            except (BulkheadFull, DeadlineExceeded) as exc:
                if exc.pipeline == self.name and not exc.attempts:
                    exc.attempts = attempt  # refused by our own bulkhead or deadline: no retry
                raise
            except Exception as exc:
                verdict = self._verdict(exc)
                timed_out = isinstance(exc, TimeoutError)
                outcome = "timeout" if timed_out else verdict.value
                elapsed = self._clock() - started
                self._emit(AttemptFailed(self.name, attempt, elapsed, outcome, exc))
                if timed_out and deadline.expired():
                    raise self._deadline("the overall timeout ran out", attempt) from exc
                if retry is None or verdict is Verdict.PERMANENT:
                    raise
                if attempt > retry.max_retries or (verdict is Verdict.UNKNOWN and unknown_seen):
                    raise RetriesExhausted(
                        codes.RES_RETRIES,
                        f"gave up after {attempt} attempts: {exc!r}",
                        pipeline=self.name,
                        attempts=attempt,
                    ) from exc
                unknown_seen = unknown_seen or verdict is Verdict.UNKNOWN
                await self._wait(exc, attempt, deadline)
            else:
                self._emit(AttemptSucceeded(self.name, attempt, self._clock() - started))
                return result

    async def _wait(self, exc: Exception, attempt: int, deadline: Deadline) -> None:
        """Sleep before the next attempt, or raise if the wait would outlive the deadline."""
        retry = self.policy.retry
        assert retry is not None
        delay = backoff(retry, attempt, self._random)
        asked = retry_after_of(exc, now=self._wall_clock())
        if asked is not None:
            delay = max(delay, asked)
        left = deadline.remaining()
        if left is not None and delay >= left:
            raise DeadlineExceeded(
                codes.RES_DEADLINE,
                f"the next attempt would start after {delay:g} s, {left:g} s are left",
                pipeline=self.name,
                attempts=attempt,
                retry_after=asked,
            ) from exc
        if self.budget is not None and not self.budget.try_retry():
            raise RetriesExhausted(
                codes.RES_BUDGET,
                f"the retry budget is spent: {exc!r}",
                pipeline=self.name,
                attempts=attempt,
            ) from exc
        self._emit(RetryScheduled(self.name, attempt, delay, asked, exc))
        if not is_testing():
            await self._sleep(delay)

    async def _attempt(self, fn: Callable[[], Awaitable[T]], deadline: Deadline) -> T:
        if self.bulkhead is None:
            return await self._bounded(fn, deadline)
        async with self.bulkhead.slot():
            return await self._bounded(fn, deadline)

    async def _bounded(self, fn: Callable[[], Awaitable[T]], deadline: Deadline) -> T:
        seconds = deadline.bound(self.policy.attempt_timeout)
        if seconds is None:
            return await fn()
        if seconds <= 0:
            raise self._deadline("no time left for another attempt")
        return await race(fn(), seconds, self._sleep)
