"""Policy model v1: the input document a policy sees and the decision it must return.

Input (``to_input``)::

    {"caller": {"id": str, "roles": [str], "tenant": str | null},
     "request": {"subject": str, "audience": [str], "tenant": str, "resource": str,
                 "actions": [str], "purpose": str, "ttl": int, "binding": "jkt" | "x5t#S256",
                 "parent": null | {"jti", "resource", "actions", "purpose", "depth"}},
     "now": int}

Output (the ``data.coupon.decision`` rule)::

    {"allow": bool, "reason": str, "max_ttl": int, "bindings": [str]}

Both directions are checked strictly. The input is validated when it is built, with the same
grammar the token core uses (resources are normalised, actions sorted), so the policy only
ever sees canonical values. The output is untrusted: anything but exactly the four members
with the right types, or an "allow" that is not self-consistent, means the policy is broken
and the request fails closed with ``CPN-POL-002``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, cast

from coupon import codes
from coupon.errors import DependencyUnavailable, InvalidRequest
from coupon.token import ResourcePattern
from coupon.token._scope import parse_action, parse_actions, parse_purpose

__all__ = [
    "BINDING_KINDS",
    "BindingKind",
    "PolicyCaller",
    "PolicyDecision",
    "PolicyInput",
    "PolicyParent",
    "PolicyRequest",
    "lint_policy_data",
]

BindingKind = Literal["jkt", "x5t#S256"]
#: The key-binding kinds a coupon can carry (``cnf.jkt`` and ``cnf.x5t#S256``).
BINDING_KINDS: Final[frozenset[str]] = frozenset({"jkt", "x5t#S256"})
#: Longest subject, audience, tenant, caller id, role or jti accepted.
MAX_NAME_LENGTH: Final = 512
MAX_LIST_LENGTH: Final = 64
#: Longest reason kept from a policy's output (the rest is cut).
MAX_REASON_LENGTH: Final = 1000
_OUTPUT_MEMBERS: Final = frozenset({"allow", "reason", "max_ttl", "bindings"})
#: C0 controls, DEL and C1 controls: never part of a name, and a way to forge log lines.
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _name(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str")
    if not value or len(value) > MAX_NAME_LENGTH:
        raise InvalidRequest(
            codes.REQUEST_CLAIM, f"{what} must be 1 to {MAX_NAME_LENGTH} characters"
        )
    if _CONTROL.search(value):
        raise InvalidRequest(codes.REQUEST_CLAIM, f"{what} contains a control character")
    return value


def _names(values: object, what: str, *, empty: bool) -> tuple[str, ...]:
    if isinstance(values, str) or not isinstance(values, Sequence | frozenset | set):
        raise TypeError(f"{what} must be a sequence of str")
    if not values and not empty:
        raise InvalidRequest(codes.REQUEST_CLAIM, f"{what} must not be empty")
    if len(values) > MAX_LIST_LENGTH:
        raise InvalidRequest(codes.REQUEST_CLAIM, f"more than {MAX_LIST_LENGTH} {what}")
    items = tuple(sorted({_name(v, what) for v in values}))
    if len(items) != len(values):
        raise InvalidRequest(codes.REQUEST_CLAIM, f"duplicate value in {what}")
    return items


def _count(value: object, what: str, *, minimum: int) -> int:
    if type(value) is not int:
        raise TypeError(f"{what} must be an int")
    if value < minimum:
        raise InvalidRequest(codes.REQUEST_CLAIM, f"{what} must be at least {minimum}")
    return value


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)


def _actions(values: object) -> tuple[str, ...]:
    if isinstance(values, str) or not isinstance(values, Sequence | frozenset | set):
        raise TypeError("actions must be a sequence of str")
    return tuple(sorted(parse_actions(list(values))))


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyCaller:
    """The authenticated caller of the Authority."""

    id: str
    roles: tuple[str, ...] = ()
    tenant: str | None = None

    def __post_init__(self) -> None:
        _name(self.id, "caller id")
        _set(self, "roles", _names(self.roles, "roles", empty=True))
        if self.tenant is not None:
            _name(self.tenant, "caller tenant")


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyParent:
    """The parent coupon of a sub-coupon request (attenuation)."""

    jti: str
    resource: str
    actions: tuple[str, ...]
    purpose: str
    depth: int

    def __post_init__(self) -> None:
        _name(self.jti, "parent jti")
        _set(self, "resource", str(ResourcePattern.parse(self.resource)))
        _set(self, "actions", _actions(self.actions))
        parse_purpose(self.purpose)
        _count(self.depth, "parent depth", minimum=0)


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyRequest:
    """What the caller asks the Authority to issue."""

    subject: str
    audience: tuple[str, ...]
    tenant: str
    resource: str
    actions: tuple[str, ...]
    purpose: str
    ttl: int
    binding: BindingKind
    parent: PolicyParent | None = None

    def __post_init__(self) -> None:
        _name(self.subject, "subject")
        _set(self, "audience", _names(self.audience, "audience", empty=False))
        _name(self.tenant, "tenant")
        _set(self, "resource", str(ResourcePattern.parse(self.resource)))
        _set(self, "actions", _actions(self.actions))
        parse_purpose(self.purpose)
        _count(self.ttl, "ttl", minimum=1)
        if self.binding not in BINDING_KINDS:
            raise InvalidRequest(
                codes.REQUEST_CLAIM, f"binding must be one of {sorted(BINDING_KINDS)}"
            )
        if self.parent is not None and not isinstance(self.parent, PolicyParent):
            raise TypeError("parent must be a PolicyParent or None")


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyInput:
    """The whole input document of one evaluation; ``now`` is the Authority's clock."""

    caller: PolicyCaller
    request: PolicyRequest
    now: int

    def __post_init__(self) -> None:
        if not isinstance(self.caller, PolicyCaller):
            raise TypeError("caller must be a PolicyCaller")
        if not isinstance(self.request, PolicyRequest):
            raise TypeError("request must be a PolicyRequest")
        _count(self.now, "now", minimum=0)

    def to_input(self) -> dict[str, Any]:
        """The JSON input document, exactly as the policy sees it."""
        req, parent = self.request, self.request.parent
        return {
            "caller": {
                "id": self.caller.id,
                "roles": list(self.caller.roles),
                "tenant": self.caller.tenant,
            },
            "request": {
                "subject": req.subject,
                "audience": list(req.audience),
                "tenant": req.tenant,
                "resource": req.resource,
                "actions": list(req.actions),
                "purpose": req.purpose,
                "ttl": req.ttl,
                "binding": req.binding,
                "parent": None
                if parent is None
                else {
                    "jti": parent.jti,
                    "resource": parent.resource,
                    "actions": list(parent.actions),
                    "purpose": parent.purpose,
                    "depth": parent.depth,
                },
            },
            "now": self.now,
        }


def _broken(reason: str) -> DependencyUnavailable:
    return DependencyUnavailable(codes.POLICY_FAILED, f"policy output rejected: {reason}")


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyDecision:
    """A checked decision of one policy version.

    Attributes:
        allow: whether the request may be issued.
        reason: the policy's explanation (for the caller, the audit event and the log).
        max_ttl: the longest lifetime the policy allows (0 when denied).
        bindings: the key-binding kinds the policy allows for this request.
        version: the policy version that decided (stamped into the coupon as ``pol``).
        ttl: the lifetime to issue: the requested TTL capped at ``max_ttl`` (0 when denied).
    """

    allow: bool
    reason: str
    max_ttl: int
    bindings: tuple[BindingKind, ...]
    version: str
    ttl: int

    @classmethod
    def from_output(
        cls, output: object, *, version: str, policy_input: PolicyInput
    ) -> PolicyDecision:
        """Check a policy's ``decision`` value and build the decision.

        Raises:
            DependencyUnavailable: ``CPN-POL-002`` when the output is not exactly model v1 or
                contradicts itself (an allow with no lifetime, or without the requested
                binding): a broken policy fails closed.
        """
        if not isinstance(output, Mapping):
            raise _broken(f"decision is a {type(output).__name__}, not an object")
        members = set(output)
        if members != _OUTPUT_MEMBERS:
            missing, extra = sorted(_OUTPUT_MEMBERS - members), sorted(members - _OUTPUT_MEMBERS)
            raise _broken(f"decision members wrong (missing {missing}, unexpected {extra})")
        allow, reason = output["allow"], output["reason"]
        max_ttl, bindings = output["max_ttl"], output["bindings"]
        if not isinstance(allow, bool):
            raise _broken("allow is not a boolean")
        if not isinstance(reason, str):
            raise _broken("reason is not a string")
        if type(max_ttl) is not int or max_ttl < 0:
            raise _broken("max_ttl is not a non-negative integer")
        if not isinstance(bindings, list) or not all(b in BINDING_KINDS for b in bindings):
            raise _broken(f"bindings must be a list drawn from {sorted(BINDING_KINDS)}")
        if len(set(bindings)) != len(bindings):
            raise _broken("bindings has duplicates")
        requested = policy_input.request
        if allow and max_ttl < 1:
            raise _broken("allow with a max_ttl below 1")
        if allow and requested.binding not in bindings:
            raise _broken(f"allow without listing the requested binding {requested.binding!r}")
        return cls(
            allow=allow,
            reason=reason[:MAX_REASON_LENGTH] or ("allowed" if allow else "denied"),
            max_ttl=max_ttl,
            bindings=tuple(cast("list[BindingKind]", bindings)),
            version=version,
            ttl=min(requested.ttl, max_ttl) if allow else 0,
        )

    def to_dict(self) -> dict[str, Any]:
        """The decision as JSON members, with the version, for responses and audit events."""
        return {
            "allow": self.allow,
            "reason": self.reason,
            "max_ttl": self.max_ttl,
            "bindings": list(self.bindings),
            "ttl": self.ttl,
            "version": self.version,
        }


# --- the data of the default policy ---------------------------------------------------------

_GRANT_LISTS: Final = ("callers", "tenants", "subjects", "audiences", "resources", "actions")
_GRANT_MEMBERS: Final = frozenset(
    {*_GRANT_LISTS, "purposes", "roles", "requests", "id", "max_ttl", "max_depth", "bindings"}
)
_DEFAULTS_MEMBERS: Final = frozenset({"max_ttl", "bindings", "max_depth"})
_REQUEST_KINDS: Final = frozenset({"issue", "attenuate"})


def _lint_limits(where: str, obj: Mapping[str, Any]) -> list[str]:
    problems = []
    if "max_ttl" in obj and (type(obj["max_ttl"]) is not int or obj["max_ttl"] < 1):
        problems.append(f"{where}.max_ttl must be a positive integer")
    if "max_depth" in obj and (type(obj["max_depth"]) is not int or obj["max_depth"] < 0):
        problems.append(f"{where}.max_depth must be a non-negative integer")
    if "bindings" in obj:
        bindings = obj["bindings"]
        if not isinstance(bindings, list | tuple) or not set(bindings) <= BINDING_KINDS:
            problems.append(f"{where}.bindings must be a list drawn from {sorted(BINDING_KINDS)}")
    return problems


def _lint_values(where: str, values: object, check: Any) -> list[str]:
    if not isinstance(values, list | tuple) or not values:
        return [f"{where} must be a non-empty list of strings"]
    problems = []
    for i, value in enumerate(values):
        if not isinstance(value, str) or not value:
            problems.append(f"{where}[{i}] must be a non-empty string")
        elif value != "*" and check is not None:
            try:
                check(value)
            except InvalidRequest as exc:
                problems.append(f"{where}[{i}]: {exc.reason}")
    return problems


def lint_policy_data(data: Mapping[str, Any]) -> list[str]:
    """List what is wrong with the data of the default policy (``grants`` and ``defaults``).

    The default policy ignores a grant it cannot use rather than failing, so a typo there
    silently grants less than intended. Run this before signing a bundle.

    Returns:
        One line per problem; empty when the data is well formed.
    """
    problems: list[str] = []
    defaults = data.get("defaults", {})
    if not isinstance(defaults, Mapping):
        problems.append("defaults must be an object")
    else:
        unknown = sorted(set(defaults) - _DEFAULTS_MEMBERS)
        if unknown:
            problems.append(f"defaults has unknown members {unknown}")
        problems += _lint_limits("defaults", defaults)
    grants = data.get("grants")
    if not isinstance(grants, list | tuple):
        return [*problems, "grants must be a list"]
    checks: dict[str, Any] = {
        "resources": ResourcePattern.parse,
        "actions": parse_action,
        "purposes": parse_purpose,
    }
    for i, grant in enumerate(grants):
        where = f"grants[{i}]"
        if not isinstance(grant, Mapping):
            problems.append(f"{where} must be an object")
            continue
        unknown = sorted(set(grant) - _GRANT_MEMBERS)
        if unknown:
            problems.append(f"{where} has unknown members {unknown}")
        for name in (*_GRANT_LISTS, "purposes"):
            problems += _lint_values(f"{where}.{name}", grant.get(name), checks.get(name))
        if "roles" in grant:
            problems += _lint_values(f"{where}.roles", grant["roles"], None)
        if "requests" in grant:
            requests = grant["requests"]
            if not isinstance(requests, list | tuple) or not requests:
                problems.append(f"{where}.requests must be a non-empty list")
            elif not set(requests) <= _REQUEST_KINDS:
                problems.append(f"{where}.requests must be drawn from {sorted(_REQUEST_KINDS)}")
        if "id" in grant and not isinstance(grant["id"], str):
            problems.append(f"{where}.id must be a string")
        problems += _lint_limits(where, grant)
    return problems
