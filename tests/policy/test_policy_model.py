"""Policy model v1: the input document, strict checking of the output, the grant data lint."""

from __future__ import annotations

from typing import Any

import pytest
from tests.policy.policy_support import make_input

from coupon import codes
from coupon.errors import DependencyUnavailable, InvalidRequest
from coupon.policy import (
    BUILTIN_DATA,
    PolicyCaller,
    PolicyDecision,
    PolicyParent,
    PolicyRequest,
    lint_policy_data,
)
from coupon.policy._model import MAX_REASON_LENGTH

ALLOW: dict[str, Any] = {
    "allow": True,
    "reason": "ok",
    "max_ttl": 120,
    "bindings": ["jkt", "x5t#S256"],
}


def request(**overrides: Any) -> PolicyRequest:
    args: dict[str, Any] = {
        "subject": "alice",
        "audience": ("api",),
        "tenant": "acme",
        "resource": "orders/42",
        "actions": ("read",),
        "purpose": "billing",
        "ttl": 60,
        "binding": "jkt",
    }
    args.update(overrides)
    return PolicyRequest(**args)


class TestPolicyInput:
    def test_to_input(self) -> None:
        """The input document has exactly the model v1 members and values."""
        doc = make_input(roles=("issuer",), caller_tenant="acme", parent_depth=1).to_input()
        assert doc == {
            "caller": {"id": "svc-orders", "roles": ["issuer"], "tenant": "acme"},
            "request": {
                "subject": "alice",
                "audience": ["orders-api"],
                "tenant": "acme",
                "resource": "orders/42",
                "actions": ["read"],
                "purpose": "billing",
                "ttl": 300,
                "binding": "jkt",
                "parent": {
                    "jti": "parent-jti",
                    "resource": "orders/**",
                    "actions": ["read", "write"],
                    "purpose": "billing",
                    "depth": 1,
                },
            },
            "now": 1_700_000_000,
        }

    def test_no_parent_is_null(self) -> None:
        """A top-level issue has ``parent: null``."""
        assert make_input().to_input()["request"]["parent"] is None

    def test_normalises(self) -> None:
        """Resources lose their outer slashes; actions, audiences and roles are sorted."""
        req = request(resource="/orders/*/lines/", actions=["write", "read"], audience=["b", "a"])
        assert req.resource == "orders/*/lines"
        assert req.actions == ("read", "write")
        assert req.audience == ("a", "b")
        assert PolicyCaller(id="c", roles=("z", "a")).roles == ("a", "z")

    @pytest.mark.parametrize(
        ("overrides", "code"),
        [
            pytest.param({"resource": "orders/../admin"}, codes.REQUEST_RESOURCE, id="traversal"),
            pytest.param({"resource": "a/**/b"}, codes.REQUEST_RESOURCE, id="inner-rest"),
            pytest.param({"actions": ["Read"]}, codes.REQUEST_ACTION, id="action-case"),
            pytest.param({"actions": []}, codes.REQUEST_ACTION, id="no-actions"),
            pytest.param({"actions": ["a", "a"]}, codes.REQUEST_ACTION, id="dup-action"),
            pytest.param({"purpose": "Billing"}, codes.REQUEST_PURPOSE, id="purpose"),
            pytest.param({"ttl": 0}, codes.REQUEST_CLAIM, id="ttl-zero"),
            pytest.param({"binding": "jwk"}, codes.REQUEST_CLAIM, id="binding"),
            pytest.param({"subject": ""}, codes.REQUEST_CLAIM, id="empty-subject"),
            pytest.param({"subject": "s" * 513}, codes.REQUEST_CLAIM, id="long-subject"),
            pytest.param({"audience": []}, codes.REQUEST_CLAIM, id="no-audience"),
            pytest.param({"audience": ["a", "a"]}, codes.REQUEST_CLAIM, id="dup-audience"),
            pytest.param({"tenant": ""}, codes.REQUEST_CLAIM, id="empty-tenant"),
            pytest.param({"tenant": "a\x00b"}, codes.REQUEST_CLAIM, id="nul-tenant"),
            pytest.param({"subject": "alice\nadmin"}, codes.REQUEST_CLAIM, id="newline-subject"),
            pytest.param({"audience": ["a\x7f"]}, codes.REQUEST_CLAIM, id="del-audience"),
            pytest.param({"subject": "a\x85b"}, codes.REQUEST_CLAIM, id="c1-subject"),
        ],
    )
    def test_refuses_bad_values(self, overrides: dict[str, Any], code: Any) -> None:
        """Untrusted values that break the grammar are ``InvalidRequest`` with their code."""
        with pytest.raises(InvalidRequest, match=code.code):
            request(**overrides)

    @pytest.mark.parametrize(
        "overrides",
        [
            pytest.param({"ttl": "60"}, id="ttl-str"),
            pytest.param({"ttl": True}, id="ttl-bool"),
            pytest.param({"audience": "api"}, id="audience-str"),
            pytest.param({"actions": "read"}, id="actions-str"),
            pytest.param({"subject": 5}, id="subject-int"),
            pytest.param({"parent": {"jti": "x"}}, id="parent-dict"),
        ],
    )
    def test_refuses_wrong_types(self, overrides: dict[str, Any]) -> None:
        """Wrong Python types are a programming error: ``TypeError``."""
        with pytest.raises(TypeError):
            request(**overrides)

    def test_parent_is_checked(self) -> None:
        """The parent's resource, actions, purpose and depth follow the same grammar."""
        with pytest.raises(InvalidRequest, match=codes.REQUEST_CLAIM.code):
            PolicyParent(jti="j", resource="a", actions=("read",), purpose="p", depth=-1)
        with pytest.raises(InvalidRequest, match=codes.REQUEST_RESOURCE.code):
            PolicyParent(jti="j", resource="a//b", actions=("read",), purpose="p", depth=0)

    def test_now_is_checked(self) -> None:
        """``now`` is a non-negative int of seconds."""
        base = make_input()
        with pytest.raises(TypeError):
            type(base)(caller=base.caller, request=base.request, now=1.5)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            type(base)(caller="c", request=base.request, now=1)  # type: ignore[arg-type]


class TestPolicyDecision:
    def test_allow(self) -> None:
        """A well-formed allow becomes a decision with the capped TTL and the version."""
        inp = make_input(ttl=300)
        decision = PolicyDecision.from_output(ALLOW, version="v7", policy_input=inp)
        assert decision.allow
        assert decision.max_ttl == 120
        assert decision.ttl == 120
        assert decision.bindings == ("jkt", "x5t#S256")
        assert decision.version == "v7"

    def test_ttl_below_cap(self) -> None:
        """A TTL under the cap is kept as requested."""
        inp = make_input(ttl=30)
        assert PolicyDecision.from_output(ALLOW, version="v", policy_input=inp).ttl == 30

    def test_deny(self) -> None:
        """A deny has TTL 0 whatever ``max_ttl`` says."""
        output = {"allow": False, "reason": "no", "max_ttl": 0, "bindings": []}
        decision = PolicyDecision.from_output(output, version="v", policy_input=make_input())
        assert (decision.allow, decision.reason, decision.ttl) == (False, "no", 0)

    def test_to_dict(self) -> None:
        """The JSON form carries the version and the granted TTL."""
        decision = PolicyDecision.from_output(ALLOW, version="v", policy_input=make_input())
        assert decision.to_dict() == {
            "allow": True,
            "reason": "ok",
            "max_ttl": 120,
            "bindings": ["jkt", "x5t#S256"],
            "ttl": 120,
            "version": "v",
        }

    def test_long_reason_is_cut(self) -> None:
        """A very long reason is cut, not rejected."""
        output = {**ALLOW, "reason": "r" * 5000}
        decision = PolicyDecision.from_output(output, version="v", policy_input=make_input())
        assert len(decision.reason) == MAX_REASON_LENGTH

    @pytest.mark.parametrize(
        "output",
        [
            pytest.param(True, id="bool"),
            pytest.param(None, id="null"),
            pytest.param([ALLOW], id="list"),
            pytest.param({k: v for k, v in ALLOW.items() if k != "reason"}, id="missing"),
            pytest.param({**ALLOW, "obligations": []}, id="extra-member"),
            pytest.param({**ALLOW, "allow": 1}, id="allow-int"),
            pytest.param({**ALLOW, "allow": "true"}, id="allow-str"),
            pytest.param({**ALLOW, "reason": None}, id="reason-null"),
            pytest.param({**ALLOW, "max_ttl": 120.0}, id="ttl-float"),
            pytest.param({**ALLOW, "max_ttl": True}, id="ttl-bool"),
            pytest.param({**ALLOW, "max_ttl": -1}, id="ttl-negative"),
            pytest.param({**ALLOW, "max_ttl": "120"}, id="ttl-str"),
            pytest.param({**ALLOW, "max_ttl": 0}, id="allow-without-ttl"),
            pytest.param({**ALLOW, "bindings": "jkt"}, id="bindings-str"),
            pytest.param({**ALLOW, "bindings": ["jkt", "jwk"]}, id="unknown-binding"),
            pytest.param({**ALLOW, "bindings": ["jkt", "jkt"]}, id="dup-binding"),
            pytest.param({**ALLOW, "bindings": ["x5t#S256"]}, id="allow-without-binding"),
        ],
    )
    def test_garbage_fails_closed(self, output: Any) -> None:
        """Anything but a self-consistent model v1 decision is ``CPN-POL-002``."""
        with pytest.raises(DependencyUnavailable, match=codes.POLICY_FAILED.code):
            PolicyDecision.from_output(output, version="v", policy_input=make_input())


GOOD_GRANT: dict[str, Any] = {
    "id": "g",
    "callers": ["svc"],
    "requests": ["issue", "attenuate"],
    "roles": ["issuer"],
    "tenants": ["*"],
    "subjects": ["*"],
    "audiences": ["api"],
    "resources": ["orders/**"],
    "actions": ["read"],
    "purposes": ["billing"],
    "max_ttl": 60,
    "max_depth": 0,
    "bindings": ["jkt"],
}


class TestLint:
    def test_builtin_data_is_clean(self) -> None:
        """The builtin policy's data passes the lint."""
        assert lint_policy_data(BUILTIN_DATA) == []

    def test_good_grant(self) -> None:
        """A grant using every member passes."""
        assert lint_policy_data({"grants": [GOOD_GRANT], "defaults": {"max_ttl": 5}}) == []

    @pytest.mark.parametrize(
        ("data", "problem"),
        [
            pytest.param({}, "grants must be a list", id="no-grants"),
            pytest.param({"grants": [1]}, "grants[0] must be an object", id="not-object"),
            pytest.param({"grants": [{**GOOD_GRANT, "callers": "svc"}]}, "callers", id="str"),
            pytest.param({"grants": [{**GOOD_GRANT, "tenants": []}]}, "tenants", id="empty"),
            pytest.param(
                {"grants": [{**GOOD_GRANT, "resources": ["a/**/b"]}]}, "may only end", id="resource"
            ),
            pytest.param(
                {"grants": [{**GOOD_GRANT, "actions": ["Read"]}]}, "invalid action", id="action"
            ),
            pytest.param(
                {"grants": [{**GOOD_GRANT, "purposes": ["x."]}]}, "invalid purpose", id="purpose"
            ),
            pytest.param({"grants": [{**GOOD_GRANT, "max_ttl": "60"}]}, "max_ttl", id="ttl"),
            pytest.param({"grants": [{**GOOD_GRANT, "max_depth": -1}]}, "max_depth", id="depth"),
            pytest.param(
                {"grants": [{**GOOD_GRANT, "bindings": ["jwk"]}]}, "bindings", id="binding"
            ),
            pytest.param({"grants": [{**GOOD_GRANT, "id": 3}]}, "id must be", id="id"),
            pytest.param(
                {"grants": [{**GOOD_GRANT, "tenant": ["x"]}]}, "unknown members", id="typo"
            ),
            pytest.param(
                {"grants": [{**GOOD_GRANT, "requests": ["mint"]}]}, "requests", id="requests"
            ),
            pytest.param({"grants": [{**GOOD_GRANT, "requests": []}]}, "requests", id="no-req"),
            pytest.param({"grants": [], "defaults": []}, "defaults must be", id="defaults"),
            pytest.param(
                {"grants": [], "defaults": {"ttl": 1}}, "unknown members", id="defaults-typo"
            ),
        ],
    )
    def test_problems(self, data: dict[str, Any], problem: str) -> None:
        """Each mistake in the grant data is reported."""
        assert any(problem in line for line in lint_policy_data(data))


class TestLimits:
    def test_too_many_audiences(self) -> None:
        """More than 64 audiences is refused."""
        with pytest.raises(InvalidRequest, match=codes.REQUEST_CLAIM.code):
            request(audience=[f"a{i}" for i in range(65)])

    def test_request_type(self) -> None:
        """The request must be a ``PolicyRequest``."""
        base = make_input()
        with pytest.raises(TypeError):
            type(base)(caller=base.caller, request={}, now=1)  # type: ignore[arg-type]
