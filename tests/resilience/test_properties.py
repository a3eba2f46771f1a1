"""Hypothesis properties: probe limits and the deadline."""

from __future__ import annotations

import asyncio
import contextlib

from hypothesis import given, settings
from hypothesis import strategies as st

from coupon.errors import CircuitOpen, CouponError
from coupon.resilience import (
    BreakerPolicy,
    BreakerState,
    CircuitBreaker,
    Fail,
    FaultInjector,
    ManualClock,
    Pipeline,
    PipelinePolicy,
    Respond,
    RetryPolicy,
    Slow,
    StatusFault,
)

_OPS = st.lists(
    st.one_of(
        st.just(("acquire", 0.0)),
        st.tuples(st.sampled_from(["success", "failure", "neutral"]), st.just(0.0)),
        st.tuples(st.just("advance"), st.floats(0.0, 20.0)),
    ),
    max_size=60,
)


class TestBreakerProperties:
    @given(ops=_OPS, probes=st.integers(1, 3))
    def test_half_open_probe_limit(self, ops: list[tuple[str, float]], probes: int) -> None:
        """While half-open the breaker never has more than ``probes`` calls in flight."""
        clock = ManualClock()
        policy = BreakerPolicy(min_throughput=2, break_duration=5.0, window=10.0, probes=probes)
        breaker = CircuitBreaker(policy, clock=clock)
        in_flight = 0
        for op, seconds in ops:
            if op == "advance":
                clock.advance(seconds)
            elif op == "acquire":
                before = breaker.state
                try:
                    breaker.acquire()
                except CircuitOpen:
                    assert before is not BreakerState.CLOSED
                    continue
                in_flight = in_flight + 1 if before is BreakerState.HALF_OPEN else 0
                assert in_flight <= probes
            elif in_flight or breaker.state is BreakerState.CLOSED:
                state = breaker.state
                outcome = {"success": True, "failure": False, "neutral": None}[op]
                breaker.record(outcome)
                if state is BreakerState.HALF_OPEN:
                    in_flight = max(0, in_flight - 1) if outcome is None else in_flight
                if breaker.state is not BreakerState.HALF_OPEN:
                    in_flight = 0


_STEPS = st.lists(
    st.one_of(
        st.builds(Slow, st.floats(0.0, 5.0)),
        st.builds(Respond, st.sampled_from([200, 404, 429, 500, 503])),
        st.builds(
            Respond,
            st.just(503),
            st.none(),
            st.integers(0, 8).map(str),
        ),
        st.just(Fail(ConnectionResetError())),
    ),
    max_size=8,
)


class TestDeadlineProperties:
    @settings(max_examples=60, deadline=None)
    @given(
        script=_STEPS,
        timeout=st.floats(0.1, 6.0),
        attempt_timeout=st.none() | st.floats(0.05, 3.0),
    )
    def test_never_outlives_deadline(
        self, script: list[Slow | Respond | Fail], timeout: float, attempt_timeout: float | None
    ) -> None:
        """Whatever the dependency does, a call ends by its overall deadline."""
        clock = ManualClock()
        policy = PipelinePolicy(
            name="p",
            timeout=timeout,
            attempt_timeout=attempt_timeout,
            retry=RetryPolicy(max_retries=5, base_delay=0.2, budget=None),
        )
        pipeline = Pipeline(policy, clock=clock, sleep=clock.sleep, random=lambda: 0.5)
        dep = FaultInjector(script=script, then=Slow(100.0), sleep=clock.sleep)

        async def run() -> None:
            with contextlib.suppress(CouponError, ConnectionResetError, StatusFault):
                await pipeline.call(dep)

        asyncio.run(run())
        assert clock() <= timeout + 1e-9
