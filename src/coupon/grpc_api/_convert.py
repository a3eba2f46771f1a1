"""Messages in and out: protobuf requests become the REST models, answers become messages.

Requests are validated by the very pydantic models of the REST API (``_models.py``), so a value
REST refuses with ``CPN-REQ-009`` is refused here with the same code. proto3 cannot tell an
unset string from an empty one: a required string left empty is sent as ``""`` (refused by
the model's ``min_length``), and ``optional`` fields are passed only when present. An empty
repeated field of ``AttenuateRequest`` means "keep the parent's".
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from google.protobuf.message import Message
from pydantic import BaseModel, ValidationError

from coupon import codes
from coupon.authority import _inputs
from coupon.authority._auth import Principal
from coupon.authority._models import (
    AttenuateRequest,
    IssueRequest,
    RevokeRequest,
    VerifyRequest,
)
from coupon.authority._service import Context, DelegateInput, Issued, IssueInput, VerifyInput
from coupon.errors import CouponError, InvalidRequest
from coupon.storage.base import RevocationRecord
from coupon.token import Claims, Verified

from ._gen import authority_pb2 as pb

__all__ = [
    "MAX_INTROSPECT_TOKEN",
    "claims_message",
    "coupon_response",
    "delegate_input",
    "introspect_token",
    "introspection",
    "issue_input",
    "revoke_request",
    "revoke_response",
    "verify_allowed",
    "verify_denied",
    "verify_input",
]

_M = TypeVar("_M", bound=BaseModel)
#: The same cap as the REST introspection body.
MAX_INTROSPECT_TOKEN = 32_768


def _validate(model: type[_M], data: dict[str, Any]) -> _M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        where = ".".join(str(p) for p in errors[0]["loc"]) if errors else ""
        message = errors[0]["msg"] if errors else "invalid"
        raise InvalidRequest(codes.REQUEST_BODY, f"{where}: {message}"[:300]) from None


def _present(msg: Message, *names: str) -> dict[str, Any]:
    return {name: getattr(msg, name) for name in names if msg.HasField(name)}


def _binding_in(msg: pb.IssueRequest | pb.AttenuateRequest) -> dict[str, Any]:
    if not msg.HasField("binding"):
        return {}
    which = msg.binding.WhichOneof("key")
    return {"binding": {} if which is None else {which: getattr(msg.binding, which)}}


def issue_input(msg: pb.IssueRequest, caller: Principal | None = None) -> IssueInput:
    """The service's input for ``Issue`` (``CPN-REQ-009`` when a field is out of bounds).

    ``caller`` resolves a ``x5t_s256: "self"`` binding to the caller's certificate.
    """
    body = _validate(
        IssueRequest,
        {
            "subject": msg.subject,
            "audience": list(msg.audience),
            "tenant": msg.tenant,
            "resource": msg.resource,
            "actions": list(msg.actions),
            "purpose": msg.purpose,
            **_present(msg, "ttl"),
            **_binding_in(msg),
        },
    )
    return _inputs.issue_input(body, caller)


def delegate_input(msg: pb.AttenuateRequest) -> DelegateInput:
    """The service's input for ``Attenuate``; empty lists keep the parent's values."""
    data: dict[str, Any] = {
        "subject": msg.subject,
        **_present(msg, "resource", "purpose", "ttl"),
        **_binding_in(msg),
    }
    if msg.audience:
        data["audience"] = list(msg.audience)
    if msg.actions:
        data["actions"] = list(msg.actions)
    body = _validate(AttenuateRequest, data)
    return _inputs.delegate_input(body)


def verify_input(msg: pb.VerifyRequest) -> VerifyInput:
    """The service's input for ``Verify`` (a proof needs ``htm`` and ``htu``: ``CPN-REQ-007``)."""
    body = _validate(
        VerifyRequest,
        {
            "coupon": msg.coupon,
            "audience": msg.audience,
            **_present(
                msg,
                "resource",
                "action",
                "purpose",
                "tenant",
                "dpop",
                "htm",
                "htu",
                "certificate_thumbprint",
            ),
        },
    )
    spec = body.request()
    if body.coupon is None:  # the REST model takes other tokens too; this RPC carries coupons
        raise InvalidRequest(codes.REQUEST_BODY, "coupon: Field required")
    return VerifyInput(body.coupon, spec)


def introspect_token(msg: pb.IntrospectRequest) -> str:
    """The token to introspect, bounded as REST bounds its form body."""
    if len(msg.token) > MAX_INTROSPECT_TOKEN:
        raise InvalidRequest(codes.REQUEST_BODY, "token too large")
    return msg.token


def revoke_request(msg: pb.RevokeRequest) -> RevokeRequest:
    """The validated ``Revoke`` request (an unknown kind is ``CPN-REQ-009``)."""
    return _validate(RevokeRequest, {"kind": msg.kind, "value": msg.value, "reason": msg.reason})


# -- answers ----------------------------------------------------------------------------------


def _binding_out(cnf: Mapping[str, Any]) -> pb.Binding:
    if "jkt" in cnf:
        return pb.Binding(jkt=cnf["jkt"])
    return pb.Binding(x5t_s256=cnf.get("x5t#S256", ""))


def claims_message(claims: Claims) -> pb.Claims:
    """The claims of a coupon as a message (``aud`` always a list)."""
    d = claims.to_dict()
    aud = d["aud"]
    out = pb.Claims(
        ver=d["ver"],
        iss=d["iss"],
        sub=d["sub"],
        aud=[aud] if isinstance(aud, str) else aud,
        iat=d["iat"],
        nbf=d["nbf"],
        exp=d["exp"],
        jti=d["jti"],
        tid=d["tid"],
        res=d["res"],
        act=d["act"],
        pur=d["pur"],
        cnf=_binding_out(d["cnf"]),
        lin=d["lin"],
        dep=d["dep"],
    )
    if "par" in d:
        out.par.CopyFrom(pb.Parent(jti=d["par"]["jti"], hsh=d["par"]["hsh"]))
    if "pol" in d:
        out.pol = d["pol"]
    return out


def coupon_response(issued: Issued, ctx: Context) -> pb.CouponResponse:
    """What ``Issue`` and ``Attenuate`` answer (REST's ``CouponResponse``)."""
    c = issued.claims
    out = pb.CouponResponse(
        coupon=issued.token,
        token_type="DPoP" if c.cnf.jkt else "mTLS",
        jti=c.jti,
        lineage=c.lin,
        kid=issued.kid,
        issued_at=c.iat,
        expires_at=c.exp,
        expires_in=max(0, c.exp - int(time.time())),
        claims=claims_message(c),
        trace_id=ctx.trace_id,
    )
    if c.pol is not None:
        out.policy_version = c.pol
    return out


def verify_allowed(verified: Verified, ctx: Context) -> pb.VerifyResponse:
    """An allow decision, with the leaf's claims and the whole chain."""
    return pb.VerifyResponse(
        allow=True,
        claims=claims_message(verified.claims),
        chain=[claims_message(c) for c in verified.chain],
        kid=verified.kid,
        trace_id=ctx.trace_id,
        timings_us=verified.timings,
    )


def verify_denied(exc: CouponError, ctx: Context) -> pb.VerifyResponse:
    """A deny decision: the code, title, reason and step of ``exc``."""
    out = pb.VerifyResponse(
        allow=False,
        code=exc.code.code,
        title=exc.code.title,
        reason=exc.reason,
        trace_id=ctx.trace_id,
        timings_us=exc.timings or {},
    )
    if exc.step is not None:
        out.step = exc.step
    return out


def introspection(answer: Mapping[str, Any]) -> pb.IntrospectResponse:
    """RFC 7662's answer as a message (only ``active`` when inactive)."""
    if not answer.get("active"):
        return pb.IntrospectResponse(active=False)
    out = pb.IntrospectResponse(
        active=True,
        scope=answer["scope"],
        client_id=answer["client_id"],
        token_type=answer["token_type"],
        exp=answer["exp"],
        iat=answer["iat"],
        nbf=answer["nbf"],
        sub=answer["sub"],
        aud=answer["aud"],
        iss=answer["iss"],
        jti=answer["jti"],
        cnf=_binding_out(answer["cnf"]),
        tid=answer["tid"],
        res=answer["res"],
        act=answer["act"],
        pur=answer["pur"],
        lin=answer["lin"],
        dep=answer["dep"],
    )
    if answer.get("pol") is not None:
        out.pol = answer["pol"]
    return out


def revoke_response(records: Iterable[RevocationRecord]) -> pb.RevokeResponse:
    """What was revoked, and the feed cursor after it."""
    revocations = [
        pb.Revocation(
            seq=r.seq,
            kind=r.kind,
            value=r.value,
            reason=r.reason,
            actor=r.actor,
            revoked_at=r.revoked_at,
        )
        for r in records
    ]
    return pb.RevokeResponse(
        revocations=revocations, cursor=max((r.seq for r in revocations), default=0)
    )
