"""Named defaults, loading pipelines from data, and strict validation."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from coupon.resilience import DEFAULTS, BudgetPolicy, RetryPolicy, from_dict, load

CONFIG = """
[billing]
extends = "sync-microservice"
timeout = 0.8
[billing.retry]
max_retries = 2
on_status = [503]
[billing.retry.budget]
ratio = 0.1

[audit-sink]
timeout = 5
breaker = { failure_ratio = 0.25, min_throughput = 4, probes = 2 }
bulkhead = { max_concurrent = 3, max_queue = 1 }

[reports]
extends = "external-api"
bulkhead = false
"""


class TestDefaults:
    def test_names(self) -> None:
        """The five named defaults of seed 003 §2.8 exist."""
        assert sorted(DEFAULTS) == [
            "async-job",
            "database-query",
            "external-api",
            "redis-operation",
            "sync-microservice",
        ]

    def test_sync_microservice(self) -> None:
        """sync-microservice: 600 ms overall, 300 ms per attempt, 1 retry, 50/100 bulkhead."""
        policy = DEFAULTS["sync-microservice"]
        assert (policy.timeout, policy.attempt_timeout) == (0.6, 0.3)
        assert policy.retry is not None
        assert policy.retry.max_retries == 1
        assert policy.retry.on_status == {408, 502, 503, 504}
        assert policy.breaker is not None
        assert policy.breaker.min_throughput == 10
        assert policy.bulkhead is not None
        assert (policy.bulkhead.max_concurrent, policy.bulkhead.max_queue) == (50, 100)

    def test_async_job(self) -> None:
        """async-job: five minutes, no retry, no breaker."""
        policy = DEFAULTS["async-job"]
        assert (policy.timeout, policy.retry, policy.breaker) == (300.0, None, None)

    def test_names_match_keys(self) -> None:
        """Each default carries its own name."""
        assert all(policy.name == name for name, policy in DEFAULTS.items())


class TestLoad:
    def test_toml(self) -> None:
        """A TOML file becomes one policy per table, extending defaults where asked."""
        policies = load(tomllib.loads(CONFIG))
        billing = policies["billing"]
        assert billing.name == "billing"
        assert billing.timeout == 0.8
        assert billing.attempt_timeout == 0.3
        assert billing.retry is not None
        assert billing.retry.max_retries == 2
        assert billing.retry.base_delay == 0.025  # kept from the default
        assert billing.retry.on_status == {503}
        assert billing.retry.budget == BudgetPolicy(ratio=0.1)
        audit = policies["audit-sink"]
        assert audit.breaker is not None
        assert audit.breaker.probes == 2
        assert audit.bulkhead is not None
        assert audit.bulkhead.max_queue == 1
        assert audit.retry is None
        assert policies["reports"].bulkhead is None

    def test_stage_off(self) -> None:
        """``false`` turns a stage off."""
        policy = from_dict({"extends": "external-api", "retry": False}, name="x")
        assert policy.retry is None

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            ({"extends": "nope"}, "extends"),
            ({"timout": 1}, "unknown setting x.timout"),
            ({"timeout": "1s"}, "must be a number"),
            ({"timeout": True}, "must be a number"),
            ({"timeout": -1}, "timeout must be > 0"),
            ({"retry": {"max_retries": 1.5}}, "must be an integer"),
            ({"retry": {"max_retries": -1}}, "max_retries"),
            ({"retry": {"on_status": [404]}}, "on_status"),
            ({"retry": {"on_status": 503}}, "list"),
            ({"retry": {"full_jitter": 1}}, "true or false"),
            ({"retry": {"budget": {"ratio": -0.1}}}, "budget.ratio"),
            ({"retry": {"backoff": 1}}, "unknown setting x.retry.backoff"),
            ({"retry": 3}, "table or false"),
            ({"breaker": {"failure_ratio": 1.5}}, "failure_ratio"),
            ({"breaker": {"probes": 0}}, "probes"),
            ({"bulkhead": {"max_concurrent": 0}}, "max_concurrent"),
        ],
    )
    def test_rejects(self, data: dict[str, Any], message: str) -> None:
        """Every mistake in a configuration is a ValueError that names it."""
        with pytest.raises(ValueError, match=message):
            from_dict(data, name="x")

    def test_rejects_non_tables(self) -> None:
        """The configuration and each pipeline must be tables."""
        with pytest.raises(ValueError, match="table of pipelines"):
            load([])  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="must be a table"):
            load({"x": 3})

    def test_dataclasses_validate(self) -> None:
        """Building a policy in code is validated too."""
        with pytest.raises(ValueError, match="multiplier"):
            RetryPolicy(multiplier=0.5)
