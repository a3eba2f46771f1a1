"""The Authority's side of legacy verification: roles, metrics, spans and audit of denials."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from coupon.errors import CouponError
from coupon.observability import tracer_provider

from ._audit import AuditEvent
from ._auth import Principal, require_role
from ._legacy import LegacyRequest, LegacyVerified, LegacyVerifier
from ._legacy_jwks import JwksCache

if TYPE_CHECKING:
    from ._service import Authority, Context

__all__ = ["LegacyService"]

_TRACER = tracer_provider().get_tracer("coupon.authority.legacy")


class LegacyService:
    """Verifies legacy JWTs for relying services during the dual-auth migration.

    Args:
        authority: the Authority whose settings, revocation view, metrics and audit it uses.
        jwks: where asymmetric issuers' keys come from (a fresh cache by default).
    """

    def __init__(self, authority: Authority, *, jwks: JwksCache | None = None) -> None:
        self.authority = authority
        rt = authority.rt
        self.verifier = LegacyVerifier(
            rt.settings.legacy_issuers,
            rt.settings.legacy_audiences,
            jwks=jwks or JwksCache(),
            revocations=rt.view,
        )

    async def verify(
        self, caller: Principal, token: str, request: LegacyRequest, ctx: Context
    ) -> LegacyVerified:
        """Verify for a relying service (roles verifier, issuer); a denial is audited, raised."""
        require_role(caller, "verifier", "issuer")
        metrics = self.authority.rt.metrics
        started = time.perf_counter()
        with _TRACER.start_as_current_span("coupon.verify.legacy") as span:
            span.set_attribute("coupon.audience", request.audience)
            try:
                verified = await self.verifier.verify(token, request, now=time.time())
            except CouponError as exc:
                span.set_attribute("coupon.result", "deny")
                span.set_attribute("coupon.code", exc.code.code)
                metrics.verify_seconds.labels("deny").observe(time.perf_counter() - started)
                metrics.count_verify(request.audience, "legacy", allow=False, code=exc.code.code)
                metrics.decisions.labels("legacy.verify", "deny", exc.code.code).inc()
                await self.authority.audit(
                    AuditEvent(
                        action="legacy.verify",
                        result="deny",
                        actor=caller.audit(),
                        target={
                            "audience": request.audience,
                            "resource": request.resource,
                            "action": request.action,
                            "mode": self.verifier.mode(request.audience),
                        },
                        reason=exc.reason,
                        code=exc.code.code,
                    ),
                    ctx,
                )
                raise
            span.set_attribute("coupon.result", "allow")
        metrics.verify_seconds.labels("allow").observe(time.perf_counter() - started)
        metrics.count_verify(request.audience, "legacy", allow=True)
        metrics.decisions.labels("legacy.verify", "allow", "").inc()
        return verified
