"""The policy engine: compile once, deadlines, fail-closed errors and thread safety."""

from __future__ import annotations

import asyncio
import importlib.resources
import re
import time
from collections.abc import Iterator

import pytest
from tests.policy.policy_support import make_input, signed

from coupon import codes
from coupon.errors import DependencyUnavailable, InvalidRequest, PolicyDenied
from coupon.policy import (
    BUILTIN_DATA,
    BUILTIN_VERSION,
    PolicyEngine,
    builtin_bundle,
    default_policy_source,
)
from coupon.policy._engine import _decision_value, _EvaluationFailed, _plain, describe_rego_error

DEADLINE_MS = 2000
HEADER = "package coupon\n\nimport rego.v1\n\n"
ALLOW_ALL = (
    HEADER + 'decision := {"allow": true, "reason": "yes", "max_ttl": 60, "bindings": ["jkt"]}\n'
)
# Far slower than any deadline below: about 0.5 s of rego-cpp work per evaluation.
SLOW = (
    HEADER
    + "n := count([x | some x in numbers.range(1, 100000); x % 7 == 0])\n"
    + 'decision := {"allow": n > 0, "reason": "slow", "max_ttl": 60, "bindings": ["jkt"]}\n'
)
# Echoes the subject: any mix-up of inputs between threads shows in the reason.
ECHO = (
    HEADER
    + "decision := {\n"
    + '\t"allow": startswith(input.request.subject, "even-"),\n'
    + '\t"reason": concat("|", [input.request.subject, input.request.tenant]),\n'
    + '\t"max_ttl": input.request.ttl,\n'
    + '\t"bindings": ["jkt"],\n'
    + "}\n"
)


def failed() -> pytest.RaisesExc[DependencyUnavailable]:
    return pytest.raises(DependencyUnavailable, match=codes.POLICY_FAILED.code)


def invalid() -> pytest.RaisesExc[InvalidRequest]:
    return pytest.raises(InvalidRequest, match=codes.POLICY_INVALID.code)


@pytest.fixture
def engine() -> Iterator[PolicyEngine]:
    with PolicyEngine(workers=2) as engine:
        yield engine


class TestBuiltin:
    def test_source_is_package_data(self) -> None:
        """default.rego ships as package data and is read through importlib.resources."""
        resource = importlib.resources.files("coupon.policy").joinpath("default.rego")
        assert resource.is_file()
        assert default_policy_source() == resource.read_text(encoding="utf-8")
        assert "package coupon" in default_policy_source()

    def test_bundle(self) -> None:
        """The builtin bundle is the default policy with the builtin data, unsigned."""
        bundle = builtin_bundle()
        assert bundle.version == BUILTIN_VERSION == "builtin-1"
        assert dict(bundle.modules) == {"default.rego": default_policy_source()}
        assert dict(bundle.data) == _plain(BUILTIN_DATA)
        assert bundle.signature == b""
        assert bundle.digest == builtin_bundle().digest

    @pytest.mark.asyncio
    async def test_issuers_allowed(self) -> None:
        """The builtin policy lets issuers and admins issue, for 5 minutes at most."""
        with PolicyEngine.builtin(workers=1) as engine:
            for role in ("issuer", "admin"):
                inp = make_input(roles=(role,), ttl=3600, binding="x5t#S256")
                decision = await engine.evaluate(BUILTIN_VERSION, inp, deadline_ms=DEADLINE_MS)
                assert (decision.ttl, decision.version) == (300, "builtin-1")

    @pytest.mark.asyncio
    async def test_others_denied(self) -> None:
        """Callers without an issuing role, or outside their tenant, are denied."""
        with PolicyEngine.builtin(workers=1) as engine:
            for inp in (
                make_input(roles=("auditor",)),
                make_input(roles=("issuer",), caller_tenant="globex", tenant="acme"),
            ):
                with pytest.raises(PolicyDenied, match=codes.POLICY_DENIED.code):
                    await engine.evaluate(BUILTIN_VERSION, inp, deadline_ms=DEADLINE_MS)

    @pytest.mark.asyncio
    async def test_holders_attenuate(self) -> None:
        """Any caller may ask for a sub-coupon (the Authority checked possession and
        narrowing), but not for a root coupon, and not past depth 4."""
        with PolicyEngine.builtin(workers=1) as engine:
            child = make_input(caller="holder:alice", parent_depth=3)
            decision = await engine.evaluate(BUILTIN_VERSION, child, deadline_ms=DEADLINE_MS)
            assert decision.reason == "allowed by grant builtin-holders"
            for inp in (
                make_input(caller="holder:alice"),
                make_input(caller="holder:alice", parent_depth=4),
            ):
                with pytest.raises(PolicyDenied):
                    await engine.evaluate(BUILTIN_VERSION, inp, deadline_ms=DEADLINE_MS)

    def test_pinned(self) -> None:
        """The builtin version is never evicted from the cache."""
        with PolicyEngine.builtin(cache_size=1, workers=1) as engine:
            engine.load(signed("a-1", {"p.rego": ALLOW_ALL}))
            engine.load(signed("a-2", {"p.rego": ALLOW_ALL}))
            assert engine.versions == ("builtin-1", "a-2")


class TestLoad:
    def test_load_is_idempotent(self, engine: PolicyEngine) -> None:
        """Loading the same bundle again keeps the one compiled copy."""
        bundle = signed("v1", {"p.rego": ALLOW_ALL})
        engine.load(bundle)
        engine.load(bundle)
        assert engine.versions == ("v1",)
        assert "v1" in engine
        assert engine.digest("v1") == bundle.digest

    def test_versions_are_immutable(self, engine: PolicyEngine) -> None:
        """A version cannot be loaded again with other content."""
        engine.load(signed("v1", {"p.rego": ALLOW_ALL}))
        with invalid() as info:
            engine.load(signed("v1", {"p.rego": ALLOW_ALL + "\n# changed\n"}))
        assert "already loaded" in str(info.value)

    @pytest.mark.asyncio
    async def test_lru(self) -> None:
        """The least recently used version is evicted first; using a version refreshes it."""
        with PolicyEngine(cache_size=2, workers=1) as engine:
            engine.load(signed("v1", {"p.rego": ALLOW_ALL}))
            engine.load(signed("v2", {"p.rego": ALLOW_ALL}))
            await engine.decide("v1", make_input(), deadline_ms=DEADLINE_MS)
            engine.load(signed("v3", {"p.rego": ALLOW_ALL}))
            assert engine.versions == ("v1", "v3")
            with failed() as info:
                await engine.decide("v2", make_input(), deadline_ms=DEADLINE_MS)
            assert "not loaded" in str(info.value)

    def test_syntax_error(self, engine: PolicyEngine) -> None:
        """A bundle that does not compile is ``CPN-POL-004`` naming file, line and column."""
        bundle = signed("bad-1", {"p.rego": HEADER + "decision := {\n"})
        with invalid() as info:
            engine.load(bundle)
        assert "p.rego:5:13: this is unclosed" in str(info.value)
        assert "bad-1" not in engine

    def test_invalid_arguments(self) -> None:
        """Sizes below one are programming errors."""
        with pytest.raises(ValueError, match="cache_size"):
            PolicyEngine(cache_size=0)
        with pytest.raises(ValueError, match="workers"):
            PolicyEngine(workers=0)


class TestFailClosed:
    @pytest.mark.asyncio
    async def test_undefined_decision(self, engine: PolicyEngine) -> None:
        """A policy without a decision for the input fails closed."""
        engine.load(signed("v1", {"p.rego": HEADER + "other := 1\n"}))
        with failed() as info:
            await engine.decide("v1", make_input(), deadline_ms=DEADLINE_MS)
        assert "undefined" in str(info.value)

    @pytest.mark.asyncio
    async def test_unknown_function(self, engine: PolicyEngine) -> None:
        """rego-cpp finds unknown functions only when evaluating: that fails closed, named."""
        engine.load(signed("v1", {"p.rego": HEADER + "decision := nope(1)\n"}))
        with failed() as info:
            await engine.decide("v1", make_input(), deadline_ms=DEADLINE_MS)
        assert "Function not found: nope" in str(info.value)

    @pytest.mark.asyncio
    async def test_garbage_decision(self, engine: PolicyEngine) -> None:
        """A decision that is not model v1 fails closed."""
        engine.load(signed("v1", {"p.rego": HEADER + 'decision := "yes"\n'}))
        with failed() as info:
            await engine.decide("v1", make_input(), deadline_ms=DEADLINE_MS)
        assert "not an object" in str(info.value)

    @pytest.mark.asyncio
    async def test_runtime_conflict(self, engine: PolicyEngine) -> None:
        """An evaluation error fails closed, and the engine keeps working afterwards."""
        source = HEADER + "decision := 1 if input.now > 0\n\ndecision := 2 if input.now > 1\n"
        engine.load(signed("v1", {"p.rego": source}))
        engine.load(signed("ok-1", {"p.rego": ALLOW_ALL}))
        for _ in range(3):
            with failed():
                await engine.decide("v1", make_input(), deadline_ms=DEADLINE_MS)
            decision = await engine.decide("ok-1", make_input(), deadline_ms=DEADLINE_MS)
            assert decision.allow

    @pytest.mark.asyncio
    async def test_check(self, engine: PolicyEngine) -> None:
        """``check`` passes any well-formed decision and turns failures into ``CPN-POL-004``."""
        engine.load(signed("good-1", {"p.rego": ALLOW_ALL}))
        engine.load(signed("bad-1", {"p.rego": HEADER + "other := 1\n"}))
        assert (await engine.check("good-1", deadline_ms=DEADLINE_MS)).allow
        with invalid():
            await engine.check("bad-1", deadline_ms=DEADLINE_MS)

    @pytest.mark.asyncio
    async def test_evaluate_raises_on_deny(self, engine: PolicyEngine) -> None:
        """``evaluate`` returns only allows; a deny is ``PolicyDenied`` with the reason."""
        engine.load(signed("echo-1", {"p.rego": ECHO}))
        allowed = await engine.evaluate("echo-1", make_input(subject="even-1"), deadline_ms=100)
        assert allowed.allow
        with pytest.raises(PolicyDenied, match=re.escape("odd-1|acme")) as info:
            await engine.evaluate("echo-1", make_input(subject="odd-1"), deadline_ms=100)
        assert info.value.code == codes.POLICY_DENIED

    @pytest.mark.asyncio
    async def test_bad_arguments(self, engine: PolicyEngine) -> None:
        """A non-positive deadline or a raw dict input is a programming error."""
        engine.load(signed("v1", {"p.rego": ALLOW_ALL}))
        with pytest.raises(ValueError, match="deadline_ms"):
            await engine.decide("v1", make_input(), deadline_ms=0)
        with pytest.raises(TypeError):
            await engine.decide("v1", make_input().to_input(), deadline_ms=5)  # type: ignore[arg-type]


class TestDeadline:
    @pytest.mark.asyncio
    async def test_slow_policy_fails_closed(self) -> None:
        """A policy slower than its deadline answers ``CPN-POL-002`` at the deadline."""
        with PolicyEngine(workers=2) as engine:
            engine.load(signed("slow-1", {"p.rego": SLOW}))
            start = time.perf_counter()
            with failed() as info:
                await engine.decide("slow-1", make_input(), deadline_ms=5)
            elapsed = time.perf_counter() - start
        assert "5 ms deadline" in str(info.value)
        assert elapsed < 0.25

    @pytest.mark.asyncio
    async def test_stuck_workers_shed_load(self) -> None:
        """While every worker runs an overdue evaluation, new ones fail at once."""
        with PolicyEngine(workers=1) as engine:
            engine.load(signed("slow-1", {"p.rego": SLOW}))
            engine.load(signed("ok-1", {"p.rego": ALLOW_ALL}))
            with failed():
                await engine.decide("slow-1", make_input(), deadline_ms=5)
            with failed() as info:
                await engine.decide("ok-1", make_input(), deadline_ms=DEADLINE_MS)
            assert "overdue" in str(info.value)
            for _ in range(100):  # the slow evaluation finishes in the background
                await asyncio.sleep(0.05)
                try:
                    decision = await engine.decide("ok-1", make_input(), deadline_ms=DEADLINE_MS)
                except DependencyUnavailable:
                    continue
                break
            assert decision.allow


class TestConcurrency:
    @pytest.mark.asyncio
    async def test_no_cross_talk(self) -> None:
        """50 concurrent evaluations on 4 threads each get the answer for their own input."""
        with PolicyEngine(workers=4) as engine:
            engine.load(signed("echo-1", {"p.rego": ECHO}))
            engine.load(signed("echo-2", {"p.rego": ECHO.replace('"|"', '"/"')}))
            for _ in range(4):
                inputs = [
                    make_input(
                        subject=f"{'even' if i % 2 == 0 else 'odd'}-{i}",
                        tenant=f"t{i}",
                        ttl=100 + i,
                    )
                    for i in range(50)
                ]
                versions = ["echo-1" if i % 3 else "echo-2" for i in range(50)]
                decisions = await asyncio.gather(
                    *(
                        engine.decide(v, inp, deadline_ms=DEADLINE_MS)
                        for v, inp in zip(versions, inputs, strict=True)
                    )
                )
                for i, decision in enumerate(decisions):
                    sep = "|" if versions[i] == "echo-1" else "/"
                    subject = inputs[i].request.subject
                    assert decision.reason == f"{subject}{sep}t{i}"
                    assert decision.allow is (i % 2 == 0)
                    assert decision.version == versions[i]
                    assert decision.max_ttl == 100 + i

    @pytest.mark.asyncio
    async def test_default_policy_under_load(self) -> None:
        """The default policy gives each of 50 concurrent requests its own answer."""
        data = {
            "grants": [
                {
                    "callers": ["*"],
                    "tenants": ["*"],
                    "subjects": [f"user-{i}" for i in range(0, 50, 2)],
                    "audiences": ["*"],
                    "resources": ["**"],
                    "actions": ["*"],
                    "purposes": ["*"],
                }
            ]
        }
        with PolicyEngine(workers=4) as engine:
            engine.load(signed("users-1", data=data))
            inputs = [make_input(subject=f"user-{i}") for i in range(50)]
            decisions = await asyncio.gather(
                *(engine.decide("users-1", inp, deadline_ms=DEADLINE_MS) for inp in inputs)
            )
        for i, decision in enumerate(decisions):
            assert decision.allow is (i % 2 == 0)
            if i % 2:
                assert decision.reason == f"no grant for subject 'user-{i}'"


class TestDescribeRegoError:
    def test_located(self) -> None:
        """A located error becomes ``file:line:col: message``."""
        text = "(rego-errorseq\n  (error 6:m.rego|19|1\n    (errormsg 5:oops!)\n    (errorast)))"
        assert describe_rego_error(text, {"m.rego": "package x\nimport y\nab"}) == (
            "m.rego:3:1: oops!"
        )

    def test_unlocated_and_duplicates(self) -> None:
        """Errors without a place keep their message; repeats are dropped."""
        text = "(error (errormsg 3:abc)) (error (errormsg 3:abc)) (error (errormsg 2:de))"
        assert describe_rego_error(text, {}) == "abc; de"

    def test_unknown_shape(self) -> None:
        """Text that is not an error sequence is passed on, squeezed."""
        assert describe_rego_error("  weird \n text ", {}) == "weird text"
        assert describe_rego_error("", {}) == "unknown Rego error"

    def test_non_ascii_column(self) -> None:
        """Columns count characters, not bytes."""
        text = "(error 6:m.rego|14|1 (errormsg 1:x))"
        assert describe_rego_error(text, {"m.rego": "é = 1\nprint(("}) == "m.rego:2:8: x"


class TestDecisionValue:
    @pytest.mark.parametrize(
        ("text", "message"),
        [
            pytest.param("undefined", "undefined", id="undefined"),
            pytest.param(
                '{"expressions":[{"allow":true, "allow":false}]}',
                "duplicate",
                id="duplicate-member",
            ),
            pytest.param('{"expressions":[1],"bindings":{}}', "unexpected shape", id="bindings"),
            pytest.param('{"expressions":[1, 2]}', "2 values", id="two-values"),
            pytest.param('{"expressions":["a"b"]}', "not strict JSON", id="broken-json"),
        ],
    )
    def test_engine_output_is_parsed_strictly(self, text: str, message: str) -> None:
        """The engine's raw result must be one strict JSON value; a duplicate ``allow``
        (what an unescaped string in the output could smuggle in) is refused."""
        with pytest.raises(_EvaluationFailed, match=message):
            _decision_value(text)

    def test_one_value(self) -> None:
        """A single expression is the decision value."""
        assert _decision_value('{"expressions":[{"allow":false}]}') == {"allow": False}


class TestBuiltinData:
    def test_read_only(self) -> None:
        """The builtin data cannot be changed in place, even deep down."""
        with pytest.raises(TypeError):
            BUILTIN_DATA["grants"][0]["max_ttl"] = 10**6
