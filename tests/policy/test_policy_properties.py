"""Properties: the Rego resource and purpose matchers agree with the token core's.

default.rego implements resource coverage in Rego (so the policy is self-contained); these
tests hold it to ``coupon.token.ResourcePattern.covers`` and ``purpose_covers`` on random
patterns, through the real rego-cpp engine.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from regopy import Interpreter, LogLevel  # type: ignore[import-untyped]

from coupon.policy import default_policy_source
from coupon.token import ResourcePattern, purpose_covers

PROBE = """package probe

import rego.v1

covers := data.coupon.covers(input.mine, input.theirs)

purpose := data.coupon.purpose_covers(input.granted, input.requested)
"""


def _build(entrypoint: str) -> Any:
    interp = Interpreter()
    interp.log_level = LogLevel.NONE
    interp.add_module("default.rego", default_policy_source())
    interp.add_module("probe.rego", PROBE)
    return interp.build(None, [entrypoint])


BUNDLES = {name: _build(f"probe/{name}") for name in ("covers", "purpose")}
RUNNER = Interpreter()
RUNNER.log_level = LogLevel.NONE


def rego_says(name: str, document: dict[str, str]) -> bool:
    """Evaluate probe/<name>: true, or undefined (false)."""
    RUNNER.set_input(document)
    output = RUNNER.query_bundle_entrypoint(BUNDLES[name], f"probe/{name}")
    assert output.ok()
    text = str(output)
    if text == "undefined":
        return False
    value = json.loads(text)["expressions"][0]
    assert value is True
    return True


SEGMENTS = st.sampled_from(["a", "b", "ab", "*"])


@st.composite
def patterns(draw: st.DrawFn) -> str:
    """Short patterns over a tiny alphabet (so that overlaps are common), maybe open-ended."""
    segments = draw(st.lists(SEGMENTS, min_size=0, max_size=4))
    if draw(st.booleans()) or not segments:
        segments.append("**")
    text = "/".join(segments)
    if draw(st.integers(0, 5)) == 0:
        text = "/" + text
    if draw(st.integers(0, 5)) == 0:
        text += "/"
    return text


PURPOSES = st.lists(st.sampled_from(["billing", "billingx", "refund", "r"]), min_size=1, max_size=3)


class TestResourceCoverage:
    @settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
    @given(mine=patterns(), theirs=patterns())
    def test_agrees_with_token_core(self, mine: str, theirs: str) -> None:
        """covers(mine, theirs) in Rego equals ResourcePattern.covers in Python."""
        expected = ResourcePattern.parse(mine).covers(ResourcePattern.parse(theirs))
        assert rego_says("covers", {"mine": mine, "theirs": theirs}) is expected

    def test_exhaustive_small_patterns(self) -> None:
        """Every pair of patterns of up to three segments over {a, b, *}, with or without a
        final ``**``, gets the same answer (6,241 pairs, including the rare corner cases)."""
        small = set()
        for n in range(4):
            for combo in itertools.product(["a", "b", "*"], repeat=n):
                small.add("/".join((*combo, "**")))
                if combo:
                    small.add("/".join(combo))
        wrong = [
            (mine, theirs)
            for mine in sorted(small)
            for theirs in sorted(small)
            if rego_says("covers", {"mine": mine, "theirs": theirs})
            is not ResourcePattern.parse(mine).covers(ResourcePattern.parse(theirs))
        ]
        assert wrong == []

    @given(pattern=patterns())
    def test_reflexive(self, pattern: str) -> None:
        """Every pattern covers itself."""
        assert rego_says("covers", {"mine": pattern, "theirs": pattern})

    @given(theirs=patterns())
    def test_rest_covers_everything(self, theirs: str) -> None:
        """``**`` covers every pattern."""
        assert rego_says("covers", {"mine": "**", "theirs": theirs})


class TestPurposeCoverage:
    @given(granted=PURPOSES, requested=PURPOSES)
    def test_agrees_with_token_core(self, granted: list[str], requested: list[str]) -> None:
        """purpose_covers in Rego equals the Python one on dotted purposes."""
        g, r = ".".join(granted), ".".join(requested)
        assert rego_says("purpose", {"granted": g, "requested": r}) is purpose_covers(g, r)
