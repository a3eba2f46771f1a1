"""The SQL adapter of the storage port: SQLite (embedded) and PostgreSQL, one code path.

Every driver or SQLAlchemy exception is mapped to :class:`StorageError` or :class:`Conflict`
inside :func:`_mapped`, so callers only ever see the port's errors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from coupon import codes
from coupon.errors import Conflict, StorageError

from . import _schema as t
from ._session_sql import SessionSqlMixin
from .base import (
    ApiKeyRecord,
    AuditRecord,
    CouponRecord,
    KeyRecord,
    KeyState,
    PolicyActivation,
    PolicyRecord,
    RevocationRecord,
)

__all__ = ["KEY_BOOTSTRAP_LOCK", "SqlStore", "make_engine", "normalise_url", "sqlite_pragmas"]

_MIGRATION_LOCK = 727_001  # PostgreSQL advisory lock id: one migrator at a time
KEY_BOOTSTRAP_LOCK = 727_002  # one process creates the first keys; the others load them


def normalise_url(url: str) -> str:
    """Pick the async driver for a plain ``postgresql://`` or ``sqlite://`` URL."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    elif parsed.drivername == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    return parsed.render_as_string(hide_password=False)


@asynccontextmanager
async def _mapped(what: str) -> AsyncIterator[None]:
    try:
        yield
    except IntegrityError as exc:
        raise Conflict(codes.CONFLICT, f"{what}: already exists") from exc
    except (TimeoutError, SQLAlchemyError, OSError) as exc:
        raise StorageError(codes.UNAVAILABLE_STORAGE, f"{what}: {type(exc).__name__}") from exc


class SqlStore(SessionSqlMixin):
    """The Authority's state in a SQL database (sessions: :class:`SessionSqlMixin`)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self.dialect = engine.dialect.name

    @classmethod
    async def connect(cls, url: str) -> SqlStore:
        """Create the engine for ``url`` (no I/O until first use)."""
        return cls(make_engine(url, on_connect=sqlite_pragmas))

    async def close(self) -> None:
        await self._engine.dispose()

    async def ping(self) -> None:
        async with _mapped("ping"), self._engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))

    @asynccontextmanager
    async def exclusive(self, lock_id: int) -> AsyncIterator[None]:
        """Hold a cluster-wide lock while the block runs (one process at a time).

        PostgreSQL: a session advisory lock on its own connection. SQLite serves one process
        (the embedded default), so there is nothing to exclude and the block just runs.
        """
        if self.dialect != "postgresql":
            yield
            return
        async with _mapped("lock"), self._engine.connect() as conn:
            await conn.execute(sa.text("SELECT pg_advisory_lock(:id)"), {"id": lock_id})
            await conn.commit()
            try:
                yield
            finally:
                await conn.execute(sa.text("SELECT pg_advisory_unlock(:id)"), {"id": lock_id})
                await conn.commit()

    async def migrate(self) -> None:
        async with _mapped("migrate"), self._engine.begin() as conn:
            if self.dialect == "postgresql":
                await conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})"))
            await conn.run_sync(_upgrade)

    # -- helpers ---------------------------------------------------------------------------------

    async def _write(self, what: str, stmt: Any) -> Any:
        async with _mapped(what), self._engine.begin() as conn:
            return await conn.execute(stmt)

    async def _rows(self, what: str, stmt: Any) -> Sequence[Any]:
        async with _mapped(what), self._engine.connect() as conn:
            return (await conn.execute(stmt)).all()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """One transaction for several writes (e.g. a coupon record and its audit event)."""
        async with _mapped("transaction"), self._engine.begin() as conn:
            yield conn

    # -- keys ------------------------------------------------------------------------------------

    async def list_keys(self) -> list[KeyRecord]:
        rows = await self._rows("list keys", sa.select(t.keys).order_by(t.keys.c.created_at))
        return [
            KeyRecord(
                kid=r.kid,
                alg=r.alg,
                state=r.state,
                public_jwk=r.public_jwk,
                sealed_private=r.sealed_private,
                created_at=r.created_at,
                activated_at=r.activated_at,
                retire_after=r.retire_after,
            )
            for r in rows
        ]

    async def add_key(self, record: KeyRecord) -> None:
        await self._write("add key", sa.insert(t.keys).values(**_fields(record)))

    async def update_key(
        self, kid: str, *, state: KeyState, activated_at: int | None, retire_after: int | None
    ) -> None:
        stmt = (
            sa.update(t.keys)
            .where(t.keys.c.kid == kid)
            .values(state=state, activated_at=activated_at, retire_after=retire_after)
        )
        await self._write("update key", stmt)

    # -- coupons ---------------------------------------------------------------------------------

    async def add_coupon(self, record: CouponRecord, *, audit: AuditRecord | None = None) -> None:
        async with _mapped("add coupon"), self._engine.begin() as conn:
            await conn.execute(sa.insert(t.coupons).values(**_fields(record)))
            if audit is not None:
                await _insert_audit(conn, audit)

    async def coupon_descendants(self, jti: str, *, max_depth: int = 16) -> list[str]:
        """Every coupon the Authority issued below ``jti`` (children, grandchildren, ...)."""
        found: list[str] = []
        frontier = [jti]
        async with _mapped("descendants"), self._engine.connect() as conn:
            for _ in range(max_depth):
                if not frontier:
                    break
                stmt = sa.select(t.coupons.c.jti).where(t.coupons.c.parent_jti.in_(frontier))
                frontier = [row.jti for row in (await conn.execute(stmt)).all()]
                found.extend(frontier)
        return found

    async def get_coupon(self, jti: str) -> CouponRecord | None:
        rows = await self._rows("get coupon", sa.select(t.coupons).where(t.coupons.c.jti == jti))
        return CouponRecord(**rows[0]._asdict()) if rows else None

    # -- revocations -----------------------------------------------------------------------------

    async def add_revocation(self, record: RevocationRecord) -> RevocationRecord:
        (stored,) = await self.add_revocations([record])
        return stored

    async def add_revocations(
        self, records: Sequence[RevocationRecord], *, audit: AuditRecord | None = None
    ) -> list[RevocationRecord]:
        """Store several revocations (and their audit event) in one transaction."""
        stored = []
        async with _mapped("add revocation"), self._engine.begin() as conn:
            for record in records:
                values = _fields(record)
                del values["seq"]
                stmt = sa.insert(t.revocations).values(**values).returning(t.revocations.c.seq)
                seq = (await conn.execute(stmt)).scalar_one()
                stored.append(RevocationRecord(**{**values, "seq": seq}))
            if audit is not None:
                await _insert_audit(conn, audit)
        return stored

    async def revocations_after(self, seq: int, *, limit: int) -> list[RevocationRecord]:
        stmt = (
            sa.select(t.revocations)
            .where(t.revocations.c.seq > seq)
            .order_by(t.revocations.c.seq)
            .limit(limit)
        )
        return [RevocationRecord(**r._asdict()) for r in await self._rows("revocations", stmt)]

    # -- policies --------------------------------------------------------------------------------

    async def add_policy(self, record: PolicyRecord) -> None:
        await self._write("add policy", sa.insert(t.policies).values(**_fields(record)))

    async def get_policy(self, version: str) -> PolicyRecord | None:
        stmt = sa.select(t.policies).where(t.policies.c.version == version)
        rows = await self._rows("get policy", stmt)
        return PolicyRecord(**rows[0]._asdict()) if rows else None

    async def list_policies(self) -> list[PolicyRecord]:
        stmt = sa.select(t.policies).order_by(t.policies.c.uploaded_at)
        return [PolicyRecord(**r._asdict()) for r in await self._rows("list policies", stmt)]

    async def activate_policy(self, version: str, *, actor: str, at: int) -> PolicyActivation:
        values = {"version": version, "actor": actor, "activated_at": at}
        result = await self._write(
            "activate policy",
            sa.insert(t.policy_activations).values(**values).returning(t.policy_activations.c.seq),
        )
        return PolicyActivation(seq=result.scalar_one(), **values)  # type: ignore[arg-type]

    async def policy_history(self) -> list[PolicyActivation]:
        stmt = sa.select(t.policy_activations).order_by(t.policy_activations.c.seq)
        return [PolicyActivation(**r._asdict()) for r in await self._rows("policy history", stmt)]

    # -- audit -----------------------------------------------------------------------------------

    async def add_audit(self, record: AuditRecord) -> AuditRecord:
        async with _mapped("add audit"), self._engine.begin() as conn:
            return await _insert_audit(conn, record)

    async def audit_after(self, seq: int, *, limit: int) -> list[AuditRecord]:
        stmt = (
            sa.select(t.audit_events)
            .where(t.audit_events.c.seq > seq)
            .order_by(t.audit_events.c.seq)
            .limit(limit)
        )
        return [AuditRecord(**r._asdict()) for r in await self._rows("audit", stmt)]

    async def audit_pending(self, *, limit: int) -> list[AuditRecord]:
        c = t.audit_events.c
        stmt = (
            sa.select(t.audit_events).where(c.ledger_index.is_(None)).order_by(c.seq).limit(limit)
        )
        return [AuditRecord(**r._asdict()) for r in await self._rows("audit pending", stmt)]

    async def mark_audit(self, placed: Sequence[tuple[int, int]]) -> None:
        if not placed:
            return
        c = t.audit_events.c
        stmt = (
            sa.update(t.audit_events)
            .where(c.seq == sa.bindparam("b_seq"))
            .values(ledger_index=sa.bindparam("b_index"))
        )
        async with _mapped("mark audit"), self._engine.begin() as conn:
            await conn.execute(stmt, [{"b_seq": s, "b_index": i} for s, i in placed])

    # -- API keys --------------------------------------------------------------------------------

    async def add_api_key(self, record: ApiKeyRecord) -> None:
        await self._write("add api key", sa.insert(t.api_keys).values(**_fields(record)))

    async def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        stmt = sa.select(t.api_keys).where(t.api_keys.c.key_id == key_id)
        rows = await self._rows("get api key", stmt)
        return ApiKeyRecord(**rows[0]._asdict()) if rows else None

    async def count_api_keys(self) -> int:
        rows = await self._rows(
            "count api keys", sa.select(sa.func.count()).select_from(t.api_keys)
        )
        return int(rows[0][0])


async def _insert_audit(conn: AsyncConnection, record: AuditRecord) -> AuditRecord:
    values = _fields(record)
    del values["seq"]
    stmt = sa.insert(t.audit_events).values(**values).returning(t.audit_events.c.seq)
    return AuditRecord(**{**values, "seq": (await conn.execute(stmt)).scalar_one()})


def _fields(record: Any) -> dict[str, Any]:
    return {name: getattr(record, name) for name in record.__dataclass_fields__}


def make_engine(
    url: str,
    *,
    on_connect: Callable[[Any, Any], None],
    on_begin: Callable[[Connection], None] | None = None,
    max_overflow: int = 20,
) -> AsyncEngine:
    """The async engine for ``url``: SQLite (its directory created, ``on_connect`` and
    ``on_begin`` hooked in) or a pooled PostgreSQL engine."""
    url = normalise_url(url)
    if not url.startswith("sqlite"):
        return create_async_engine(url, pool_size=10, max_overflow=max_overflow, pool_pre_ping=True)
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, connect_args={"timeout": 30})
    event.listen(engine.sync_engine, "connect", on_connect)
    if on_begin is not None:
        event.listen(engine.sync_engine, "begin", on_begin)
    return engine


def sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside the writer; FULL makes each commit durable before it is
    # acknowledged, so nothing acknowledged is lost to a crash or power cut.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _upgrade(connection: Connection) -> None:
    config = Config()
    config.set_main_option("script_location", str(resources.files("coupon.storage") / "migrations"))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
