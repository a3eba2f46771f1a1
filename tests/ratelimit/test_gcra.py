"""The pure GCRA core: known answers, the burst/rate bound and exact ``retry_after``."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coupon.ratelimit import LocalGcra, TenantLimits, gcra, soft_hard

T = 100  # emission interval (say, microseconds)


def tau(burst: int, t: int = T) -> int:
    return (burst - 1) * t


class TestKnownAnswers:
    """Hand-computed steps."""

    def test_fresh_bucket_admits_exactly_burst(self) -> None:
        """From idle, ``burst`` requests pass at one instant and the next is refused."""
        tat = 0
        for i in range(5):
            r = gcra(tat, 1000, T, tau(5))
            assert r.allowed
            assert r.remaining == 4 - i
            tat = int(r.new_tat)
        refused = gcra(tat, 1000, T, tau(5))
        assert not refused.allowed
        assert refused.new_tat == tat
        assert refused.retry_after == T
        assert refused.remaining == 0

    def test_one_cell_drains_per_interval(self) -> None:
        """After the burst, one request is admitted every ``T``."""
        r = gcra(0, 0, T, 0)
        assert r == (True, T, 0, 0)
        assert not gcra(r.new_tat, T - 1, T, 0).allowed
        assert gcra(r.new_tat, T - 1, T, 0).retry_after == 1
        assert gcra(r.new_tat, T, T, 0).allowed

    def test_cost(self) -> None:
        """A request of cost ``n`` takes ``n`` cells; more than the burst never passes."""
        r = gcra(0, 0, T, tau(3), cost=3)
        assert r.allowed
        assert r.remaining == 0
        assert not gcra(0, 0, T, tau(3), cost=4).allowed

    def test_stale_tat_is_idle(self) -> None:
        """A TAT in the past counts as an empty bucket."""
        assert gcra(5, 10_000, T, tau(2)) == gcra(0, 10_000, T, tau(2))

    def test_floats(self) -> None:
        """Seconds as floats work too."""
        r = gcra(0.0, 10.0, 0.5, 0.5)
        assert r.allowed
        assert r.new_tat == pytest.approx(10.5)
        assert r.remaining == 1

    @pytest.mark.parametrize(
        ("interval", "tolerance", "cost"), [(0, 0, 1), (-1, 0, 1), (1, -1, 1), (1, 0, 0)]
    )
    def test_misuse(self, interval: int, tolerance: int, cost: int) -> None:
        """Bad parameters raise ValueError."""
        with pytest.raises(ValueError, match="must"):
            gcra(0, 0, interval, tolerance, cost=cost)


class TestSoftHard:
    """The soft meter flags without refusing and recovers when traffic drops."""

    def test_soft_flag_then_hard_refusal(self) -> None:
        """Soft burst 2, hard burst 2 at twice the rate: flagged, then refused."""
        hard, soft = (T, tau(2)), (2 * T, tau(2, 2 * T))
        h = s = 0.0
        outcomes = []
        for now in (0, 0, T, T, 2 * T):
            o, h, s = soft_hard(h, s, now, hard=hard, soft=soft)
            outcomes.append((o.allowed, o.soft_exceeded))
        assert outcomes == [
            (True, False),
            (True, False),
            (True, True),
            (False, False),
            (True, False),
        ]

    def test_soft_recovers(self) -> None:
        """An over-soft stream does not push the soft TAT forever ahead."""
        hard, soft = (T, 0), (10 * T, 0)
        h = s = 0.0
        for i in range(100):
            _, h, s = soft_hard(h, s, i * T, hard=hard, soft=soft)
        o, _, _ = soft_hard(h, s, 100 * T + 10 * T, hard=hard, soft=soft)
        assert not o.soft_exceeded

    def test_local_gcra_evicts_lru(self) -> None:
        """The in-process store is bounded."""
        now = [0]
        local = LocalGcra(capacity=2, clock=lambda: now[0])
        limits = TenantLimits(1, 1, 1)
        hard, soft = limits.params()
        for key in ("a", "b", "c"):
            assert local.check(key, hard=hard, soft=soft).allowed
        assert len(local) == 2
        assert local.check("a", hard=hard, soft=soft).allowed  # "a" was forgotten
        assert not local.check("c", hard=hard, soft=soft).allowed


steps = st.lists(
    st.tuples(st.integers(min_value=0, max_value=3 * T), st.integers(min_value=1, max_value=4)),
    min_size=1,
    max_size=60,
)


@given(
    steps=steps,
    interval=st.integers(min_value=1, max_value=3 * T),
    burst=st.integers(min_value=1, max_value=6),
)
def test_never_more_than_burst_plus_rate(
    steps: list[tuple[int, int]], interval: int, burst: int
) -> None:
    """Over any window ``[a, b]``, admitted cells <= burst + (b - a) / T."""
    tat, now, admitted = 0, 0, []
    for gap, cost in steps:
        now += gap
        r = gcra(tat, now, interval, tau(burst, interval), cost=cost)
        if r.allowed:
            admitted.append((now, cost))
        tat = int(r.new_tat)
    for i, (start, _) in enumerate(admitted):
        total = 0
        for end, cost in admitted[i:]:
            total += cost
            assert total * interval <= burst * interval + (end - start)


@given(
    steps=steps,
    interval=st.integers(min_value=1, max_value=3 * T),
    burst=st.integers(min_value=1, max_value=6),
)
def test_retry_after_is_exact(steps: list[tuple[int, int]], interval: int, burst: int) -> None:
    """A refused request passes at ``now + retry_after`` and not one unit earlier."""
    tat, now = 0, 0
    tolerance = tau(burst, interval)
    for gap, cost in steps:
        now += gap
        cost = min(cost, burst)
        r = gcra(tat, now, interval, tolerance, cost=cost)
        if r.allowed:
            assert r.retry_after == 0
            tat = int(r.new_tat)
            continue
        wait = int(r.retry_after)
        assert wait == r.retry_after > 0
        assert gcra(tat, now + wait, interval, tolerance, cost=cost).allowed
        assert not gcra(tat, now + wait - 1, interval, tolerance, cost=cost).allowed


@given(
    steps=steps,
    interval=st.integers(min_value=1, max_value=3 * T),
    burst=st.integers(min_value=1, max_value=6),
)
def test_remaining_is_what_passes(steps: list[tuple[int, int]], interval: int, burst: int) -> None:
    """``remaining`` one-cell requests pass right now, and one more does not."""
    tat, now = 0, 0
    tolerance = tau(burst, interval)
    for gap, cost in steps:
        now += gap
        r = gcra(tat, now, interval, tolerance, cost=cost)
        tat = int(r.new_tat)
        probe = tat
        for _ in range(r.remaining):
            p = gcra(probe, now, interval, tolerance)
            assert p.allowed
            probe = int(p.new_tat)
        assert not gcra(probe, now, interval, tolerance).allowed
