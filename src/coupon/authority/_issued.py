"""What the Authority stores for a coupon it signed: its record and its audit event.

One place for both, so a root coupon, a sub-coupon and a session's access coupon are
recorded alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from coupon.policy import PolicyDecision
from coupon.storage.base import CouponRecord
from coupon.token import Claims

from ._audit import AuditEvent
from ._auth import Principal

if TYPE_CHECKING:
    from ._service import Context

__all__ = ["issue_event", "issued_record"]


def issued_record(claims: Claims, kid: str, caller: Principal) -> CouponRecord:
    """The stored record of a coupon with these claims, signed by ``kid`` for ``caller``."""
    return CouponRecord(
        jti=claims.jti,
        lineage=claims.lin,
        parent_jti=claims.par.jti if claims.par else None,
        subject=claims.sub,
        tenant=claims.tid,
        audience=list(claims.aud),
        resource=str(claims.res),
        actions=sorted(claims.act),
        purpose=claims.pur,
        binding=claims.cnf.to_cnf(),
        kid=kid,
        policy_version=claims.pol,
        caller=caller.id,
        issued_at=claims.iat,
        expires_at=claims.exp,
    )


def issue_event(
    action: str,
    claims: Claims,
    kid: str,
    caller: Principal,
    decision: PolicyDecision,
    ctx: Context,
    *,
    also: Mapping[str, Any] | None = None,
) -> AuditEvent:
    """The audit event of issuing a coupon with these claims; ``also`` adds target fields."""
    return AuditEvent(
        action=action,
        result="ok",
        actor=caller.audit(),
        target={
            **(also or {}),
            "jti": claims.jti,
            "tenant": claims.tid,
            "resource": str(claims.res),
            "actions": sorted(claims.act),
            "purpose": claims.pur,
            "expires_at": claims.exp,
            "kid": kid,
        },
        reason=decision.reason,
        trace_id=ctx.trace_id,
        request_id=ctx.request_id,
        lineage=claims.lin,
        policy_version=decision.version,
        # The holder may be a person: kept apart, encrypted under their own key.
        subject=claims.sub,
        personal={"subject": claims.sub},
    )
