"""The Prometheus hook in coupon.observability."""

from __future__ import annotations

import subprocess
import sys

import pytest
from prometheus_client import CollectorRegistry

from coupon.errors import BulkheadFull
from coupon.observability import ResilienceMetrics
from coupon.resilience import (
    BreakerPolicy,
    BulkheadPolicy,
    FaultInjector,
    ManualClock,
    Pipeline,
    PipelinePolicy,
    Respond,
    RetryPolicy,
)


class TestResilienceMetrics:
    @pytest.mark.asyncio
    async def test_metrics(self) -> None:
        """Attempts, breaker state, bulkhead use and fallbacks land on the given registry."""
        registry = CollectorRegistry()
        clock = ManualClock()
        policy = PipelinePolicy(
            name="billing",
            retry=RetryPolicy(max_retries=1, budget=None),
            breaker=BreakerPolicy(min_throughput=1),
            bulkhead=BulkheadPolicy(max_concurrent=1),
        )
        pipeline = Pipeline(
            policy, hooks=[ResilienceMetrics(registry)], clock=clock, sleep=clock.sleep
        )

        async def cached(exc: BaseException) -> str:
            return "stale"

        dep = FaultInjector(script=[Respond(503)], then=Respond(500), sleep=clock.sleep)
        outcome = await pipeline.execute(dep, fallback=cached)
        assert outcome.degraded

        def value(name: str, **labels: str) -> float | None:
            return registry.get_sample_value(name, {"pipeline": "billing", **labels})

        assert value("coupon_resilience_attempts_total", outcome="transient") == 1.0
        assert value("coupon_resilience_attempts_total", outcome="unknown") == 1.0
        assert value("coupon_resilience_breaker_state") == 2.0
        assert value("coupon_resilience_fallbacks_total") == 1.0
        assert value("coupon_resilience_bulkhead_in_use") == 0.0
        assert pipeline.bulkhead is not None
        assert pipeline.breaker is not None
        pipeline.breaker.reset()
        assert value("coupon_resilience_breaker_state") == 0.0
        await pipeline.bulkhead.acquire()
        assert value("coupon_resilience_bulkhead_in_use") == 1.0
        with pytest.raises(BulkheadFull):
            await pipeline.call(FaultInjector(sleep=clock.sleep))
        pipeline.bulkhead.release()
        assert await pipeline.call(FaultInjector(sleep=clock.sleep)) == "ok"
        assert value("coupon_resilience_attempts_total", outcome="success") == 1.0


class TestIsolation:
    def test_no_prometheus_import(self) -> None:
        """coupon.resilience loads neither prometheus_client nor httpx."""
        code = (
            "import sys, coupon.resilience; "
            "print(sorted(m for m in ('prometheus_client', 'httpx') if m in sys.modules))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
        assert out.strip() == "[]"
