"""Messages in and out: requests validated by the REST models, answers built from claims."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coupon.errors import InvalidRequest
from coupon.grpc_api import (
    AttenuateRequest,
    Binding,
    IntrospectRequest,
    IntrospectResponse,
    IssueRequest,
    RevokeRequest,
    VerifyRequest,
)
from coupon.grpc_api._convert import (
    MAX_INTROSPECT_TOKEN,
    claims_message,
    delegate_input,
    introspect_token,
    introspection,
    issue_input,
    revoke_request,
    revoke_response,
    verify_input,
)
from coupon.token import Binding as TokenBinding
from coupon.token import SigningKey, attenuate, mint, parse_chain

JKT = "A" * 43
_TEXT = st.text(max_size=40)
_LISTS = st.lists(_TEXT, max_size=20)
_TTL = st.one_of(st.none(), st.integers(min_value=-(2**63), max_value=2**63 - 1))
_BINDINGS = st.one_of(
    st.none(),
    st.just(Binding()),
    st.builds(Binding, jkt=st.one_of(st.just(JKT), _TEXT)),
    st.builds(Binding, x5t_s256=st.one_of(st.just(JKT), _TEXT)),
)


def _refusal(convert: Callable[[Any], object], message: object) -> str | None:
    """The code ``convert`` refuses ``message`` with, or None when it takes it."""
    try:
        convert(message)
    except InvalidRequest as exc:
        return exc.code.code
    return None


def _issue(**fields: Any) -> IssueRequest:
    base: dict[str, Any] = {
        "subject": "alice",
        "audience": ["orders"],
        "tenant": "acme",
        "resource": "orders/**",
        "actions": ["read"],
        "purpose": "billing",
        "binding": Binding(jkt=JKT),
    }
    base.update(fields)
    return IssueRequest(**{k: v for k, v in base.items() if v is not None})


class TestRequests:
    """Requests become the service layer's inputs, or CPN-REQ-* errors."""

    def test_issue(self) -> None:
        """Every field arrives; an unset ttl is None, not 0."""
        got = issue_input(_issue())
        assert (got.subject, got.audience, got.actions, got.ttl) == (
            "alice",
            ("orders",),
            ("read",),
            None,
        )
        assert got.binding.jkt == JKT
        assert issue_input(_issue(ttl=60)).ttl == 60

    @pytest.mark.parametrize(
        "change",
        [
            {"subject": ""},
            {"ttl": 0},
            {"binding": None},
            {"binding": Binding()},
            {"binding": Binding(jkt="short")},
            {"audience": []},
            {"purpose": "x\x7f"},
        ],
        ids=repr,
    )
    def test_issue_refusals_are_req_009(self, change: dict[str, Any]) -> None:
        """What the REST model refuses with 422 is CPN-REQ-009 here too."""
        with pytest.raises(InvalidRequest) as raised:
            issue_input(_issue(**change))
        assert raised.value.code.code == "CPN-REQ-009"

    def test_attenuate_keeps_the_parents_scope_when_left_out(self) -> None:
        """Empty lists and unset optionals mean "the parent's"."""
        got = delegate_input(AttenuateRequest(subject="bob", binding=Binding(jkt=JKT)))
        assert (got.audience, got.actions, got.resource, got.purpose, got.ttl) == (None,) * 5
        narrowed = delegate_input(
            AttenuateRequest(
                subject="bob", binding=Binding(jkt=JKT), actions=["read"], resource="orders/1"
            )
        )
        assert (narrowed.actions, narrowed.resource) == (("read",), "orders/1")

    def test_verify_keeps_an_empty_resource(self) -> None:
        """A present but empty optional field is passed on, as REST passes "" on."""
        got = verify_input(VerifyRequest(coupon="c", audience="orders", resource=""))
        assert got.request.resource == ""
        assert verify_input(VerifyRequest(coupon="c", audience="orders")).request.resource is None

    def test_verify_proof_needs_htm_and_htu(self) -> None:
        """A proof without htm or htu: CPN-REQ-007."""
        with pytest.raises(InvalidRequest) as raised:
            verify_input(VerifyRequest(coupon="c", audience="a", dpop="p", htm="GET"))
        assert raised.value.code.code == "CPN-REQ-007"

    def test_introspect_is_bounded(self) -> None:
        """A token past REST's body limit is CPN-REQ-009."""
        assert introspect_token(IntrospectRequest(token="t" * MAX_INTROSPECT_TOKEN))
        with pytest.raises(InvalidRequest):
            introspect_token(IntrospectRequest(token="t" * (MAX_INTROSPECT_TOKEN + 1)))

    def test_revoke_kinds(self) -> None:
        """The five kinds pass; anything else is CPN-REQ-009."""
        for kind in ("jti", "lineage", "subject", "tenant", "kid"):
            assert revoke_request(RevokeRequest(kind=kind, value="v", reason="r")).kind == kind
        with pytest.raises(InvalidRequest):
            revoke_request(RevokeRequest(kind="JTI", value="v", reason="r"))


class TestArbitraryInput:
    """Any message is a valid input or an InvalidRequest: never another exception."""

    @settings(max_examples=300)
    @given(
        subject=_TEXT,
        audience=_LISTS,
        tenant=_TEXT,
        resource=_TEXT,
        actions=_LISTS,
        purpose=_TEXT,
        ttl=_TTL,
        binding=_BINDINGS,
    )
    def test_issue(self, **fields: Any) -> None:
        """IssueRequest."""
        message = IssueRequest(**{k: v for k, v in fields.items() if v is not None})
        assert _refusal(issue_input, message) in (None, "CPN-REQ-009")

    @settings(max_examples=200)
    @given(
        subject=_TEXT,
        audience=_LISTS,
        actions=_LISTS,
        resource=st.one_of(st.none(), _TEXT),
        purpose=st.one_of(st.none(), _TEXT),
        ttl=_TTL,
        binding=_BINDINGS,
    )
    def test_attenuate(self, **fields: Any) -> None:
        """AttenuateRequest."""
        message = AttenuateRequest(**{k: v for k, v in fields.items() if v is not None})
        assert _refusal(delegate_input, message) in (None, "CPN-REQ-009")

    @settings(max_examples=200)
    @given(
        coupon=_TEXT,
        audience=_TEXT,
        optional=st.dictionaries(
            st.sampled_from(
                [
                    *("resource", "action", "purpose", "tenant"),
                    *("dpop", "htm", "htu", "certificate_thumbprint"),
                ]
            ),
            _TEXT,
        ),
    )
    def test_verify(self, coupon: str, audience: str, optional: dict[str, str]) -> None:
        """VerifyRequest."""
        message = VerifyRequest(coupon=coupon, audience=audience, **optional)
        assert _refusal(verify_input, message) in (None, "CPN-REQ-009", "CPN-REQ-007")


class TestAnswers:
    """Claims and RFC 7662 answers as messages."""

    def test_claims_of_a_root_and_an_offline_link(self) -> None:
        """Every claim arrives; aud is a list; par only on a sub-coupon, pol when set."""
        issuer, holder, delegate = (
            SigningKey.generate(),
            SigningKey.generate(),
            SigningKey.generate(),
        )
        root = mint(
            issuer,
            issuer="https://authority.example",
            subject="alice",
            audience="orders",
            tenant="acme",
            resource="orders/**",
            actions=["write", "read"],
            purpose="billing",
            binding=TokenBinding(jkt=holder.public.thumbprint),
            policy="builtin-1",
        )
        child = attenuate(
            root,
            holder,
            delegate=TokenBinding(jkt=delegate.public.thumbprint),
            subject="bob",
            actions=["read"],
        )
        root_claims = parse_chain(root, max_size=8192, max_depth=4)[-1].claims
        message = claims_message(root_claims)
        expected = root_claims.to_dict()
        assert (message.ver, message.iss, message.sub, list(message.aud)) == (
            expected["ver"],
            expected["iss"],
            "alice",
            ["orders"],
        )
        assert (message.iat, message.nbf, message.exp) == (
            expected["iat"],
            expected["nbf"],
            expected["exp"],
        )
        assert (list(message.act), message.cnf.jkt, message.pol) == (
            ["read", "write"],
            holder.public.thumbprint,
            "builtin-1",
        )
        assert not message.HasField("par")
        link_claims = parse_chain(child, max_size=8192, max_depth=4)[-1].claims
        link = claims_message(link_claims)
        assert (link.par.jti, link.dep, link.sub) == (root_claims.jti, 1, "bob")
        assert link.par.hsh == link_claims.to_dict()["par"]["hsh"]
        assert link.HasField("pol") == ("pol" in link_claims.to_dict())

    def test_inactive_introspection_is_bare(self) -> None:
        """RFC 7662 §2.2: an inactive token tells nothing else."""
        assert introspection({"active": False, "sub": "x"}) == IntrospectResponse(active=False)

    def test_empty_revocation_list(self) -> None:
        """No records: cursor 0."""
        assert revoke_response([]).cursor == 0
