"""The access coupon of a session: policy-checked, signed, recorded with its audit event.

Like a root coupon of ``POST /v1/coupons``, except that its lineage is the session id (so one
``lineage`` revocation takes back every coupon of the session) and that the caller stores the
record together with the session change it belongs to, in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from coupon.storage.base import CouponRecord, SessionRecord
from coupon.token import Binding, Claims, new_jti

from ._audit import AuditEvent
from ._auth import Principal
from ._issued import issue_event, issued_record
from ._signing_backend import sign_coupon

if TYPE_CHECKING:
    from ._service import Authority, Context

__all__ = ["SignedCoupon", "sign_session_coupon"]


@dataclass(frozen=True, slots=True)
class SignedCoupon:
    """A signed access coupon and what to store with it."""

    token: str
    claims: Claims
    kid: str
    record: CouponRecord
    event: AuditEvent


async def sign_session_coupon(
    authority: Authority, caller: Principal, session: SessionRecord, ctx: Context, action: str
) -> SignedCoupon:
    """Decide (policy), build and sign the session's next access coupon; store nothing.

    Raises:
        PolicyDenied: the policy refused (audited).
    """
    from ._service import IssueInput

    rt = authority.rt
    req = IssueInput(
        subject=session.subject,
        audience=tuple(session.audience),
        tenant=session.tenant,
        resource=session.resource,
        actions=tuple(session.actions),
        purpose=session.purpose,
        ttl=rt.settings.session_access_ttl,
        binding=Binding(jkt=session.jkt),
    )
    decision = await authority._decide(caller, req, None, ctx, action=action)
    builder = authority._builder(req, decision).jti(new_jti()).lineage(session.session_id)
    signer = rt.keyring.signer
    claims = builder.build()
    token = await sign_coupon(builder, signer)  # off the event loop for an HSM
    record = issued_record(claims, signer.kid, caller)
    event = issue_event(
        action, claims, signer.kid, caller, decision, ctx, also={"session_id": session.session_id}
    )
    rt.metrics.audit_events.labels(action).inc()
    return SignedCoupon(token, claims, signer.kid, record, event)
