"""The legacy branch of ``POST /v1/coupons/verify``: a decision shaped like the coupon one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi.responses import JSONResponse

from coupon.errors import CouponError

from ._legacy import LegacyRequest

if TYPE_CHECKING:
    from ._auth import Principal
    from ._models import VerifyRequest
    from ._service import Authority, Context

__all__ = ["legacy_decision"]


async def legacy_decision(
    authority: Authority, caller: Principal, body: VerifyRequest, ctx: Context
) -> JSONResponse:
    """Verify ``body.legacy_token``; a denial is an answer (``allow`` false), except the
    caller's own errors (``CPN-AUTH``, ``CPN-REQ``) and 429/503, which are problems."""
    assert body.legacy_token is not None
    request = LegacyRequest(
        audience=body.audience,
        resource=body.resource,
        action=body.action,
        purpose=body.purpose,
        tenant=body.tenant,
    )
    try:
        verified = await authority.legacy.verify(caller, body.legacy_token, request, ctx)
    except CouponError as exc:
        if exc.code.status in (429, 503) or exc.code.code.startswith(("CPN-AUTH", "CPN-REQ")):
            raise
        return JSONResponse(
            {
                "allow": False,
                "legacy": True,
                "code": exc.code.code,
                "title": exc.code.title,
                "reason": exc.reason,
                "step": exc.step,
                "trace_id": ctx.trace_id,
                "timings_us": {},
            }
        )
    return JSONResponse(
        {
            "allow": True,
            "legacy": True,
            "claims": verified.claims(),
            "chain": [],
            "kid": verified.kid,
            "trace_id": ctx.trace_id,
            "timings_us": {},
        }
    )
