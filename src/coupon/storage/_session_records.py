"""The storage port for end-user sessions: records and the methods every adapter implements.

A session is one user's login on one device (a DPoP key, ``jkt``). It holds one live refresh
token at a time; spent tokens are kept (hashed) until the session ends, so a reused one is
recognised. Every access coupon of a session has the session id as its lineage, so one
``lineage`` revocation takes back the whole family.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # base.py re-exports this module: its records are only annotations here
    from .base import AuditRecord, CouponRecord, RevocationRecord

__all__ = ["RefreshTokenRecord", "SessionRecord", "SessionStore"]


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """One end-user session (never a token: refresh tokens are stored as hashes only)."""

    session_id: str
    tenant: str
    subject: str
    jkt: str
    audience: list[str]
    resource: str
    actions: list[str]
    purpose: str
    caller: str
    caller_tenant: str | None
    created_at: int
    last_used_at: int
    expires_at: int
    idle_timeout: int
    #: Nanoseconds since the epoch at the start: orders sessions started in one second.
    created_ns: int = 0
    generation: int = 0
    revoked_at: int | None = None
    revoked_reason: str | None = None

    def expired(self, now: int) -> str | None:
        """Why the session has expired at ``now`` (absolute or idle), or None."""
        if now >= self.expires_at:
            return "absolute lifetime reached"
        if now >= self.last_used_at + self.idle_timeout:
            return "idle timeout reached"
        return None


@dataclass(frozen=True, slots=True)
class RefreshTokenRecord:
    """One refresh token of a session, by the SHA-256 of its secret."""

    token_hash: bytes
    session_id: str
    generation: int
    issued_at: int
    spent_at: int | None = None


class SessionStore(Protocol):
    """The session methods of the storage port. All are coroutines; each is one transaction."""

    async def create_session(
        self,
        record: SessionRecord,
        token: RefreshTokenRecord,
        *,
        max_active: int,
        actor: str,
        coupon: CouponRecord,
        audit: Callable[[list[str]], AuditRecord],
    ) -> list[RevocationRecord]:
        """Store a new session, its first refresh token, its first coupon and the audit event.

        With more than ``max_active`` live (unrevoked, unexpired) sessions of the same tenant
        and subject, the oldest are revoked in the same transaction, each by a ``lineage``
        revocation by ``actor``; users are serialised, so concurrent starts cannot exceed the
        limit. ``audit(evicted_session_ids)`` makes the audit event. Returns the stored
        revocations of the evicted sessions.
        """
        ...

    async def get_session(self, session_id: str) -> SessionRecord | None: ...

    async def get_refresh_token(
        self, token_hash: bytes
    ) -> tuple[RefreshTokenRecord, SessionRecord] | None:
        """The refresh token with this hash and its session, or None if unknown."""
        ...

    async def rotate_refresh_token(
        self,
        old_hash: bytes,
        new: RefreshTokenRecord,
        *,
        now: int,
        coupon: CouponRecord,
        audit: AuditRecord,
    ) -> bool:
        """Spend ``old_hash`` and store ``new``, the new coupon and the audit event, atomically.

        Returns False, writing nothing, when the old token was already spent (by a concurrent
        rotation, or before): exactly one of several concurrent rotations wins.
        """
        ...

    async def revoke_session(
        self, session_id: str, *, revocation: RevocationRecord, audit: AuditRecord
    ) -> RevocationRecord | None:
        """Mark the session revoked and store its lineage revocation and the audit event.

        Returns the stored revocation, or None (nothing written) if it was already revoked.
        """
        ...
