"""examples/policy: the example bundle source builds, signs, verifies and decides."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tests.policy.policy_support import make_input, signed

from coupon.policy import PolicyEngine, default_policy_source, lint_policy_data

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "policy"


def example_data() -> Any:
    return json.loads((EXAMPLE / "data.json").read_text(encoding="utf-8"))


class TestExampleBundle:
    def test_policy_is_the_default_policy(self) -> None:
        """The example ships the default policy unchanged (so the two cannot drift)."""
        assert (EXAMPLE / "policy.rego").read_text(encoding="utf-8") == default_policy_source()

    def test_data_is_lint_clean(self) -> None:
        """The example grants are well formed."""
        assert lint_policy_data(example_data()) == []

    @pytest.mark.parametrize(
        ("overrides", "allowed", "ttl"),
        [
            pytest.param({"caller": "svc-orders", "ttl": 900}, True, 600, id="orders-capped"),
            pytest.param({"caller": "svc-orders", "resource": "users/7"}, False, 0, id="users"),
            pytest.param(
                {"caller": "desk", "roles": ("issuer",), "purpose": "support"},
                True,
                120,
                id="support",
            ),
            pytest.param(
                {
                    "caller": "desk",
                    "roles": ("issuer",),
                    "purpose": "support",
                    "actions": ("write",),
                },
                False,
                0,
                id="support-write",
            ),
        ],
    )
    @pytest.mark.asyncio
    async def test_decisions(self, overrides: dict[str, Any], allowed: bool, ttl: int) -> None:
        """The example grants decide as docs/policy.md describes."""
        source = (EXAMPLE / "policy.rego").read_text(encoding="utf-8")
        with PolicyEngine(workers=1) as engine:
            engine.load(signed("example-1", {"policy.rego": source}, example_data()))
            decision = await engine.decide("example-1", make_input(**overrides), deadline_ms=2000)
        assert (decision.allow, decision.ttl) == (allowed, ttl)
