"""The circuit breaker: window math, half-open probes, isolation."""

from __future__ import annotations

import pytest

from coupon.errors import CircuitOpen
from coupon.resilience import (
    BreakerPolicy,
    BreakerState,
    BreakerStateChanged,
    CircuitBreaker,
    ManualClock,
)

POLICY = BreakerPolicy(
    failure_ratio=0.5, window=10.0, buckets=10, min_throughput=4, break_duration=5.0, probes=2
)


def make() -> tuple[CircuitBreaker, ManualClock, list[BreakerStateChanged]]:
    clock = ManualClock()
    changes: list[BreakerStateChanged] = []
    return CircuitBreaker(POLICY, name="dep", clock=clock, on_change=changes.append), clock, changes


def feed(breaker: CircuitBreaker, *outcomes: bool) -> None:
    for outcome in outcomes:
        breaker.acquire()
        breaker.record(outcome)


def trip(breaker: CircuitBreaker) -> None:
    feed(breaker, False, False, False, False)
    assert breaker.state is BreakerState.OPEN


class TestWindow:
    def test_below_threshold_stays_closed(self) -> None:
        """One failure in four (25 % < 50 %) keeps the breaker closed."""
        breaker, _, _ = make()
        feed(breaker, True, True, True, False)
        assert breaker.state is BreakerState.CLOSED

    def test_at_threshold_opens(self) -> None:
        """Two failures in four (50 %) open it."""
        breaker, _, changes = make()
        feed(breaker, True, False, True, False)
        assert breaker.state is BreakerState.OPEN
        assert changes == [BreakerStateChanged("dep", BreakerState.CLOSED, BreakerState.OPEN)]

    def test_minimum_throughput(self) -> None:
        """Three failures out of three are not enough below the minimum throughput of four."""
        breaker, _, _ = make()
        feed(breaker, False, False, False)
        assert breaker.state is BreakerState.CLOSED

    def test_buckets_expire(self) -> None:
        """Outcomes older than the window are forgotten, bucket by bucket."""
        breaker, clock, _ = make()
        feed(breaker, False, False, False)
        clock.advance(9.5)  # the failures' bucket is still inside the window
        assert breaker.totals() == (3, 3)
        clock.advance(1.0)
        assert breaker.totals() == (0, 0)
        feed(breaker, False, True, True, True)
        assert breaker.state is BreakerState.CLOSED

    def test_spread_over_buckets(self) -> None:
        """Outcomes in different buckets of the same window add up."""
        breaker, clock, _ = make()
        for _ in range(4):
            feed(breaker, False)
            clock.advance(2.0)
        assert breaker.state is BreakerState.OPEN


class TestOpenAndHalfOpen:
    def test_open_refuses(self) -> None:
        """An open breaker refuses with CircuitOpen and says when it will probe."""
        breaker, clock, _ = make()
        trip(breaker)
        clock.advance(1.0)
        with pytest.raises(CircuitOpen) as info:
            breaker.acquire()
        assert info.value.code.code == "CPN-RES-001"
        assert info.value.retry_after == 4.0
        assert info.value.pipeline == "dep"

    def test_half_open_after_break(self) -> None:
        """After the break duration the breaker is half-open."""
        breaker, clock, _ = make()
        trip(breaker)
        clock.advance(5.0)
        assert breaker.state is BreakerState.HALF_OPEN

    def test_probe_limit(self) -> None:
        """Half-open admits at most ``probes`` calls."""
        breaker, clock, _ = make()
        trip(breaker)
        clock.advance(5.0)
        breaker.acquire()
        breaker.acquire()
        with pytest.raises(CircuitOpen, match="every probe is taken"):
            breaker.acquire()

    def test_probes_succeed_close(self) -> None:
        """Enough successful probes close the breaker."""
        breaker, clock, changes = make()
        trip(breaker)
        clock.advance(5.0)
        feed(breaker, True)
        states = [breaker.state]
        feed(breaker, True)
        states.append(breaker.state)
        assert states == [BreakerState.HALF_OPEN, BreakerState.CLOSED]
        assert [c.new for c in changes] == [
            BreakerState.OPEN,
            BreakerState.HALF_OPEN,
            BreakerState.CLOSED,
        ]

    def test_probe_failure_reopens(self) -> None:
        """A failed probe opens the breaker again, for a full break."""
        breaker, clock, _ = make()
        trip(breaker)
        clock.advance(5.0)
        feed(breaker, True, False)
        assert breaker.state is BreakerState.OPEN
        clock.advance(4.9)
        assert breaker.state is BreakerState.OPEN

    def test_neutral_outcome_returns_probe(self) -> None:
        """A cancelled probe gives its place back."""
        breaker, clock, _ = make()
        trip(breaker)
        clock.advance(5.0)
        breaker.acquire()
        breaker.acquire()
        breaker.record(None)
        breaker.acquire()

    def test_late_outcome_while_open_ignored(self) -> None:
        """An outcome of a call admitted before the breaker opened changes nothing."""
        breaker, _, _ = make()
        breaker.acquire()
        trip(breaker)
        breaker.record(True)
        assert breaker.state is BreakerState.OPEN


class TestManual:
    def test_isolate(self) -> None:
        """An isolated breaker stays open past the break duration."""
        breaker, clock, changes = make()
        breaker.isolate()
        clock.advance(1_000.0)
        assert breaker.state is BreakerState.OPEN
        assert breaker.isolated
        with pytest.raises(CircuitOpen, match="isolated"):
            breaker.acquire()
        assert changes[-1].isolated

    def test_reset(self) -> None:
        """Reset closes the breaker, ends the isolation and forgets the window."""
        breaker, _, _ = make()
        feed(breaker, False, False, False)
        breaker.isolate()
        breaker.reset()
        assert breaker.state is BreakerState.CLOSED
        assert not breaker.isolated
        assert breaker.totals() == (0, 0)
        breaker.acquire()
