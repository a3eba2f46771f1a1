"""The SQL adapter of the session port (:class:`SqlStore` inherits it): SQLite and PostgreSQL.

Race safety rests on two statements. Rotation spends a token with
``UPDATE ... SET spent_at = :now WHERE token_hash = :old AND spent_at IS NULL``: of several
concurrent rotations exactly one changes the row (PostgreSQL re-checks the condition after the
first commits; SQLite runs one writer at a time), and the others find nothing to spend. Starting
a session serialises the user: PostgreSQL takes a transaction advisory lock on the user, SQLite
writes first and so holds the database's single write lock before it counts sessions.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from coupon import codes
from coupon.errors import Conflict, StorageError

from . import _schema as t
from ._session_records import RefreshTokenRecord, SessionRecord
from ._session_schema import session_refresh_tokens, sessions
from .base import AuditRecord, CouponRecord, RevocationRecord

__all__ = ["SessionSqlMixin"]


class _Lost(Exception):
    """Abort a rotation's transaction: someone else changed the session first."""


@asynccontextmanager
async def _mapped(what: str) -> AsyncIterator[None]:
    # The same mapping as coupon.storage.sql: callers only ever see the port's errors.
    try:
        yield
    except IntegrityError as exc:
        raise Conflict(codes.CONFLICT, f"{what}: already exists") from exc
    except (TimeoutError, SQLAlchemyError, OSError) as exc:
        raise StorageError(codes.UNAVAILABLE_STORAGE, f"{what}: {type(exc).__name__}") from exc


def _fields(record: Any) -> dict[str, Any]:
    return {name: getattr(record, name) for name in record.__dataclass_fields__}


def _user_lock(tenant: str, subject: str) -> int:
    """A signed 64-bit advisory lock id for one user."""
    digest = hashlib.sha256(f"coupon-session\0{tenant}\0{subject}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def _insert_audit(conn: AsyncConnection, record: AuditRecord) -> None:
    values = _fields(record)
    del values["seq"]
    await conn.execute(sa.insert(t.audit_events).values(**values))


async def _insert_revocation(conn: AsyncConnection, record: RevocationRecord) -> RevocationRecord:
    values = _fields(record)
    del values["seq"]
    stmt = sa.insert(t.revocations).values(**values).returning(t.revocations.c.seq)
    return RevocationRecord(**{**values, "seq": (await conn.execute(stmt)).scalar_one()})


class SessionSqlMixin:
    """Session methods over ``self._engine`` (see :class:`coupon.storage.base.SessionStore`)."""

    _engine: AsyncEngine
    dialect: str

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
        if max_active < 1:
            raise ValueError("max_active must be at least 1")
        s = sessions.c
        now = record.created_at
        async with _mapped("create session"), self._engine.begin() as conn:
            if self.dialect == "postgresql":
                lock = _user_lock(record.tenant, record.subject)
                await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock})
            await conn.execute(sa.insert(sessions).values(**_fields(record)))
            await conn.execute(sa.insert(session_refresh_tokens).values(**_fields(token)))
            live = (
                sa.select(s.session_id)
                .where(
                    s.tenant == record.tenant,
                    s.subject == record.subject,
                    s.session_id != record.session_id,
                    s.revoked_at.is_(None),
                    s.expires_at > now,
                    s.last_used_at + s.idle_timeout > now,
                )
                .order_by(s.created_ns, s.session_id)
            )
            others = [row.session_id for row in (await conn.execute(live)).all()]
            evicted = others[: max(0, len(others) - (max_active - 1))]
            stored = []
            for session_id in evicted:
                reason = f"evicted by session {record.session_id}: over {max_active} per user"
                await conn.execute(
                    sa.update(sessions)
                    .where(s.session_id == session_id)
                    .values(revoked_at=now, revoked_reason=reason)
                )
                revocation = RevocationRecord(
                    kind="lineage", value=session_id, reason=reason, actor=actor, revoked_at=now
                )
                stored.append(await _insert_revocation(conn, revocation))
            await conn.execute(sa.insert(t.coupons).values(**_fields(coupon)))
            await _insert_audit(conn, audit(evicted))
        return stored

    async def get_session(self, session_id: str) -> SessionRecord | None:
        stmt = sa.select(sessions).where(sessions.c.session_id == session_id)
        async with _mapped("get session"), self._engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
        return SessionRecord(**row._asdict()) if row is not None else None

    async def get_refresh_token(
        self, token_hash: bytes
    ) -> tuple[RefreshTokenRecord, SessionRecord] | None:
        r = session_refresh_tokens.c
        stmt = sa.select(session_refresh_tokens).where(r.token_hash == token_hash)
        async with _mapped("get refresh token"), self._engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
            if row is None:
                return None
            token = RefreshTokenRecord(**row._asdict())
            found = sa.select(sessions).where(sessions.c.session_id == token.session_id)
            session = (await conn.execute(found)).first()
        if session is None:
            return None
        return token, SessionRecord(**session._asdict())

    async def rotate_refresh_token(
        self,
        old_hash: bytes,
        new: RefreshTokenRecord,
        *,
        now: int,
        coupon: CouponRecord,
        audit: AuditRecord,
    ) -> bool:
        r, s = session_refresh_tokens.c, sessions.c
        try:
            async with _mapped("rotate refresh token"), self._engine.begin() as conn:
                spend = (
                    sa.update(session_refresh_tokens)
                    .where(r.token_hash == old_hash, r.spent_at.is_(None))
                    .values(spent_at=now)
                    .returning(r.session_id)
                )
                if (await conn.execute(spend)).first() is None:
                    raise _Lost
                await conn.execute(sa.insert(session_refresh_tokens).values(**_fields(new)))
                touch = (
                    sa.update(sessions)
                    .where(s.session_id == new.session_id, s.revoked_at.is_(None))
                    .values(generation=new.generation, last_used_at=now)
                    .returning(s.session_id)
                )
                if (await conn.execute(touch)).first() is None:
                    raise _Lost  # revoked meanwhile: undo the spend
                await conn.execute(sa.insert(t.coupons).values(**_fields(coupon)))
                await _insert_audit(conn, audit)
        except _Lost:
            return False
        return True

    async def revoke_session(
        self, session_id: str, *, revocation: RevocationRecord, audit: AuditRecord
    ) -> RevocationRecord | None:
        s = sessions.c
        try:
            async with _mapped("revoke session"), self._engine.begin() as conn:
                mark = (
                    sa.update(sessions)
                    .where(s.session_id == session_id, s.revoked_at.is_(None))
                    .values(revoked_at=revocation.revoked_at, revoked_reason=revocation.reason)
                    .returning(s.session_id)
                )
                if (await conn.execute(mark)).first() is None:
                    raise _Lost
                stored = await _insert_revocation(conn, revocation)
                await _insert_audit(conn, audit)
        except _Lost:
            return None
        return stored
