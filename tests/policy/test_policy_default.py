"""The default policy (default.rego) decided by the real engine, dimension by dimension."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from tests.policy.policy_support import make_input, signed

from coupon.policy import PolicyDecision, PolicyEngine, PolicyInput, lint_policy_data

DEADLINE_MS = 2000

DATA: dict[str, Any] = {
    "defaults": {"max_ttl": 120, "bindings": ["jkt"], "max_depth": 1},
    "grants": [
        {
            "id": "orders-rw",
            "callers": ["svc-orders"],
            "tenants": ["acme"],
            "subjects": ["*"],
            "audiences": ["orders-api"],
            "resources": ["orders/**", "carts/*/items"],
            "actions": ["read", "write"],
            "purposes": ["billing"],
            "max_ttl": 600,
            "max_depth": 2,
            "bindings": ["jkt", "x5t#S256"],
        },
        {
            "id": "reports",
            "callers": ["svc-reports"],
            "roles": ["auditor"],
            "tenants": ["*"],
            "subjects": ["alice", "bob", 'mal"lory\\ é'],
            "audiences": ["*"],
            "resources": ["reports/*"],
            "actions": ["*"],
            "purposes": ["*"],
        },
        {
            "callers": ["svc-orders"],
            "tenants": ["acme"],
            "subjects": ["*"],
            "audiences": ["orders-api"],
            "resources": ["orders/archive/**"],
            "actions": ["read"],
            "purposes": ["billing.audit"],
            "max_ttl": 900,
        },
        {
            "callers": ["svc-orders"],
            "tenants": ["globex"],
            "subjects": ["*"],
            "audiences": ["orders-api"],
            "resources": ["ledger/**"],
            "actions": ["read"],
            "purposes": ["billing.audit"],
        },
        {
            "id": "delegates",
            "callers": ["svc-delegate"],
            "requests": ["attenuate"],
            "tenants": ["*"],
            "subjects": ["*"],
            "audiences": ["*"],
            "resources": ["orders/**"],
            "actions": ["read"],
            "purposes": ["*"],
        },
    ],
}


@pytest.fixture(scope="module")
def engine() -> Iterator[PolicyEngine]:
    with PolicyEngine() as engine:
        engine.load(signed("test-1", data=DATA))
        engine.load(signed("empty-1", data={}))
        yield engine


async def decide(engine: PolicyEngine, inp: PolicyInput, version: str = "test-1") -> Any:
    return await engine.decide(version, inp, deadline_ms=DEADLINE_MS)


def test_data_is_lint_clean() -> None:
    """The test data itself is well formed."""
    assert lint_policy_data(DATA) == []


ORDERS: dict[str, Any] = {}
REPORTS: dict[str, Any] = {"caller": "svc-reports", "roles": ("auditor",), "resource": "reports/q1"}
LEDGER: dict[str, Any] = {"tenant": "globex", "resource": "ledger/1"}

# (id, input overrides, allowed?, reason contains)
CASES = [
    ("allowed", ORDERS, True, "allowed by grant orders-rw"),
    # caller
    ("unknown-caller", {"caller": "svc-x"}, False, "no grant lets caller 'svc-x' issue"),
    ("role-missing", {**REPORTS, "roles": ()}, False, "caller 'svc-reports' issue"),
    # request kind: a grant limited to sub-coupons
    ("attenuate-only-root", {"caller": "svc-delegate"}, False, "'svc-delegate' issue"),
    ("attenuate-only-child", {"caller": "svc-delegate", "parent_depth": 0}, True, "delegates"),
    ("attenuate-other", {"caller": "svc-x", "parent_depth": 0}, False, "'svc-x' attenuate"),
    ("role-present", REPORTS, True, "allowed by grant reports"),
    ("caller-tenant-same", {"caller_tenant": "acme"}, True, "orders-rw"),
    ("caller-tenant-other", {"caller_tenant": "globex"}, False, "bound to tenant 'globex'"),
    # tenant, subject, audience
    ("tenant", {"tenant": "initech"}, False, "no grant for tenant 'initech'"),
    ("tenant-any", {**REPORTS, "tenant": "globex"}, True, "reports"),
    ("subject", {**REPORTS, "subject": "carol"}, False, "no grant for subject 'carol'"),
    ("subject-listed", {**REPORTS, "subject": "bob"}, True, "reports"),
    ("subject-odd", {**REPORTS, "subject": 'mal"lory\\ é'}, True, "reports"),
    ("audience", {"audience": ("billing-api",)}, False, "no grant for audience 'billing-api'"),
    ("audience-one-of-two", {"audience": ("orders-api", "x")}, False, "audience 'orders-api'"),
    ("audience-any", {**REPORTS, "audience": ("a", "b")}, True, "reports"),
    # actions
    ("actions-subset", {"actions": ("read", "write")}, True, "orders-rw"),
    ("actions-not-subset", {"actions": ("read", "delete")}, False, "'delete', 'read'"),
    ("actions-any", {**REPORTS, "actions": ("delete", "export")}, True, "reports"),
    # purpose hierarchy
    ("purpose-narrower", {"purpose": "billing.refund"}, True, "orders-rw"),
    ("purpose-much-narrower", {"purpose": "billing.refund.partial"}, True, "orders-rw"),
    ("purpose-sibling", {"purpose": "billingx"}, False, "no grant covers purpose 'billingx'"),
    ("purpose-other", {"purpose": "marketing"}, False, "purpose 'marketing'"),
    ("purpose-broader", {**LEDGER, "purpose": "billing"}, False, "purpose 'billing'"),
    ("purpose-granted", {**LEDGER, "purpose": "billing.audit"}, True, "grants[3]"),
    # resources: "*" is one segment, a final "**" any number (zero included)
    ("res-exact-prefix", {"resource": "orders"}, True, "orders-rw"),
    ("res-deep", {"resource": "orders/42/lines/7"}, True, "orders-rw"),
    ("res-pattern-rest", {"resource": "orders/**"}, True, "orders-rw"),
    ("res-pattern-one", {"resource": "orders/*/lines"}, True, "orders-rw"),
    ("res-other", {"resource": "users/1"}, False, "no grant covers resource 'users/1'"),
    ("res-lookalike", {"resource": "ordersx/1"}, False, "resource 'ordersx/1'"),
    ("res-star-item", {"resource": "carts/7/items"}, True, "orders-rw"),
    ("res-star-pattern", {"resource": "carts/*/items"}, True, "orders-rw"),
    ("res-star-too-deep", {"resource": "carts/7/items/1"}, False, "carts/7/items/1"),
    ("res-star-too-short", {"resource": "carts/7"}, False, "carts/7"),
    ("res-rest-wider", {"resource": "carts/**"}, False, "carts/**"),
    ("res-wildcard-first", {"resource": "*/items"}, False, "*/items"),
    ("res-single-star", {**REPORTS, "resource": "reports/*"}, True, "reports"),
    ("res-single-star-deep", {**REPORTS, "resource": "reports/q1/x"}, False, "reports/q1/x"),
    # delegation depth (orders-rw: max_depth 2; reports: defaults.max_depth 1)
    ("depth-ok", {"parent_depth": 1}, True, "orders-rw"),
    ("depth-too-deep", {"parent_depth": 2}, False, "delegation depth 3"),
    ("depth-default-ok", {**REPORTS, "parent_depth": 0}, True, "reports"),
    ("depth-default-too-deep", {**REPORTS, "parent_depth": 1}, False, "delegation depth 2"),
    # key binding kinds (reports: defaults.bindings ["jkt"])
    ("binding-x5t", {"binding": "x5t#S256"}, True, "orders-rw"),
    ("binding-default", {**REPORTS, "binding": "x5t#S256"}, False, "binding 'x5t#S256' not"),
]


@pytest.mark.parametrize(
    ("overrides", "allowed", "reason"),
    [pytest.param(o, a, r, id=i) for i, o, a, r in CASES],
)
@pytest.mark.asyncio
async def test_decision(
    engine: PolicyEngine, overrides: dict[str, Any], allowed: bool, reason: str
) -> None:
    """The default policy allows exactly what one grant covers in every dimension."""
    decision = await decide(engine, make_input(**overrides))
    assert decision.allow is allowed
    assert reason in decision.reason
    assert decision.version == "test-1"
    if not allowed:
        assert (decision.max_ttl, decision.ttl) == (0, 0)


class TestTtl:
    @pytest.mark.asyncio
    async def test_capped(self, engine: PolicyEngine) -> None:
        """A longer TTL is capped at the grant's max_ttl and the reason says so."""
        decision = await decide(engine, make_input(ttl=3600))
        assert (decision.max_ttl, decision.ttl) == (600, 600)
        assert decision.reason == "allowed by grant orders-rw; ttl capped from 3600 to 600"

    @pytest.mark.asyncio
    async def test_kept(self, engine: PolicyEngine) -> None:
        """A TTL under the cap is issued as asked."""
        decision = await decide(engine, make_input(ttl=90))
        assert (decision.max_ttl, decision.ttl) == (600, 90)
        assert decision.reason == "allowed by grant orders-rw"

    @pytest.mark.asyncio
    async def test_default_max_ttl(self, engine: PolicyEngine) -> None:
        """A grant without max_ttl gets defaults.max_ttl."""
        decision = await decide(engine, make_input(**REPORTS, ttl=3600))
        assert (decision.max_ttl, decision.ttl) == (120, 120)

    @pytest.mark.asyncio
    async def test_longest_matching_grant_wins(self, engine: PolicyEngine) -> None:
        """When several grants match, the longest max_ttl applies and names its grant."""
        inp = make_input(resource="orders/archive/7", purpose="billing.audit", ttl=5000)
        decision = await decide(engine, inp)
        assert decision.max_ttl == 900
        assert decision.reason.startswith("allowed by grant grants[2]")


class TestBindings:
    @pytest.mark.asyncio
    async def test_allowed_kinds_listed(self, engine: PolicyEngine) -> None:
        """An allow lists every binding kind the matching grants accept."""
        decision = await decide(engine, make_input())
        assert decision.bindings == ("jkt", "x5t#S256")

    @pytest.mark.asyncio
    async def test_denial_lists_kinds(self, engine: PolicyEngine) -> None:
        """A binding denial says which kinds would have been accepted."""
        decision = await decide(engine, make_input(**REPORTS, binding="x5t#S256"))
        assert decision.bindings == ("jkt",)
        assert decision.reason == "binding 'x5t#S256' not allowed (allowed: 'jkt')"


class TestDefaultDeny:
    @pytest.mark.asyncio
    async def test_no_grants(self, engine: PolicyEngine) -> None:
        """With no grants in the data, everything is denied."""
        decision = await decide(engine, make_input(), version="empty-1")
        assert not decision.allow
        assert decision.reason == "the policy data has no grants"

    @pytest.mark.asyncio
    async def test_malformed_grant_matches_nothing(self) -> None:
        """A grant missing a dimension grants nothing (it does not match everything)."""
        data = {"grants": [{"callers": ["*"], "resources": ["**"], "actions": ["*"]}]}
        with PolicyEngine(workers=1) as engine:
            engine.load(signed("partial-1", data=data))
            decision = await engine.decide("partial-1", make_input(), deadline_ms=DEADLINE_MS)
        assert not decision.allow

    @pytest.mark.asyncio
    async def test_odd_strings_round_trip(self, engine: PolicyEngine) -> None:
        """Quotes, backslashes and non-ASCII in the input reach the reason intact."""
        subject = 'x", "allow": true, "y": "é\\'
        decision = await decide(engine, make_input(**REPORTS, subject=subject))
        assert isinstance(decision, PolicyDecision)
        assert not decision.allow
        assert decision.reason == f"no grant for subject '{subject}'"
