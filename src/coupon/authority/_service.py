"""The Authority's decisions: issue, attenuate, verify, introspect, revoke.

HTTP-free: routes translate bodies into these calls and errors into problems. Every decision
that changes state is committed together with its signed audit event before it is answered.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

from coupon import codes
from coupon.errors import (
    CouponError,
    Forbidden,
    InvalidProof,
    InvalidRequest,
    NotFound,
    PolicyDenied,
)
from coupon.policy import PolicyCaller, PolicyDecision, PolicyInput, PolicyParent, PolicyRequest
from coupon.storage.base import RevocationKind, RevocationRecord
from coupon.token import (
    Binding,
    Claims,
    CouponBuilder,
    Request,
    Verified,
    new_jti,
    parse_chain,
)

from ._audit import AuditEvent
from ._auth import Principal, require_role
from ._issued import issue_event, issued_record
from ._legacy_service import LegacyService
from ._mtls import authorize_binding
from ._runtime import Runtime
from ._sessions import Sessions
from ._signing_backend import sign_coupon

__all__ = ["Authority", "IssueInput", "Issued", "VerifyInput"]


@dataclass(frozen=True, slots=True)
class IssueInput:
    """A request for a coupon, root or sub-coupon, after HTTP parsing."""

    subject: str
    audience: tuple[str, ...]
    tenant: str
    resource: str
    actions: tuple[str, ...]
    purpose: str
    ttl: int | None
    binding: Binding


@dataclass(frozen=True, slots=True)
class DelegateInput:
    """A request for a sub-coupon; None keeps the parent's value."""

    subject: str
    binding: Binding
    audience: tuple[str, ...] | None = None
    resource: str | None = None
    actions: tuple[str, ...] | None = None
    purpose: str | None = None
    ttl: int | None = None


@dataclass(frozen=True, slots=True)
class Issued:
    """A freshly issued coupon."""

    token: str
    claims: Claims
    kid: str


@dataclass(frozen=True, slots=True)
class VerifyInput:
    """A verification request of a relying service."""

    coupon: str
    request: Request


@dataclass(frozen=True, slots=True)
class Context:
    """Correlation ids of the HTTP request being served."""

    trace_id: str = ""
    request_id: str = ""


def _binding_kind(binding: Binding) -> str:
    return "jkt" if binding.jkt is not None else "x5t#S256"


class Authority:
    """The Authority's operations over one :class:`Runtime`."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        #: Legacy JWTs (dual-auth migration) and end-user sessions, over this Authority.
        self.legacy = LegacyService(self)
        self.sessions = Sessions(self)

    # -- issue -----------------------------------------------------------------------------------

    async def issue(self, caller: Principal, req: IssueInput, ctx: Context) -> Issued:
        """Issue a root coupon if the caller's role, tenant and the policy allow it."""
        require_role(caller, "issuer")
        self._check_tenant(caller, req.tenant)
        self._check_subject(caller, req.subject)
        authorize_binding(caller, req.binding)  # another's certificate needs admin (mtls.md)
        decision = await self._decide(caller, req, None, ctx, action="coupon.issue")
        builder = self._builder(req, decision).jti(jti := new_jti()).lineage(jti)
        return await self._sign_and_record(builder, caller, req, decision, ctx, "coupon.issue")

    async def attenuate(
        self, parent_token: str, proof: str | None, htu: str, req: DelegateInput, ctx: Context
    ) -> Issued:
        """Issue a sub-coupon of ``parent_token`` to the holder who proves possession of it.

        The parent (a coupon or an offline chain) must verify now, unrevoked, with a DPoP proof
        (or be x5t-bound, which this REST call cannot prove, so it is refused). Scope the
        request leaves out is the parent's.
        """
        links = parse_chain(
            parent_token, max_size=self.rt.max_token, max_depth=self.rt.settings.max_depth
        )
        leaf = links[-1].claims
        if leaf.cnf.jkt is None:
            raise InvalidProof(
                codes.POP_CERT_BINDING, "certificate-bound coupons are attenuated over mTLS only"
            )
        verified = await self.rt.verify(
            parent_token,
            Request(audience=leaf.aud[0], method="POST", uri=htu, dpop=proof),
        )
        parent = verified.claims
        if parent.dep + 1 > self.rt.settings.max_depth:
            raise InvalidRequest(codes.REQUEST_WIDENS, f"depth {parent.dep + 1} exceeds the limit")
        wanted = IssueInput(
            subject=req.subject,
            audience=req.audience or parent.aud,
            tenant=parent.tid,
            resource=req.resource or str(parent.res),
            actions=req.actions or tuple(sorted(parent.act)),
            purpose=req.purpose or parent.pur,
            ttl=req.ttl,
            binding=req.binding,
        )
        holder = Principal(
            id=f"holder:{parent.sub}", roles=frozenset(), tenant=parent.tid, method="dpop"
        )
        parent_info = PolicyParent(
            jti=parent.jti,
            resource=str(parent.res),
            actions=tuple(sorted(parent.act)),
            purpose=parent.pur,
            depth=parent.dep,
        )
        decision = await self._decide(holder, wanted, parent_info, ctx, action="coupon.attenuate")
        now = int(time.time())
        ttl = min(decision.ttl, max(parent.exp - now, 1))
        builder = (
            CouponBuilder()
            .child_of(parent_token)
            .issuer(self.rt.settings.issuer_id)
            .subject(wanted.subject)
            .audience(*wanted.audience)
            .resource(wanted.resource)
            .actions(*wanted.actions)
            .purpose(wanted.purpose)
            .bind(wanted.binding)
            .lifetime(now=now, ttl=ttl)
            .expires(min(now + ttl, parent.exp))
            .jti(new_jti())
        )
        return await self._sign_and_record(
            builder, holder, wanted, decision, ctx, "coupon.attenuate"
        )

    def _check_subject(self, caller: Principal, subject: str) -> None:
        # A subject-bound caller (an OIDC person) gets coupons for themself only (ADR 0011).
        if caller.subject is not None and "admin" not in caller.roles and subject != caller.subject:
            raise Forbidden(codes.OIDC_SUBJECT, "the coupon subject must be the caller's own sub")

    def _check_tenant(self, caller: Principal, tenant: str) -> None:
        if caller.tenant is not None and caller.tenant != tenant:
            raise Forbidden(codes.AUTH_TENANT, f"caller is bound to tenant {caller.tenant!r}")

    async def _decide(
        self,
        caller: Principal,
        req: IssueInput,
        parent: PolicyParent | None,
        ctx: Context,
        *,
        action: str,
    ) -> PolicyDecision:
        ttl = req.ttl or self.rt.settings.default_ttl
        policy_input = PolicyInput(
            caller=PolicyCaller(
                id=caller.id, roles=tuple(sorted(caller.roles)), tenant=caller.tenant
            ),
            request=PolicyRequest(
                subject=req.subject,
                audience=req.audience,
                tenant=req.tenant,
                resource=req.resource,
                actions=req.actions,
                purpose=req.purpose,
                ttl=min(ttl, self.rt.settings.max_ttl),
                binding=_binding_kind(req.binding),  # type: ignore[arg-type]
                parent=parent,
            ),
            now=int(time.time()),
        )
        decision = await self.rt.decide(policy_input)
        if not decision.allow:
            await self.audit(
                AuditEvent(
                    action=action,
                    result="deny",
                    actor=caller.audit(),
                    target={"tenant": req.tenant, "resource": req.resource},
                    reason=decision.reason,
                    code=codes.POLICY_DENIED.code,
                    policy_version=decision.version,
                    subject=req.subject,
                    personal={"subject": req.subject},
                ),
                ctx,
            )
            raise PolicyDenied(codes.POLICY_DENIED, decision.reason)
        return decision

    def _builder(self, req: IssueInput, decision: PolicyDecision) -> CouponBuilder:
        return (
            CouponBuilder()
            .issuer(self.rt.settings.issuer_id)
            .subject(req.subject)
            .audience(*req.audience)
            .tenant(req.tenant)
            .resource(req.resource)
            .actions(*req.actions)
            .purpose(req.purpose)
            .bind(req.binding)
            .lifetime(now=int(time.time()), ttl=decision.ttl)
            .policy(decision.version)
        )

    async def _sign_and_record(
        self,
        builder: CouponBuilder,
        caller: Principal,
        req: IssueInput,
        decision: PolicyDecision,
        ctx: Context,
        action: str,
    ) -> Issued:
        signer = self.rt.keyring.signer
        claims = builder.build()
        token = await sign_coupon(builder, signer)  # off the event loop for an HSM
        record = issued_record(claims, signer.kid, caller)
        event = issue_event(action, claims, signer.kid, caller, decision, ctx)
        await self.rt.store.add_coupon(record, audit=self.rt.audit_sink.prepare(event))
        self.rt.audit_sink.stored()
        self.rt.metrics.decisions.labels(action, "ok", "").inc()
        self.rt.metrics.audit_events.labels(action).inc()
        return Issued(token, claims, signer.kid)

    # -- verify and introspect -------------------------------------------------------------------

    async def verify(self, caller: Principal, req: VerifyInput, ctx: Context) -> Verified:
        """Verify for a relying service; a denial is audited and raised."""
        require_role(caller, "verifier", "issuer")
        try:
            verified = await self.rt.verify(req.coupon, req.request, shed=True)
        except CouponError as exc:
            self.rt.metrics.decisions.labels("coupon.verify", "deny", exc.code.code).inc()
            self.rt.metrics.count_verify(
                req.request.audience, "coupon", allow=False, code=exc.code.code
            )
            await self.audit(
                AuditEvent(
                    action="coupon.verify",
                    result="deny",
                    actor=caller.audit(),
                    target={
                        "audience": req.request.audience,
                        "resource": req.request.resource,
                        "action": req.request.action,
                    },
                    reason=exc.reason,
                    code=exc.code.code,
                ),
                ctx,
            )
            raise
        self.rt.metrics.decisions.labels("coupon.verify", "allow", "").inc()
        self.rt.metrics.count_verify(req.request.audience, "coupon", allow=True)
        return verified

    async def introspect(self, caller: Principal, token: str) -> dict[str, Any]:
        """RFC 7662: ``{"active": false}`` for anything that is not a valid coupon now."""
        require_role(caller, "verifier", "issuer", "auditor")
        try:
            verified = self.rt.verifier().introspect(token)
        except CouponError:
            return {"active": False}
        c = verified.claims
        return {
            "active": True,
            "scope": " ".join(sorted(c.act)),
            "client_id": c.sub,
            "token_type": "DPoP" if c.cnf.jkt else "mTLS",
            "exp": c.exp,
            "iat": c.iat,
            "nbf": c.nbf,
            "sub": c.sub,
            "aud": list(c.aud),
            "iss": verified.chain[0].iss,
            "jti": c.jti,
            "cnf": c.cnf.to_cnf(),
            "tid": c.tid,
            "res": str(c.res),
            "act": sorted(c.act),
            "pur": c.pur,
            "lin": c.lin,
            "dep": c.dep,
            "pol": c.pol,
        }

    # -- revoke ----------------------------------------------------------------------------------

    async def revoke(
        self, caller: Principal, kind: RevocationKind, value: str, reason: str, ctx: Context
    ) -> list[RevocationRecord]:
        """Revoke durably (with its audit event), enforce locally, then fan out."""
        require_role(caller, "issuer")
        await self._check_revoke_scope(caller, kind, value)
        now = int(time.time())
        records = [
            RevocationRecord(kind=kind, value=value, reason=reason, actor=caller.id, revoked_at=now)
        ]
        if kind == "jti":
            # Sub-coupons the Authority issued below it are separate tokens: name them too.
            # (Offline links carry the parent's jti in their chain and are caught anyway.)
            for child in await self.rt.store.coupon_descendants(value):
                records.append(
                    RevocationRecord(
                        kind="jti",
                        value=child,
                        reason=f"parent {value} revoked: {reason}",
                        actor=caller.id,
                        revoked_at=now,
                    )
                )
        event = AuditEvent(
            action="revocation.create",
            result="ok",
            actor=caller.audit(),
            target={"kind": kind, "value": value, "count": len(records)},
            reason=reason,
            trace_id=ctx.trace_id,
            request_id=ctx.request_id,
            lineage=value if kind == "lineage" else None,
        )
        stored = await self.rt.revoker.commit(records, audit=self.rt.audit_sink.prepare(event))
        self.rt.audit_sink.stored()
        self.rt.metrics.revocations.labels(kind).inc(len(stored))
        self.rt.metrics.audit_events.labels("revocation.create").inc()
        return stored

    async def _check_revoke_scope(self, caller: Principal, kind: str, value: str) -> None:
        if "admin" in caller.roles or caller.tenant is None:
            return
        if kind == "tenant":
            self._check_tenant(caller, value)
            return
        if kind in ("subject", "kid"):
            raise Forbidden(codes.AUTH_FORBIDDEN, f"revoking by {kind} needs a cross-tenant caller")
        record = await self.rt.store.get_coupon(value) if kind == "jti" else None
        if kind == "lineage":
            record = await self.rt.store.get_coupon(value)  # a root's jti is its lineage id
        if record is None:
            raise NotFound(codes.NOT_FOUND, f"no coupon {value!r} issued here")
        self._check_tenant(caller, record.tenant)

    # -- audit -----------------------------------------------------------------------------------

    async def audit(self, event: AuditEvent, ctx: Context) -> None:
        """Record an event that has no other write to ride with."""
        stamped = replace(
            event,
            trace_id=event.trace_id or ctx.trace_id,
            request_id=event.request_id or ctx.request_id,
        )
        await self.rt.audit_sink.emit(stamped)
        self.rt.metrics.audit_events.labels(event.action).inc()
