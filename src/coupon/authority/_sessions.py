"""End-user sessions: start, refresh with rotation and reuse detection, logout.

A service with the issuer role starts a session for a user on a device (a DPoP key): the
answer is a short-lived access coupon bound to that key and an opaque refresh token. Every
refresh spends the token presented and returns a new one; presenting a spent token again,
with a proof by the device key, is reuse: the whole session is revoked (one ``lineage``
revocation: every access coupon of a session has the session id as its lineage). HTTP-free,
like :class:`~coupon.authority._service.Authority`; see ``docs/sessions.md``.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from coupon import codes
from coupon.errors import AuthenticationFailed, InvalidProof, NotFound, ProofReplayed
from coupon.observability import get_logger, tracer_provider
from coupon.storage.base import RefreshTokenRecord, RevocationRecord, SessionRecord
from coupon.token import verify_dpop_proof

from ._audit import AuditEvent
from ._auth import Principal, require_role
from ._session_coupons import SignedCoupon, sign_session_coupon

if TYPE_CHECKING:
    from ._service import Authority, Context

__all__ = ["SessionStart", "SessionTokens", "Sessions", "refresh_hash"]

REFRESH_PREFIX = "cpr_"
_log = get_logger("coupon.authority.sessions")
_TRACER = tracer_provider().get_tracer("coupon.authority.sessions")


def refresh_hash(token: str) -> bytes:
    """How a refresh token is stored: SHA-256 (it carries 256 random bits)."""
    return hashlib.sha256(token.encode()).digest()


def _new_refresh_token() -> tuple[str, bytes]:
    token = REFRESH_PREFIX + secrets.token_urlsafe(32)
    return token, refresh_hash(token)


@dataclass(frozen=True, slots=True)
class SessionStart:
    """A request to start a session, after HTTP parsing."""

    subject: str
    tenant: str
    audience: tuple[str, ...]
    resource: str
    actions: tuple[str, ...]
    purpose: str
    jkt: str


@dataclass(frozen=True, slots=True)
class SessionTokens:
    """What a start or a refresh answers: the access coupon and the next refresh token."""

    session: SessionRecord
    access: SignedCoupon
    refresh_token: str

    @property
    def idle_expires_at(self) -> int:
        """When the refresh token lapses unless used."""
        s = self.session
        return min(s.expires_at, s.last_used_at + s.idle_timeout)


class Sessions:
    """Session operations over one :class:`Authority` (its runtime, policy and audit)."""

    def __init__(self, authority: Authority) -> None:
        self.authority = authority
        self.rt = authority.rt

    # -- start -----------------------------------------------------------------------------------

    async def start(self, caller: Principal, req: SessionStart, ctx: Context) -> SessionTokens:
        """Start a session (role issuer); beyond the per-user limit the oldest is evicted."""
        require_role(caller, "issuer")
        self.authority._check_tenant(caller, req.tenant)
        self.authority._check_subject(caller, req.subject)  # an OIDC person: their own only
        s = self.rt.settings
        started = time.time_ns()
        now = started // 1_000_000_000
        session = SessionRecord(
            session_id="ses_" + secrets.token_urlsafe(24),
            tenant=req.tenant,
            subject=req.subject,
            jkt=req.jkt,
            audience=list(req.audience),
            resource=req.resource,
            actions=sorted(req.actions),
            purpose=req.purpose,
            caller=caller.id,
            caller_tenant=caller.tenant,
            created_at=now,
            last_used_at=now,
            expires_at=now + s.session_lifetime,
            idle_timeout=s.session_idle_timeout,
            created_ns=started,
        )
        with _TRACER.start_as_current_span("coupon.session.start"):
            signed = await sign_session_coupon(
                self.authority, caller, session, ctx, "session.start"
            )
            refresh, token_hash = _new_refresh_token()
            sink = self.rt.audit_sink
            evicted = await self.rt.store.create_session(
                session,
                RefreshTokenRecord(
                    token_hash=token_hash,
                    session_id=session.session_id,
                    generation=0,
                    issued_at=now,
                ),
                max_active=s.session_max_per_user,
                actor=caller.id,
                coupon=signed.record,
                audit=lambda ids: sink.prepare(
                    replace(signed.event, target={**signed.event.target, "evicted": ids})
                ),
            )
        sink.stored()
        await self._enforce(evicted)
        self._count("session.start", "ok")
        _log.info("session_started", session=session.session_id, evicted=len(evicted))
        return SessionTokens(session, signed, refresh)

    # -- refresh ---------------------------------------------------------------------------------

    async def refresh(
        self, refresh_token: str, proof: str | None, htu: str, ctx: Context
    ) -> SessionTokens:
        """Rotate: spend ``refresh_token``, answer a new coupon and a new refresh token.

        Raises:
            AuthenticationFailed: ``CPN-SESS-001`` unknown token, ``-002`` reuse (the session
                is now revoked), ``-003`` revoked session, ``-004`` expired session.
            InvalidProof: no or a bad DPoP proof, or ``CPN-SESS-005`` another key's proof.
        """
        with _TRACER.start_as_current_span("coupon.session.refresh") as span:
            token, session = await self._holder(refresh_token, proof, htu, ctx, "session.refresh")
            span.set_attribute("coupon.lineage", session.session_id)
            now = int(time.time())
            if session.revoked_at is not None:
                raise self._deny(codes.SESSION_REVOKED, f"session {session.revoked_reason}")
            if token.spent_at is not None:
                await self._reuse(session, token, ctx)
            expired = session.expired(now)
            if expired is not None:
                raise self._deny(codes.SESSION_EXPIRED, expired)
            caller = Principal(
                id=session.caller,
                roles=frozenset({"issuer"}),
                tenant=session.caller_tenant,
                method="session",
            )
            signed = await sign_session_coupon(
                self.authority, caller, session, ctx, "session.refresh"
            )
            refresh, new_hash = _new_refresh_token()
            new = RefreshTokenRecord(
                token_hash=new_hash,
                session_id=session.session_id,
                generation=token.generation + 1,
                issued_at=now,
            )
            won = await self.rt.store.rotate_refresh_token(
                token.token_hash,
                new,
                now=now,
                coupon=signed.record,
                audit=self.rt.audit_sink.prepare(signed.event),
            )
            if not won:  # a concurrent refresh spent it first: that is reuse too
                current = await self.rt.store.get_session(session.session_id)
                if current is None or current.revoked_at is not None:
                    raise self._deny(codes.SESSION_REVOKED, "session revoked meanwhile")
                await self._reuse(session, token, ctx)
        self.rt.audit_sink.stored()
        self._count("session.refresh", "ok")
        updated = replace(session, generation=new.generation, last_used_at=now)
        return SessionTokens(updated, signed, refresh)

    # -- logout ----------------------------------------------------------------------------------

    async def logout(
        self, refresh_token: str, proof: str | None, htu: str, ctx: Context
    ) -> tuple[str, bool]:
        """The user logs out with a token of the session and a proof by its device key.

        Returns the session id and whether this call revoked it (False: it already was).
        """
        _token, session = await self._holder(refresh_token, proof, htu, ctx, "session.logout")
        actor = {"id": f"session:{session.session_id}", "method": "refresh-token"}
        revoked = await self._revoke(session, "logout", actor, "session.logout", ctx)
        return session.session_id, revoked

    async def end(self, caller: Principal, session_id: str, ctx: Context) -> bool:
        """A service (role issuer) ends a session by its id; same answer as :meth:`logout`."""
        require_role(caller, "issuer")
        session = await self.rt.store.get_session(session_id)
        if session is None:
            raise NotFound(codes.NOT_FOUND, f"no session {session_id!r}")
        self.authority._check_tenant(caller, session.tenant)
        return await self._revoke(session, "ended by service", caller.audit(), "session.end", ctx)

    # -- internals -------------------------------------------------------------------------------

    async def _holder(
        self, refresh_token: str, proof: str | None, htu: str, ctx: Context, action: str
    ) -> tuple[RefreshTokenRecord, SessionRecord]:
        """The token and session, once the proof shows the device key (nothing is spent)."""
        found = await self.rt.store.get_refresh_token(refresh_hash(refresh_token))
        if found is None:
            raise self._deny(codes.SESSION_TOKEN, "no such refresh token")
        token, session = found
        if proof is None:
            raise InvalidProof(codes.POP_MISSING, "send a DPoP proof by the device key")
        s = self.rt.settings
        now = time.time()
        checked = verify_dpop_proof(
            proof,
            method="POST",
            uri=htu,
            now=now,
            nonces=self.rt.nonces if s.dpop_nonce_required else None,
            max_age=s.dpop_max_age,
            leeway=s.leeway,
        )
        expires = checked.iat + s.dpop_max_age + s.leeway
        key = f"session:{checked.jkt}:{checked.jti}"
        if not await self.rt.replay.first_use(key, expires_at=expires, now=now):
            raise ProofReplayed(codes.REPLAY, "DPoP proof replayed")
        if checked.jkt != session.jkt:
            # Whoever holds the string without the key proves nothing and spends nothing.
            await self.authority.audit(
                self._event(session, action, "deny", codes.SESSION_DEVICE.code, "wrong key"),
                ctx,
            )
            raise self._deny(codes.SESSION_DEVICE, "the proof is not by the session's key")
        return token, session

    async def _reuse(self, session: SessionRecord, token: RefreshTokenRecord, ctx: Context) -> None:
        """A spent token came back: revoke the session family, audit it, refuse."""
        reason = f"refresh token of generation {token.generation} reused"
        actor = {"id": f"session:{session.session_id}", "method": "refresh-token"}
        await self._revoke(
            session,
            reason,
            actor,
            "session.reuse_detected",
            ctx,
            code=codes.SESSION_REUSED.code,
        )
        _log.warning("session_refresh_reused", session=session.session_id)
        raise self._deny(codes.SESSION_REUSED, reason)

    async def _revoke(
        self,
        session: SessionRecord,
        reason: str,
        actor: Mapping[str, object],
        action: str,
        ctx: Context,
        *,
        code: str | None = None,
    ) -> bool:
        now = int(time.time())
        revocation = RevocationRecord(
            kind="lineage",
            value=session.session_id,
            reason=reason,
            actor=str(actor["id"]),
            revoked_at=now,
        )
        event = replace(
            self._event(session, action, "ok" if code is None else "deny", code, reason),
            actor=dict(actor),
            trace_id=ctx.trace_id,
            request_id=ctx.request_id,
        )
        stored = await self.rt.store.revoke_session(
            session.session_id, revocation=revocation, audit=self.rt.audit_sink.prepare(event)
        )
        if stored is None:
            await self.authority.audit(
                replace(event, target={**event.target, "already": True}), ctx
            )
            return False
        self.rt.audit_sink.stored()
        self.rt.metrics.audit_events.labels(action).inc()
        await self._enforce([stored])
        self._count(action, "ok")
        return True

    async def _enforce(self, stored: list[RevocationRecord]) -> None:
        """Enforce committed revocations here at once and tell every other process."""
        if not stored:
            return
        self.rt.view.apply(stored)
        self.rt.metrics.revocations.labels("lineage").inc(len(stored))
        for record in stored:
            try:
                await self.rt.bus.publish(record)
            except Exception as exc:  # the other processes' next pull catches up
                _log.warning("revocation_publish_failed", seq=record.seq, error=str(exc))

    def _event(
        self, session: SessionRecord, action: str, result: str, code: str | None, reason: str
    ) -> AuditEvent:
        return AuditEvent(
            action=action,
            result=result,
            actor={"id": f"session:{session.session_id}", "method": "refresh-token"},
            target={"session_id": session.session_id, "tenant": session.tenant},
            reason=reason,
            code=code,
            lineage=session.session_id,
            subject=session.subject,
            personal={"subject": session.subject},
        )

    def _deny(self, code: codes.ErrorCode, reason: str) -> AuthenticationFailed | InvalidProof:
        self._count(code.code, "deny")
        if code.kind == "InvalidProof":
            return InvalidProof(code, reason)
        return AuthenticationFailed(code, reason)

    def _count(self, what: str, result: str) -> None:
        if result == "deny":
            self.rt.metrics.decisions.labels("session", "deny", what).inc()
        else:
            self.rt.metrics.decisions.labels(what, "ok", "").inc()
