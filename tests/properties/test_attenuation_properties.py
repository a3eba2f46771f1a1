"""Attenuation never widens: neither the Authority's sub-coupons nor offline chain links.

Narrowness is judged by a reference written here, independent of ``coupon.token``: a
resource pattern is compared by enumerating resources (see ``ref_covers``), a purpose by its
dotted labels, actions and audiences as sets, and the lifetime as integers.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from hypothesis import event, given, settings
from hypothesis import strategies as st

from coupon import codes
from coupon.errors import InvalidRequest
from coupon.token import (
    COUPON_TYP,
    Binding,
    Claims,
    CouponBuilder,
    Decision,
    KeySet,
    Request,
    SigningKey,
    Verifier,
    attenuate,
    create_dpop_proof,
    link_hash,
    mint,
    new_jti,
    parse_chain,
)
from coupon.token.hazmat import b64url_encode, encode_compact

NOW = 1_700_000_000
ISS = "https://authority.example"
URI = "https://api.example/things"
TENANT = "acme"
# The parent lives from NOW - 60 to NOW + 300; every check below happens at NOW.
PARENT_START, PARENT_TTL = NOW - 60, 360

ISSUER = SigningKey.generate(kid="issuer-1")
HOLDER = SigningKey.generate()
DELEGATES = (SigningKey.generate("ES256"), SigningKey.generate())
KEYS = KeySet([ISSUER])

AUDIENCES = ("api", "web", "cli")
ACTIONS = ("read", "write", "delete")
PURPOSES = ("billing", "billing.refund", "billing.refund.partial", "billingx", "billing2.refund")
PATTERN_LITERALS = ("a", "b")
RESOURCE_LITERALS = ("a", "b", "c")
ONE, REST = "*", "**"

SETTINGS = settings(max_examples=60, deadline=None)


# -- the reference ------------------------------------------------------------------------------


T = TypeVar("T")


def outcome(make: Callable[[], T]) -> T | InvalidRequest:
    """Run ``make`` and return its result, or the ``InvalidRequest`` it raised."""
    try:
        return make()
    except InvalidRequest as exc:
        return exc


def ref_matches(pattern: Sequence[str], resource: Sequence[str]) -> bool:
    """The obviously correct recursive matcher (``**`` tries every split)."""
    if not pattern:
        return not resource
    head, rest = pattern[0], pattern[1:]
    if head == REST:
        return any(ref_matches(rest, resource[i:]) for i in range(len(resource) + 1))
    if not resource:
        return False
    return (head in (ONE, resource[0])) and ref_matches(rest, resource[1:])


def ref_covers(p: Sequence[str], q: Sequence[str]) -> bool:
    """Every resource ``q`` matches is matched by ``p``, checked by bounded enumeration.

    Resources over the literals of both patterns plus one fresh literal, of 1 to
    ``max(len(p), len(q)) + 1`` segments, suffice; the argument is written out in
    ``tests/properties/test_scope_properties.py``.
    """
    alphabet = sorted({s for s in (*p, *q) if s not in (ONE, REST)} | {"fresh"})
    for length in range(1, max(len(p), len(q)) + 2):
        for resource in itertools.product(alphabet, repeat=length):
            if ref_matches(q, resource) and not ref_matches(p, resource):
                return False
    return True


def ref_purpose_covers(granted: str, requested: str) -> bool:
    """A purpose covers itself and the purposes below it, label by label."""
    labels = granted.split(".")
    return requested.split(".")[: len(labels)] == labels


@dataclass(frozen=True)
class Grant:
    """What a coupon grants, as plain values."""

    tid: str
    lin: str
    aud: frozenset[str]
    res: str
    act: frozenset[str]
    pur: str
    nbf: int
    exp: int

    @classmethod
    def of(cls, claims: Claims) -> Grant:
        """The grant of parsed claims."""
        return cls(
            claims.tid,
            claims.lin,
            frozenset(claims.aud),
            str(claims.res),
            claims.act,
            claims.pur,
            claims.nbf,
            claims.exp,
        )


def ref_narrower(parent: Grant, child: Grant) -> bool:
    """Whether ``child`` grants nothing ``parent`` does not, for no longer."""
    return (
        child.tid == parent.tid
        and child.lin == parent.lin
        and child.aud <= parent.aud
        and ref_covers(parent.res.split("/"), child.res.split("/"))
        and child.act <= parent.act
        and ref_purpose_covers(parent.pur, child.pur)
        and child.nbf >= parent.nbf
        and child.exp <= parent.exp
    )


# -- strategies ---------------------------------------------------------------------------------


@st.composite
def patterns(draw: st.DrawFn) -> str:
    """A resource pattern over a two-letter alphabet, so that patterns often nest."""
    open_ended = draw(st.booleans())
    fixed = draw(
        st.lists(
            st.sampled_from((*PATTERN_LITERALS, ONE)),
            min_size=0 if open_ended else 1,
            max_size=3,
        )
    )
    return "/".join([*fixed, REST] if open_ended else fixed)


@st.composite
def instances(draw: st.DrawFn, pattern: str) -> str:
    """A concrete resource ``pattern`` matches."""
    out: list[str] = []
    for segment in pattern.split("/"):
        if segment == ONE:
            out.append(draw(st.sampled_from(RESOURCE_LITERALS)))
        elif segment == REST:
            out.extend(draw(st.lists(st.sampled_from(RESOURCE_LITERALS), max_size=2)))
        else:
            out.append(segment)
    return "/".join(out or [draw(st.sampled_from(RESOURCE_LITERALS))])


def subsets(values: Sequence[str]) -> st.SearchStrategy[tuple[str, ...]]:
    """Non-empty subsets of ``values``, in a random order."""
    return st.lists(st.sampled_from(values), min_size=1, unique=True).map(tuple)


@dataclass(frozen=True)
class Scope:
    """The scope part of a coupon request."""

    resource: str
    actions: tuple[str, ...]
    purpose: str
    audience: tuple[str, ...]


scopes = st.builds(
    Scope,
    resource=patterns(),
    actions=subsets(ACTIONS),
    purpose=st.sampled_from(PURPOSES),
    audience=subsets(AUDIENCES),
)


@st.composite
def narrowing_steps(draw: st.DrawFn, parent: Scope) -> Scope:
    """A scope no wider than ``parent`` (the resource is kept when a drawn one is not nested)."""
    candidate = draw(patterns())
    resource = (
        candidate
        if ref_covers(parent.resource.split("/"), candidate.split("/"))
        else parent.resource
    )
    purpose = draw(st.sampled_from((parent.purpose, parent.purpose + ".sub")))
    return Scope(
        resource=resource,
        actions=draw(subsets(parent.actions)),
        purpose=purpose,
        audience=draw(subsets(parent.audience)),
    )


# -- helpers ------------------------------------------------------------------------------------


def mint_parent(scope: Scope) -> str:
    """A root coupon bound to ``HOLDER`` with ``scope``, valid from NOW - 60 to NOW + 300."""
    return mint(
        ISSUER,
        issuer=ISS,
        subject="svc-a",
        audience=scope.audience,
        tenant=TENANT,
        resource=scope.resource,
        actions=scope.actions,
        purpose=scope.purpose,
        binding=Binding(jkt=HOLDER.public.thumbprint),
        ttl=PARENT_TTL,
        now=PARENT_START,
        jti="root",
    )


def leaf_claims(token: str) -> tuple[Claims, ...]:
    """The claims of every link of ``token`` (parsed only; the tests verify separately)."""
    return tuple(link.claims for link in parse_chain(token, max_size=8192, max_depth=8))


def decide(token: str, key: SigningKey, request: dict[str, Any]) -> Decision:
    """Present ``token`` with a fresh DPoP proof by ``key`` to a fresh verifier at NOW."""
    proof = create_dpop_proof(
        key, method="GET", uri=URI, now=NOW, jti=new_jti(), access_token=token
    )
    full = Request(method="GET", uri=URI, dpop=proof, **request)
    return Verifier(KEYS).decide(token, full, now=NOW)


def holder_link(parent_token: str, claims: dict[str, Any]) -> str:
    """Sign ``claims`` as a chain link with ``HOLDER``, bypassing every builder check."""
    jwk = {k: v for k, v in HOLDER.public.jwk().items() if k not in ("kid", "alg", "use")}
    header = {"alg": HOLDER.alg, "typ": COUPON_TYP, "jwk": jwk}
    signing_input, prefix = encode_compact(header, claims)
    return f"{parent_token}~{prefix}.{b64url_encode(HOLDER.sign(signing_input))}"


# -- the properties -----------------------------------------------------------------------------


class TestAuthoritySubCoupons:
    """``CouponBuilder().child_of(parent)``: the Authority refuses to sign a widening."""

    @SETTINGS
    @given(
        data=st.data(),
        parent=scopes,
        tenant=st.sampled_from((TENANT, TENANT, "other")),
        start=st.integers(-70, 150),
        ttl=st.integers(1, 300),
    )
    def test_refuses_or_narrows(
        self, data: st.DataObject, parent: Scope, tenant: str, start: int, ttl: int
    ) -> None:
        """Signing either fails with CPN-REQ-006, exactly when the child widens, or narrows."""
        child = data.draw(narrowing_steps(parent) | scopes)
        parent_token = mint_parent(parent)
        (parent_claims,) = leaf_claims(parent_token)
        builder = (
            CouponBuilder()
            .child_of(parent_token)
            .issuer(ISS)
            .subject("svc-b")
            .audience(*child.audience)
            .tenant(tenant)
            .resource(child.resource)
            .actions(*child.actions)
            .purpose(child.purpose)
            .bind(Binding(jkt=DELEGATES[0].public.thumbprint))
            .lifetime(now=NOW + start, ttl=ttl)
            .jti("child")
        )
        wanted = Grant(
            tenant,
            parent_claims.lin,
            frozenset(child.audience),
            child.resource,
            frozenset(child.actions),
            child.purpose,
            NOW + start,
            NOW + start + ttl,
        )
        token = outcome(lambda: builder.sign(ISSUER))
        if isinstance(token, InvalidRequest):
            event("refused")
            assert token.code is codes.REQUEST_WIDENS
            assert not ref_narrower(Grant.of(parent_claims), wanted)
            return
        event("signed")
        (claims,) = leaf_claims(token)
        assert Grant.of(claims) == wanted
        assert ref_narrower(Grant.of(parent_claims), Grant.of(claims))
        assert claims.dep == parent_claims.dep + 1
        assert claims.par is not None
        assert claims.par.jti == parent_claims.jti


class TestOfflineAttenuate:
    """``attenuate``: the holder's own narrowing, verified by the verifier."""

    @SETTINGS
    @given(
        parent=scopes,
        resource=st.none() | patterns(),
        actions=st.none() | subsets(ACTIONS),
        purpose=st.none() | st.sampled_from(PURPOSES),
        audience=st.none() | subsets(AUDIENCES),
        ttl=st.none() | st.integers(1, 600),
    )
    def test_refuses_or_narrows(
        self,
        parent: Scope,
        resource: str | None,
        actions: tuple[str, ...] | None,
        purpose: str | None,
        audience: tuple[str, ...] | None,
        ttl: int | None,
    ) -> None:
        """``attenuate`` fails with CPN-REQ-006 exactly when it would widen, else verifies."""
        parent_token = mint_parent(parent)
        (root,) = leaf_claims(parent_token)
        wanted = Grant(
            TENANT,
            root.lin,
            frozenset(audience or parent.audience),
            resource or parent.resource,
            frozenset(actions or parent.actions),
            purpose or parent.purpose,
            NOW,
            root.exp if ttl is None else min(root.exp, NOW + ttl),
        )
        token = outcome(
            lambda: attenuate(
                parent_token,
                HOLDER,
                delegate=Binding(jkt=DELEGATES[0].public.thumbprint),
                subject="svc-b",
                resource=resource,
                actions=actions,
                purpose=purpose,
                audience=audience,
                ttl=ttl,
                now=NOW,
                jti="link",
            )
        )
        if isinstance(token, InvalidRequest):
            event("refused")
            assert token.code is codes.REQUEST_WIDENS
            assert not ref_narrower(Grant.of(root), wanted)
            return
        event("attenuated")
        decision = decide(token, DELEGATES[0], {"audience": sorted(wanted.aud)[0]})
        assert decision.allowed, decision.error
        assert decision.verified is not None
        leaf = decision.verified.claims
        assert Grant.of(leaf) == wanted
        assert ref_narrower(Grant.of(root), Grant.of(leaf))


# One widening per example (or none, or everything at random): a link that only narrows is
# rare among random scopes, so the narrowing one is built on purpose and then perturbed.
PERTURBATIONS = (
    None,
    None,
    None,
    "tenant",
    "lineage",
    "audience",
    "resource",
    "actions",
    "purpose",
    "nbf",
    "exp",
    "random",
)


class TestHandBuiltLinks:
    """Links signed by the holder's key outside the builder: the verifier is the last line."""

    @SETTINGS
    @given(data=st.data(), parent=scopes, perturbation=st.sampled_from(PERTURBATIONS))
    def test_verifier_refuses_exactly_the_widening_links(
        self, data: st.DataObject, parent: Scope, perturbation: str | None
    ) -> None:
        """A link is denied with CPN-CHAIN-003 if it widens, and allowed if it narrows."""
        parent_token = mint_parent(parent)
        (root,) = leaf_claims(parent_token)
        child = data.draw(scopes if perturbation == "random" else narrowing_steps(parent))
        nbf = root.nbf + data.draw(st.integers(0, 30))
        exp = root.exp - data.draw(st.integers(0, 200))
        claims: dict[str, Any] = {
            "ver": 1,
            "iss": root.sub,
            "sub": "svc-b",
            "aud": list(child.audience),
            "iat": nbf,
            "nbf": nbf,
            "exp": exp,
            "jti": "link",
            "tid": root.tid,
            "res": child.resource,
            "act": sorted(child.actions),
            "pur": child.purpose,
            "cnf": {"jkt": DELEGATES[0].public.thumbprint},
            "lin": root.lin,
            "dep": 1,
            "par": {"jti": root.jti, "hsh": link_hash(parent_token)},
        }
        if perturbation == "tenant":
            claims["tid"] = "other"
        elif perturbation == "lineage":
            claims["lin"] = "someone-else"
        elif perturbation == "audience":
            claims["aud"] = list(data.draw(subsets(AUDIENCES)))
        elif perturbation == "resource":
            claims["res"] = data.draw(patterns())
        elif perturbation == "actions":
            claims["act"] = sorted(data.draw(subsets(ACTIONS)))
        elif perturbation == "purpose":
            claims["pur"] = data.draw(st.sampled_from((*PURPOSES, "billing.sub")))
        elif perturbation == "nbf":
            claims["iat"] = claims["nbf"] = root.nbf - data.draw(st.integers(1, 30))
        elif perturbation == "exp":
            claims["exp"] = root.exp + data.draw(st.integers(1, 100))
        elif perturbation == "random":
            claims["tid"] = data.draw(st.sampled_from((TENANT, "other")))
            claims["iat"] = claims["nbf"] = root.nbf + data.draw(st.integers(-30, 30))
            claims["exp"] = root.exp + data.draw(st.integers(-200, 100))
        token = holder_link(parent_token, claims)
        (_, link) = leaf_claims(token)
        request = {
            "audience": link.aud[0],
            "resource": data.draw(instances(str(link.res))),
            "action": data.draw(st.sampled_from(sorted(link.act))),
            "purpose": link.pur,
            "tenant": link.tid,
        }
        decision = decide(token, DELEGATES[0], request)
        if ref_narrower(Grant.of(root), Grant.of(link)):
            event("narrows")
            assert decision.allowed, decision.error
        else:
            event("widens")
            assert decision.error is not None
            assert (decision.error.code, decision.error.step) == (codes.CHAIN_WIDENS, "chain")


class TestMonotonicity:
    """Whatever a verified leaf allows, its root allows too."""

    @SETTINGS
    @given(data=st.data(), root_scope=scopes, depth=st.integers(1, 2), from_leaf=st.booleans())
    def test_leaf_allows_only_what_the_root_allows(
        self, data: st.DataObject, root_scope: Scope, depth: int, from_leaf: bool
    ) -> None:
        """A request allowed with an attenuated chain is allowed with the chain's root alone."""
        root = mint_parent(root_scope)
        token, scope, holders = root, root_scope, (HOLDER, *DELEGATES)
        for level in range(depth):
            scope = data.draw(narrowing_steps(scope))
            token = attenuate(
                token,
                holders[level],
                delegate=Binding(jkt=holders[level + 1].public.thumbprint),
                subject=f"svc-{level}",
                resource=scope.resource,
                actions=scope.actions,
                purpose=scope.purpose,
                audience=scope.audience,
                ttl=120,
                now=NOW,
                jti=f"link-{level}",
            )
        if from_leaf:
            request = {
                "audience": data.draw(st.sampled_from(scope.audience)),
                "resource": data.draw(instances(scope.resource)),
                "action": data.draw(st.sampled_from(scope.actions)),
                "purpose": scope.purpose,
                "tenant": TENANT,
            }
        else:
            request = {
                "audience": data.draw(st.sampled_from(AUDIENCES)),
                "resource": data.draw(
                    st.lists(st.sampled_from(RESOURCE_LITERALS), min_size=1, max_size=4).map(
                        "/".join
                    )
                ),
                "action": data.draw(st.sampled_from(ACTIONS)),
                "purpose": data.draw(st.sampled_from((*PURPOSES, "billing.sub", "ops"))),
                "tenant": data.draw(st.sampled_from((TENANT, "other"))),
            }
        leaf_decision = decide(token, holders[depth], request)
        if from_leaf:
            assert leaf_decision.allowed, leaf_decision.error
        event("leaf allowed" if leaf_decision.allowed else "leaf denied")
        if leaf_decision.allowed:
            root_decision = decide(root, HOLDER, request)
            assert root_decision.allowed, root_decision.error
