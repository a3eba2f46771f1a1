"""The session methods of the storage port on both engines (SQLite and PostgreSQL).

Real engines, no mocks: the store fixture is a migrated SQLite file or a fresh PostgreSQL
database. The race tests open a second store (its own engine and connection pool) on the same
database and run two rotations, or several session starts, at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from coupon.storage.base import (
    AuditRecord,
    CouponRecord,
    RefreshTokenRecord,
    RevocationRecord,
    SessionRecord,
)
from coupon.storage.sql import SqlStore

pytestmark = pytest.mark.asyncio

NOW = 1_800_000_000


def _user() -> str:
    """A user no other test has (the PostgreSQL database lives for the whole module)."""
    return f"user-{secrets.token_hex(4)}"


def _session(
    subject: str | None = None, *, created_at: int = NOW, **fields: object
) -> SessionRecord:
    values: dict[str, object] = {
        "session_id": "ses_" + secrets.token_urlsafe(24),
        "tenant": "tenant-a",
        "subject": subject or _user(),
        "jkt": "j" * 43,
        "audience": ["orders"],
        "resource": "orders/**",
        "actions": ["read"],
        "purpose": "shopping",
        "caller": "apikey:shop",
        "caller_tenant": None,
        "created_at": created_at,
        "last_used_at": created_at,
        "expires_at": created_at + 3600,
        "idle_timeout": 600,
        "created_ns": created_at * 1_000_000_000,
    }
    values.update(fields)
    return SessionRecord(**values)  # type: ignore[arg-type]


def _token(session: SessionRecord, generation: int = 0) -> tuple[bytes, RefreshTokenRecord]:
    digest = hashlib.sha256(secrets.token_bytes(32)).digest()
    return digest, RefreshTokenRecord(
        token_hash=digest,
        session_id=session.session_id,
        generation=generation,
        issued_at=session.created_at,
    )


def _coupon(session: SessionRecord) -> CouponRecord:
    return CouponRecord(
        jti=secrets.token_urlsafe(16),
        lineage=session.session_id,
        parent_jti=None,
        subject=session.subject,
        tenant=session.tenant,
        audience=session.audience,
        resource=session.resource,
        actions=session.actions,
        purpose=session.purpose,
        binding={"jkt": session.jkt},
        kid="k1",
        policy_version=None,
        caller=session.caller,
        issued_at=NOW,
        expires_at=NOW + 300,
    )


def _audit(what: str = "x") -> AuditRecord:
    return AuditRecord(event=what.encode(), signature=b"s" * 64, kid="audit", created_at=NOW)


def _audit_for(seen: list[list[str]]) -> Callable[[list[str]], AuditRecord]:
    def make(evicted: list[str]) -> AuditRecord:
        seen.append(evicted)
        return _audit("start")

    return make


async def _start(store: SqlStore, session: SessionRecord, *, max_active: int = 3) -> list[str]:
    _digest, token = _token(session)
    stored = await store.create_session(
        session,
        token,
        max_active=max_active,
        actor="apikey:shop",
        coupon=_coupon(session),
        audit=_audit_for([]),
    )
    return [r.value for r in stored]


async def _count(store: SqlStore, table: str) -> int:
    async with store.transaction() as conn:
        return int((await conn.execute(sa.text(f"SELECT count(*) FROM {table}"))).scalar_one())


class TestCreateSession:
    async def test_round_trip(self, store: SqlStore) -> None:
        """A started session, its token, coupon and audit event are all stored together."""
        session = _session()
        digest, token = _token(session)
        seen: list[list[str]] = []
        coupons, events = await _count(store, "coupons"), await _count(store, "audit_events")
        await store.create_session(
            session,
            token,
            max_active=3,
            actor="apikey:shop",
            coupon=_coupon(session),
            audit=_audit_for(seen),
        )
        assert await store.get_session(session.session_id) == session
        assert await store.get_refresh_token(digest) == (token, session)
        assert await store.get_refresh_token(b"\0" * 32) is None
        assert seen == [[]]
        assert await _count(store, "coupons") == coupons + 1
        assert await _count(store, "audit_events") == events + 1

    async def test_evicts_oldest_beyond_the_limit(self, store: SqlStore) -> None:
        """The fourth session of a user revokes the oldest one, by a lineage revocation."""
        user = _user()
        first, second, third = (_session(user, created_at=NOW + i) for i in range(3))
        for session in (first, second, third):
            assert await _start(store, session) == []
        other = _session(created_at=NOW)
        assert await _start(store, other) == []
        fourth = _session(user, created_at=NOW + 10)
        _digest, token = _token(fourth)
        seen: list[list[str]] = []
        stored = await store.create_session(
            fourth,
            token,
            max_active=3,
            actor="apikey:shop",
            coupon=_coupon(fourth),
            audit=_audit_for(seen),
        )
        assert [(r.kind, r.value, r.actor) for r in stored] == [
            ("lineage", first.session_id, "apikey:shop")
        ]
        assert stored[0].seq > 0
        assert seen == [[first.session_id]]
        evicted = await store.get_session(first.session_id)
        assert evicted is not None
        assert evicted.revoked_at == fourth.created_at
        assert evicted.revoked_reason is not None
        assert "evicted" in evicted.revoked_reason
        for kept in (second, third, other):
            found = await store.get_session(kept.session_id)
            assert found is not None
            assert found.revoked_at is None

    async def test_expired_sessions_do_not_count(self, store: SqlStore) -> None:
        """Sessions past their idle timeout or lifetime are not live: nothing is evicted."""
        user = _user()
        idle = _session(user, created_at=NOW - 1000)  # idle timeout 600
        old = _session(user, created_at=NOW - 10, expires_at=NOW - 1)
        for session in (idle, old):
            await _start(store, session)
        assert await _start(store, _session(user), max_active=1) == []

    async def test_concurrent_starts_respect_the_limit(
        self, store: SqlStore, store_url: str
    ) -> None:
        """Six starts for one user at once, over two connection pools, leave two live."""
        other = await SqlStore.connect(store_url)
        try:
            user = _user()
            sessions = [_session(user, created_at=NOW + i) for i in range(6)]
            stores = [store, other] * 3
            await asyncio.gather(
                *(_start(s, x, max_active=2) for s, x in zip(stores, sessions, strict=True))
            )
        finally:
            await other.close()
        live = [await store.get_session(s.session_id) for s in sessions]
        assert sum(1 for s in live if s is not None and s.revoked_at is None) == 2


class TestRotation:
    async def test_rotate_spends_once(self, store: SqlStore) -> None:
        """A rotation spends the old token and stores the new one; a second spend fails."""
        session = _session()
        digest, token = _token(session)
        await store.create_session(
            session, token, max_active=3, actor="a", coupon=_coupon(session), audit=_audit_for([])
        )
        new_digest, new = _token(session, generation=1)
        won = await store.rotate_refresh_token(
            digest, new, now=NOW + 5, coupon=_coupon(session), audit=_audit()
        )
        assert won
        spent = await store.get_refresh_token(digest)
        assert spent is not None
        assert spent[0].spent_at == NOW + 5
        current = await store.get_refresh_token(new_digest)
        assert current is not None
        assert current[1].generation == 1
        assert current[1].last_used_at == NOW + 5
        _again_digest, again = _token(session, generation=1)
        assert not await store.rotate_refresh_token(
            digest, again, now=NOW + 6, coupon=_coupon(session), audit=_audit()
        )
        assert await store.get_refresh_token(_again_digest) is None

    async def test_concurrent_rotations_one_wins(self, store: SqlStore, store_url: str) -> None:
        """Two rotations of one token at once, on two pools: exactly one wins, one is stored."""
        session = _session()
        digest, token = _token(session)
        await store.create_session(
            session, token, max_active=3, actor="a", coupon=_coupon(session), audit=_audit_for([])
        )
        other = await SqlStore.connect(store_url)
        try:
            for round_ in range(5):
                candidates = [_token(session, generation=round_ + 1) for _ in range(2)]
                results = await asyncio.gather(
                    *(
                        s.rotate_refresh_token(
                            digest, new, now=NOW + round_, coupon=_coupon(session), audit=_audit()
                        )
                        for s, (_d, new) in zip((store, other), candidates, strict=True)
                    )
                )
                assert sorted(results) == [False, True]
                stored = [await store.get_refresh_token(d) for d, _new in candidates]
                assert [s is not None for s in stored] == results
                digest = candidates[results.index(True)][0]
        finally:
            await other.close()

    async def test_rotation_of_a_revoked_session_changes_nothing(self, store: SqlStore) -> None:
        """A session revoked before the rotation commits keeps its token unspent."""
        session = _session()
        digest, token = _token(session)
        await store.create_session(
            session, token, max_active=3, actor="a", coupon=_coupon(session), audit=_audit_for([])
        )
        revocation = RevocationRecord(
            kind="lineage", value=session.session_id, reason="logout", actor="u", revoked_at=NOW
        )
        assert await store.revoke_session(session.session_id, revocation=revocation, audit=_audit())
        _new_digest, new = _token(session, generation=1)
        assert not await store.rotate_refresh_token(
            digest, new, now=NOW, coupon=_coupon(session), audit=_audit()
        )
        found = await store.get_refresh_token(digest)
        assert found is not None
        assert found[0].spent_at is None


class TestRevokeSession:
    async def test_revoke_once(self, store: SqlStore) -> None:
        """Revoking stores one lineage revocation and the event; a second time does nothing."""
        session = _session()
        _digest, token = _token(session)
        await store.create_session(
            session, token, max_active=3, actor="a", coupon=_coupon(session), audit=_audit_for([])
        )
        revocation = RevocationRecord(
            kind="lineage", value=session.session_id, reason="logout", actor="u", revoked_at=NOW
        )
        events = await _count(store, "audit_events")
        stored = await store.revoke_session(
            session.session_id, revocation=revocation, audit=_audit()
        )
        assert stored is not None
        assert stored.seq > 0
        assert await store.revocations_after(0, limit=10) == [stored]
        again = await store.revoke_session(
            session.session_id, revocation=revocation, audit=_audit()
        )
        assert again is None
        assert await store.revocations_after(0, limit=10) == [stored]
        assert await _count(store, "audit_events") == events + 1

    async def test_unknown_session(self, store: SqlStore) -> None:
        """An unknown session id revokes nothing."""
        revocation = RevocationRecord(
            kind="lineage", value="ses_x", reason="r", actor="u", revoked_at=NOW
        )
        assert await store.revoke_session("ses_x", revocation=revocation, audit=_audit()) is None


@pytest.mark.parametrize("limit", [0, -1])
async def test_max_active_must_be_positive(store: SqlStore, limit: int) -> None:
    """A limit below one is a programming error, refused before any write."""
    session = _session()
    _digest, token = _token(session)
    with pytest.raises(ValueError, match="max_active"):
        await store.create_session(
            session,
            token,
            max_active=limit,
            actor="a",
            coupon=_coupon(session),
            audit=_audit_for([]),
        )
