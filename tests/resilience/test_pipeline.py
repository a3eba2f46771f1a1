"""The pipeline: strategy order, deadlines, retries, budget, fallback and events."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from coupon.errors import BulkheadFull, CircuitOpen, DeadlineExceeded, RetriesExhausted
from coupon.resilience import (
    AttemptFailed,
    AttemptSucceeded,
    BreakerPolicy,
    BreakerState,
    BudgetPolicy,
    BulkheadPolicy,
    Event,
    Fail,
    FallbackUsed,
    FaultInjector,
    ManualClock,
    Outcome,
    Pipeline,
    PipelinePolicy,
    Respond,
    RetryPolicy,
    RetryScheduled,
    Slow,
    StatusFault,
    is_testing,
)

RETRY = RetryPolicy(max_retries=3, base_delay=1.0, multiplier=2.0, max_delay=60.0, budget=None)
POLICY = PipelinePolicy(name="dep", timeout=30.0, attempt_timeout=10.0, retry=RETRY)
WALL = 1_445_412_480.0  # Wed, 21 Oct 2015 07:28:00 GMT


def make(
    policy: PipelinePolicy = POLICY, **changes: Any
) -> tuple[Pipeline, ManualClock, list[Event]]:
    clock = ManualClock()
    events: list[Event] = []
    policy = dataclasses.replace(policy, **changes)
    pipeline = Pipeline(
        policy,
        hooks=[events.append],
        clock=clock,
        sleep=clock.sleep,
        wall_clock=lambda: WALL + clock(),
        random=lambda: 1.0,  # full jitter at its top: the capped exponential delay
    )
    return pipeline, clock, events


def injector(clock: ManualClock, *script: Any) -> FaultInjector:
    return FaultInjector(script=script, sleep=clock.sleep)


def delays(events: list[Event]) -> list[float]:
    return [e.delay for e in events if isinstance(e, RetryScheduled)]


class TestRetry:
    @pytest.mark.asyncio
    async def test_transient_then_success(self) -> None:
        """Transient failures are retried with exponential backoff until one succeeds."""
        pipeline, clock, events = make()
        dep = injector(clock, Fail(ConnectionResetError()), Respond(503), Respond(200, "yes"))
        assert await pipeline.call(dep) == "yes"
        assert dep.calls == 3
        assert delays(events) == [1.0, 2.0]
        assert clock() == 3.0

    @pytest.mark.asyncio
    async def test_permanent_not_retried(self) -> None:
        """A 404 is raised unchanged after one attempt."""
        pipeline, clock, _ = make()
        dep = injector(clock, Respond(404))
        with pytest.raises(StatusFault):
            await pipeline.call(dep)
        assert dep.calls == 1

    @pytest.mark.asyncio
    async def test_unknown_once(self) -> None:
        """A 500 is retried at most once."""
        pipeline, clock, _ = make()
        dep = injector(clock, Respond(500), Respond(500), Respond(200))
        with pytest.raises(RetriesExhausted) as info:
            await pipeline.call(dep)
        assert dep.calls == 2
        assert info.value.code.code == "CPN-RES-004"

    @pytest.mark.asyncio
    async def test_status_not_in_policy(self) -> None:
        """A status the policy does not list is not retried (sync-microservice and 500)."""
        retry = dataclasses.replace(RETRY, on_status=frozenset({503}))
        pipeline, clock, _ = make(retry=retry)
        dep = injector(clock, Respond(500))
        with pytest.raises(StatusFault):
            await pipeline.call(dep)
        assert dep.calls == 1

    @pytest.mark.asyncio
    async def test_exhausted(self) -> None:
        """After max_retries the last failure is wrapped in RetriesExhausted."""
        pipeline, clock, _ = make()
        dep = FaultInjector(then=Respond(503), sleep=clock.sleep)
        with pytest.raises(RetriesExhausted) as info:
            await pipeline.call(dep)
        assert dep.calls == 4
        assert info.value.attempts == 4
        assert isinstance(info.value.__cause__, StatusFault)

    @pytest.mark.asyncio
    async def test_no_retry_policy(self) -> None:
        """Without a retry policy a transient failure propagates unchanged."""
        pipeline, clock, _ = make(retry=None)
        with pytest.raises(ConnectionResetError):
            await pipeline.call(injector(clock, Fail(ConnectionResetError())))

    @pytest.mark.asyncio
    async def test_budget_exhausted(self) -> None:
        """Retries stop when they would exceed the budget's share of first attempts."""
        retry = dataclasses.replace(
            RETRY, budget=BudgetPolicy(ratio=0.5, window=60.0, min_retries=0)
        )
        pipeline, clock, _ = make(retry=retry)
        assert await pipeline.call(injector(clock)) == "ok"  # one first attempt: 0.5 allowed
        dep = injector(clock, Respond(503))
        assert await pipeline.call(dep) == "ok"  # 2 firsts: 1 retry allowed, spent
        with pytest.raises(RetriesExhausted) as info:
            await pipeline.call(injector(clock, Respond(503)))
        assert info.value.code.code == "CPN-RES-005"
        assert pipeline.budget is not None
        assert pipeline.budget.available() == 0.5

    @pytest.mark.asyncio
    async def test_testing_mode_does_not_sleep(self, testing_mode: None) -> None:
        """In testing mode the backoff is reported but not slept."""
        assert is_testing()
        pipeline, clock, events = make()
        await pipeline.call(injector(clock, Respond(503), Respond(503)))
        assert delays(events) == [1.0, 2.0]
        assert clock() == 0.0


class TestRetryAfter:
    @pytest.mark.asyncio
    async def test_seconds(self) -> None:
        """A Retry-After in seconds longer than the backoff is honoured."""
        pipeline, clock, events = make()
        await pipeline.call(injector(clock, Respond(429, retry_after="7")))
        assert delays(events) == [7.0]
        assert clock() == 7.0

    @pytest.mark.asyncio
    async def test_http_date(self) -> None:
        """A Retry-After HTTP-date is honoured as the time until that date."""
        pipeline, clock, events = make()
        await pipeline.call(
            injector(clock, Respond(503, retry_after="Wed, 21 Oct 2015 07:28:12 GMT"))
        )
        assert delays(events) == [12.0]

    @pytest.mark.asyncio
    async def test_past_deadline_gives_up(self) -> None:
        """A Retry-After longer than the time left gives up at once."""
        pipeline, clock, _ = make()
        dep = injector(clock, Respond(503, retry_after="120"))
        with pytest.raises(DeadlineExceeded) as info:
            await pipeline.call(dep)
        assert dep.calls == 1
        assert clock() == 0.0
        assert info.value.retry_after == 120.0
        assert info.value.code.code == "CPN-RES-003"


class TestDeadline:
    @pytest.mark.asyncio
    async def test_attempt_timeout(self) -> None:
        """A slow attempt is cut at the per-attempt timeout and retried."""
        pipeline, clock, events = make()
        dep = injector(clock, Slow(60.0), Respond(200, "fast"))
        assert await pipeline.call(dep) == "fast"
        failed = [e for e in events if isinstance(e, AttemptFailed)]
        assert [f.outcome for f in failed] == ["timeout"]
        assert failed[0].elapsed == 10.0
        assert clock() == 11.0

    @pytest.mark.asyncio
    async def test_carries_across_attempts(self) -> None:
        """The last attempt only gets what is left of the overall deadline."""
        pipeline, clock, _events = make(timeout=25.0)
        dep = FaultInjector(then=Slow(60.0), sleep=clock.sleep)
        with pytest.raises(DeadlineExceeded):
            await pipeline.call(dep)
        assert clock() == 25.0  # 10 + 1 + 10 + 2, then 2 s of the third attempt
        assert dep.calls == 3

    @pytest.mark.asyncio
    async def test_timeout_bounds_all_retries(self) -> None:
        """The overall timeout is outermost: it bounds every retry and backoff together."""
        retry = dataclasses.replace(RETRY, max_retries=100, base_delay=0.5, multiplier=1.0)
        pipeline, clock, _ = make(timeout=3.0, attempt_timeout=None, retry=retry)
        dep = FaultInjector(then=Respond(503), sleep=clock.sleep)
        with pytest.raises(DeadlineExceeded):
            await pipeline.call(dep)
        assert clock() <= 3.0
        assert dep.calls == 6

    @pytest.mark.asyncio
    async def test_overall_timeout_without_attempt_timeout(self) -> None:
        """With no per-attempt timeout the overall timeout still cuts a hung call."""
        pipeline, clock, _ = make(timeout=2.0, attempt_timeout=None, retry=None)
        with pytest.raises(DeadlineExceeded):
            await pipeline.call(injector(clock, Slow(60.0)))
        assert clock() == 2.0


class TestOrder:
    @pytest.mark.asyncio
    async def test_open_breaker_before_retry(self) -> None:
        """An open breaker refuses before any attempt, and is not retried."""
        pipeline, clock, _ = make(breaker=BreakerPolicy(min_throughput=1))
        assert pipeline.breaker is not None
        pipeline.breaker.isolate()
        dep = injector(clock)
        with pytest.raises(CircuitOpen):
            await pipeline.call(dep)
        assert dep.calls == 0

    @pytest.mark.asyncio
    async def test_breaker_counts_calls_not_attempts(self) -> None:
        """The breaker sees one outcome per call, after retries."""
        pipeline, clock, _ = make(breaker=BreakerPolicy(min_throughput=2, failure_ratio=0.5))
        await pipeline.call(injector(clock, Respond(503), Respond(503)))
        assert pipeline.breaker is not None
        assert pipeline.breaker.totals() == (1, 0)
        with pytest.raises(RetriesExhausted):
            await pipeline.call(FaultInjector(then=Respond(503), sleep=clock.sleep))
        assert pipeline.breaker.state is BreakerState.OPEN

    @pytest.mark.asyncio
    async def test_permanent_counts_as_success(self) -> None:
        """A 404 is an answer: the breaker counts it as a success."""
        pipeline, clock, _ = make(breaker=BreakerPolicy(min_throughput=1))
        with pytest.raises(StatusFault):
            await pipeline.call(injector(clock, Respond(404)))
        assert pipeline.breaker is not None
        assert pipeline.breaker.totals() == (1, 0)

    @pytest.mark.asyncio
    async def test_bulkhead_rejection_not_retried(self) -> None:
        """A full bulkhead rejects the attempt and the retry stage does not try again."""
        pipeline, clock, events = make(bulkhead=BulkheadPolicy(max_concurrent=1, max_queue=0))
        assert pipeline.bulkhead is not None
        await pipeline.bulkhead.acquire()
        dep = injector(clock)
        with pytest.raises(BulkheadFull) as info:
            await pipeline.call(dep)
        assert dep.calls == 0
        assert info.value.attempts == 1
        assert not [e for e in events if isinstance(e, RetryScheduled)]


class TestFallback:
    @pytest.mark.asyncio
    async def test_degraded(self) -> None:
        """When the chain fails the fallback answers and the outcome is degraded."""
        pipeline, clock, events = make(retry=None)

        async def cached(exc: BaseException) -> str:
            return "stale"

        outcome = await pipeline.execute(injector(clock, Respond(503)), fallback=cached)
        assert (outcome.value, outcome.degraded, outcome.reason) == ("stale", True, "StatusFault")
        assert isinstance(events[-1], FallbackUsed)

    @pytest.mark.asyncio
    async def test_circuit_open_uses_fallback(self) -> None:
        """An open circuit is answered by the fallback, with its code as the reason."""
        pipeline, clock, _ = make(breaker=BreakerPolicy())
        assert pipeline.breaker is not None
        pipeline.breaker.isolate()

        async def cached(exc: BaseException) -> str:
            return "stale"

        outcome = await pipeline.execute(injector(clock), fallback=cached)
        assert outcome.reason == "CPN-RES-001"
        assert isinstance(outcome.error, CircuitOpen)

    @pytest.mark.asyncio
    async def test_not_degraded(self) -> None:
        """A healthy call is not degraded."""
        pipeline, clock, _ = make()
        assert await pipeline.execute(injector(clock)) == Outcome("ok")

    @pytest.mark.asyncio
    async def test_permanent_skips_fallback(self) -> None:
        """A permanent failure is raised, not papered over."""
        pipeline, clock, _ = make()

        async def cached(exc: BaseException) -> str:
            raise AssertionError("not called")

        with pytest.raises(StatusFault):
            await pipeline.execute(injector(clock, Respond(404)), fallback=cached)

    @pytest.mark.asyncio
    async def test_no_fallback_raises(self) -> None:
        """Without a fallback execute raises like call."""
        pipeline, clock, _ = make(retry=None)
        with pytest.raises(StatusFault):
            await pipeline.execute(injector(clock, Respond(503)))


class TestEvents:
    @pytest.mark.asyncio
    async def test_sequence(self) -> None:
        """Hooks receive each attempt, each scheduled retry and each breaker change in order."""
        pipeline, clock, events = make(breaker=BreakerPolicy(min_throughput=1))
        with pytest.raises(RetriesExhausted):
            await pipeline.call(FaultInjector(then=Respond(502), sleep=clock.sleep))
        kinds = [type(e).__name__ for e in events]
        assert kinds == [
            "AttemptFailed",
            "RetryScheduled",
            "AttemptFailed",
            "RetryScheduled",
            "AttemptFailed",
            "RetryScheduled",
            "AttemptFailed",
            "BreakerStateChanged",
        ]
        assert all(e.pipeline == "dep" for e in events)

    @pytest.mark.asyncio
    async def test_success(self) -> None:
        """A successful attempt is reported with its number and duration."""
        pipeline, clock, events = make()
        await pipeline.call(injector(clock, Slow(0.25, "ok")))
        assert events == [AttemptSucceeded("dep", 1, 0.25)]


class TestWithoutRetry:
    @pytest.mark.asyncio
    async def test_runs_once_and_shares_the_breaker(self) -> None:
        """The twin never retries, and its failures open the original's breaker."""
        pipeline, clock, events = make(breaker=BreakerPolicy(min_throughput=2, failure_ratio=0.5))
        once = pipeline.without_retry()
        assert once.breaker is pipeline.breaker
        assert once.bulkhead is pipeline.bulkhead
        dep = FaultInjector(then=Respond(503), sleep=clock.sleep)
        for _ in range(2):
            with pytest.raises(StatusFault):
                await once.call(dep)
        assert dep.calls == 2  # one attempt per call
        assert pipeline.breaker is not None
        assert pipeline.breaker.state is BreakerState.OPEN
        with pytest.raises(CircuitOpen):
            await pipeline.call(injector(clock))
        assert any(isinstance(e, AttemptFailed) for e in events)  # hooks are shared too
