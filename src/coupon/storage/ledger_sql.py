"""The Ledger's SQL adapter: SQLite (embedded) and PostgreSQL, one code path.

Writes run in :meth:`LedgerStore.writing`, which holds the log's one write lock
(``BEGIN IMMEDIATE`` on SQLite, a transaction-scoped advisory lock on PostgreSQL): any
process may sequence, one at a time, and a process that took over sees the head another
left. Driver errors become :class:`StorageError` in :func:`coupon.storage.sql._mapped`.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any, NamedTuple

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from coupon import codes
from coupon.errors import StorageError

from . import _ledger_schema as t
from .sql import _mapped, make_engine, normalise_url, sqlite_pragmas

__all__ = ["CheckpointRow", "EntryRow", "LedgerStore", "LedgerWrite", "SearchFilter"]

_LEDGER_LOCK = 727_003  # PostgreSQL advisory lock: one sequencer at a time


class EntryRow(NamedTuple):
    """One stored entry and the columns audit search uses (in the table's column order)."""

    idx: int
    leaf_hash: bytes
    data: bytes
    event_key: str | None
    time_ms: int
    service: str
    action: str
    result: str
    actor: str
    target: str
    subject_ref: str | None
    code: str | None
    trace_id: str


# Built once from the column names above (constants, never input).
_COLUMNS = ", ".join(EntryRow._fields)
_QMARKS = ", ".join("?" * len(EntryRow._fields))
_DOLLARS = ", ".join(f"${i + 1}" for i in range(len(EntryRow._fields)))
_INSERT_SQLITE = f"INSERT INTO ledger_entries ({_COLUMNS}) VALUES ({_QMARKS})"  # noqa: S608
_INSERT_PG = f"INSERT INTO ledger_entries ({_COLUMNS}) VALUES ({_DOLLARS})"  # noqa: S608


@dataclass(frozen=True, slots=True)
class CheckpointRow:
    """A published checkpoint and its cosignature lines."""

    seq: int
    size: int
    root_hash: bytes
    note: str
    published_ms: int
    cosignatures: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SearchFilter:
    """Audit search: every field that is set must match."""

    actor: str | None = None
    action: str | None = None
    result: str | None = None
    service: str | None = None
    target: str | None = None  # a substring of the target
    subject_ref: str | None = None
    trace_id: str | None = None
    code: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None


def _fields(record: Any) -> dict[str, Any]:
    return {name: getattr(record, name) for name in record.__dataclass_fields__}


class LedgerWrite:
    """What may be done while holding the write lock (one transaction)."""

    def __init__(self, conn: AsyncConnection, dialect: str) -> None:
        self._conn = conn
        self._dialect = dialect

    async def size(self) -> int:
        """The number of entries stored (entries are numbered without gaps)."""
        value = (await self._conn.execute(sa.select(sa.func.max(t.ledger_entries.c.idx)))).scalar()
        return 0 if value is None else int(value) + 1

    async def existing(self, event_keys: Sequence[str]) -> dict[str, tuple[int, bytes]]:
        """Which of these event keys are stored already: key -> (index, leaf hash)."""
        if not event_keys:
            return {}
        c = t.ledger_entries.c
        stmt = sa.select(c.event_key, c.idx, c.leaf_hash).where(c.event_key.in_(event_keys))
        return {r.event_key: (r.idx, r.leaf_hash) for r in (await self._conn.execute(stmt)).all()}

    async def tiles(self, keys: Iterable[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """Tiles by ``(level, index)``, read inside the transaction."""
        return await _read_tiles(self._conn, keys)

    async def add_entries(self, rows: Sequence[EntryRow]) -> None:
        """Insert entries (their indices continue the log).

        The one hot statement: sent to the driver as tuples in column order, which takes
        a third of the time SQLAlchemy's per-row parameter processing would.
        """
        if rows:
            sql = _INSERT_PG if self._dialect == "postgresql" else _INSERT_SQLITE
            await self._conn.exec_driver_sql(sql, list(rows))

    async def put_tiles(self, tiles: Mapping[tuple[int, int], bytes]) -> None:
        """Create or extend tiles (the database refuses anything but an extension)."""
        if not tiles:
            return
        insert = pg_insert if self._dialect == "postgresql" else sqlite_insert
        values = [{"level": lv, "idx": ix, "hashes": h} for (lv, ix), h in tiles.items()]
        stmt = insert(t.ledger_tiles)
        stmt = stmt.on_conflict_do_update(
            index_elements=["level", "idx"], set_={"hashes": stmt.excluded.hashes}
        )
        await self._conn.execute(stmt, values)

    async def latest_checkpoint(self) -> CheckpointRow | None:
        """The newest checkpoint (inside the lock)."""
        return await _latest(self._conn)

    async def add_checkpoint(self, size: int, root_hash: bytes, note: str, at_ms: int) -> int:
        """Store a signed checkpoint; returns its sequence number."""
        stmt = (
            sa.insert(t.ledger_checkpoints)
            .values(size=size, root_hash=root_hash, note=note, published_ms=at_ms)
            .returning(t.ledger_checkpoints.c.seq)
        )
        return int((await self._conn.execute(stmt)).scalar_one())


async def _read_tiles(
    conn: AsyncConnection, keys: Iterable[tuple[int, int]]
) -> dict[tuple[int, int], bytes]:
    wanted = list(dict.fromkeys(keys))
    if not wanted:
        return {}
    c = t.ledger_tiles.c
    # OR of key equalities, not a row-value IN: SQLite 3.40 plans "(level, idx) IN (...)"
    # as a scan of the whole table (27 ms at 10 million entries), this as key lookups.
    stmt = sa.select(c.level, c.idx, c.hashes).where(
        sa.or_(*(sa.and_(c.level == level, c.idx == index) for level, index in wanted))
    )
    return {(r.level, r.idx): bytes(r.hashes) for r in (await conn.execute(stmt)).all()}


async def _latest(conn: AsyncConnection) -> CheckpointRow | None:
    c = t.ledger_checkpoints.c
    row = (
        await conn.execute(sa.select(t.ledger_checkpoints).order_by(c.seq.desc()).limit(1))
    ).first()
    return None if row is None else CheckpointRow(**row._asdict())


class LedgerStore:
    """The Ledger's state in a SQL database."""

    def __init__(self, engine: AsyncEngine, *, sqlite_path: str | None = None) -> None:
        self._engine = engine
        self.dialect = engine.dialect.name
        self._sqlite_path = sqlite_path
        self._reader: sqlite3.Connection | None = None
        # Writers of this process queue here, not in the engine: SQLite's busy handler
        # sleeps in growing steps (up to 100 ms) when two connections want the write lock.
        self._write_turn = asyncio.Lock()

    @classmethod
    async def connect(cls, url: str) -> LedgerStore:
        """Create the engine for ``url`` (no I/O until first use)."""
        engine = make_engine(
            url, on_connect=_sqlite_connect, on_begin=_sqlite_begin, max_overflow=10
        )
        database = make_url(normalise_url(url)).database if url.startswith("sqlite") else None
        return cls(engine, sqlite_path=database if database not in (None, "", ":memory:") else None)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        await self._engine.dispose()

    async def ping(self) -> None:
        async with _mapped("ping"), self._engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))

    async def migrate(self) -> None:
        async with _mapped("migrate"), self._engine.connect() as conn:
            conn = await conn.execution_options(coupon_write=True)
            async with conn.begin():
                if self.dialect == "postgresql":
                    await conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({_LEDGER_LOCK})"))
                await conn.run_sync(_upgrade)

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[LedgerWrite]:
        """One write transaction holding the log's write lock; commits when the block ends."""
        async with self._write_turn, _mapped("ledger write"), self._engine.connect() as conn:
            conn = await conn.execution_options(coupon_write=True)
            async with conn.begin():
                if self.dialect == "postgresql":
                    await conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({_LEDGER_LOCK})"))
                yield LedgerWrite(conn, self.dialect)

    @asynccontextmanager
    async def _reading(self, what: str) -> AsyncIterator[AsyncConnection]:
        async with _mapped(what), self._engine.connect() as conn:
            yield conn

    # -- reads -----------------------------------------------------------------------------------

    async def size(self) -> int:
        async with self._reading("size") as conn:
            return await LedgerWrite(conn, self.dialect).size()

    async def tiles(self, keys: Iterable[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        if self._sqlite_path is not None:
            return self._sqlite_tiles(list(dict.fromkeys(keys)))
        async with self._reading("tiles") as conn:
            return await _read_tiles(conn, keys)

    def _sqlite_tiles(self, keys: list[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """Tiles from SQLite, read in the calling thread.

        A proof needs a few primary-key lookups of blobs up to 8 KiB in a local file: ~10 us
        each, where one trip through the async driver's thread costs over a millisecond. So
        the read side keeps its own read-only connection (WAL readers never wait for the
        writer) and calls it directly.
        """
        if not keys:
            return {}
        try:
            if self._reader is None:
                self._reader = sqlite3.connect(
                    f"file:{self._sqlite_path}?mode=ro", uri=True, check_same_thread=False
                )
            where = " OR ".join(["(level = ? AND idx = ?)"] * len(keys))
            params = [value for key in keys for value in key]
            sql = f"SELECT level, idx, hashes FROM ledger_tiles WHERE {where}"  # noqa: S608
            rows = self._reader.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(codes.UNAVAILABLE_STORAGE, f"tiles: {type(exc).__name__}") from exc
        return {(level, idx): bytes(hashes) for level, idx, hashes in rows}

    async def entries(self, start: int, end: int) -> list[EntryRow]:
        """Entries with ``start <= idx < end``, in order."""
        c = t.ledger_entries.c
        stmt = sa.select(t.ledger_entries).where(c.idx >= start, c.idx < end).order_by(c.idx)
        async with self._reading("entries") as conn:
            return [EntryRow(**r._asdict()) for r in (await conn.execute(stmt)).all()]

    async def find_leaf(self, leaf_hash: bytes) -> int | None:
        """The first index whose leaf hash is ``leaf_hash``."""
        c = t.ledger_entries.c
        stmt = sa.select(sa.func.min(c.idx)).where(c.leaf_hash == leaf_hash)
        async with self._reading("find leaf") as conn:
            value = (await conn.execute(stmt)).scalar()
        return None if value is None else int(value)

    async def search(self, where: SearchFilter, *, after: int, limit: int) -> list[EntryRow]:
        """Entries matching ``where`` with index above ``after``, oldest first."""
        c = t.ledger_entries.c
        clauses: list[Any] = [c.idx > after]
        for name in ("actor", "action", "result", "service", "subject_ref", "trace_id", "code"):
            value = getattr(where, name)
            if value is not None:
                clauses.append(c[name] == value)
        if where.target is not None:
            clauses.append(c.target.contains(where.target, autoescape=True))
        if where.since_ms is not None:
            clauses.append(c.time_ms >= where.since_ms)
        if where.until_ms is not None:
            clauses.append(c.time_ms < where.until_ms)
        stmt = sa.select(t.ledger_entries).where(*clauses).order_by(c.idx).limit(limit)
        async with self._reading("search") as conn:
            return [EntryRow(**r._asdict()) for r in (await conn.execute(stmt)).all()]

    # -- checkpoints -----------------------------------------------------------------------------

    async def latest_checkpoint(self) -> CheckpointRow | None:
        async with self._reading("checkpoint") as conn:
            row = await _latest(conn)
        return None if row is None else await self._with_cosignatures(row)

    async def checkpoint_at(self, size: int) -> CheckpointRow | None:
        """The newest checkpoint of exactly ``size``."""
        c = t.ledger_checkpoints.c
        stmt = sa.select(t.ledger_checkpoints).where(c.size == size).order_by(c.seq.desc())
        async with self._reading("checkpoint") as conn:
            row = (await conn.execute(stmt.limit(1))).first()
        return None if row is None else CheckpointRow(**row._asdict())

    async def checkpoints(
        self,
        *,
        after: int = 0,
        limit: int = 100,
        since_ms: int | None = None,
        until_ms: int | None = None,
        min_size: int | None = None,
        max_size: int | None = None,
    ) -> list[CheckpointRow]:
        """Checkpoint history, oldest first, filtered by time and size."""
        c = t.ledger_checkpoints.c
        clauses: list[Any] = [c.seq > after]
        if since_ms is not None:
            clauses.append(c.published_ms >= since_ms)
        if until_ms is not None:
            clauses.append(c.published_ms < until_ms)
        if min_size is not None:
            clauses.append(c.size >= min_size)
        if max_size is not None:
            clauses.append(c.size <= max_size)
        stmt = sa.select(t.ledger_checkpoints).where(*clauses).order_by(c.seq).limit(limit)
        async with self._reading("checkpoints") as conn:
            return [CheckpointRow(**r._asdict()) for r in (await conn.execute(stmt)).all()]

    async def _with_cosignatures(self, row: CheckpointRow) -> CheckpointRow:
        c = t.ledger_cosignatures.c
        stmt = sa.select(c.line).where(c.checkpoint_seq == row.seq).order_by(c.seq)
        async with self._reading("cosignatures") as conn:
            lines = tuple(r.line for r in (await conn.execute(stmt)).all())
        return CheckpointRow(**{**_fields(row), "cosignatures": lines})

    async def add_cosignature(
        self, checkpoint_seq: int, witness: str, line: str, at_ms: int
    ) -> None:
        values = {
            "checkpoint_seq": checkpoint_seq,
            "witness": witness,
            "line": line,
            "added_ms": at_ms,
        }
        async with _mapped("add cosignature"), self._engine.begin() as conn:
            await conn.execute(sa.insert(t.ledger_cosignatures).values(**values))

    # -- keys ------------------------------------------------------------------------------------

    async def signing_keys(self) -> list[dict[str, Any]]:
        """The checkpoint keys, oldest first."""
        stmt = sa.select(t.ledger_keys).order_by(t.ledger_keys.c.created_ms)
        async with self._reading("ledger keys") as conn:
            return [dict(r._asdict()) for r in (await conn.execute(stmt)).all()]

    async def add_signing_key(self, values: Mapping[str, Any]) -> None:
        async with _mapped("add ledger key"), self._engine.begin() as conn:
            await conn.execute(sa.insert(t.ledger_keys).values(**values))

    async def retire_signing_key(self, key_id: str, retire_ms: int) -> None:
        stmt = sa.update(t.ledger_keys).where(t.ledger_keys.c.key_id == key_id)
        async with _mapped("retire ledger key"), self._engine.begin() as conn:
            await conn.execute(stmt.values(retire_ms=retire_ms))

    async def subject_key(self, subject_ref: str) -> bytes | None:
        c = t.ledger_subject_keys.c
        stmt = sa.select(c.sealed_key).where(c.subject_ref == subject_ref)
        async with self._reading("subject key") as conn:
            row = (await conn.execute(stmt)).first()
        return None if row is None else bytes(row.sealed_key)

    async def add_subject_key(self, subject_ref: str, sealed: bytes, at_ms: int) -> bytes:
        """Store a subject's key unless one exists; returns the one that is stored."""
        values = {
            "subject_ref": subject_ref,
            "sealed_key": sealed,
            "created_ms": at_ms,
            "last_used_ms": at_ms,
        }
        insert = pg_insert if self.dialect == "postgresql" else sqlite_insert
        stmt = insert(t.ledger_subject_keys).values(**values).on_conflict_do_nothing()
        async with _mapped("add subject key"), self._engine.begin() as conn:
            await conn.execute(stmt)
        stored = await self.subject_key(subject_ref)
        assert stored is not None
        return stored

    async def erase_subject_key(self, subject_ref: str) -> bool:
        """Delete a subject's key (crypto-shredding); True when there was one."""
        c = t.ledger_subject_keys.c
        async with _mapped("erase subject key"), self._engine.begin() as conn:
            result = await conn.execute(
                sa.delete(t.ledger_subject_keys).where(c.subject_ref == subject_ref)
            )
        return bool(result.rowcount)

    async def expire_subject_keys(self, unused_since_ms: int) -> int:
        """Shred the keys of subjects not seen since ``unused_since_ms`` (retention)."""
        c = t.ledger_subject_keys.c
        stmt = sa.delete(t.ledger_subject_keys).where(c.last_used_ms < unused_since_ms)
        async with _mapped("expire subject keys"), self._engine.begin() as conn:
            result = await conn.execute(stmt)
        return int(result.rowcount)

    async def touch_subject_keys(self, refs: Sequence[str], at_ms: int) -> None:
        if not refs:
            return
        c = t.ledger_subject_keys.c
        stmt = (
            sa.update(t.ledger_subject_keys)
            .where(c.subject_ref.in_(refs))
            .values(last_used_ms=at_ms)
        )
        async with _mapped("touch subject keys"), self._engine.begin() as conn:
            await conn.execute(stmt)


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # We emit BEGIN ourselves (see _sqlite_begin); the pragmas are the Authority's: WAL and
    # synchronous=FULL (every commit durable before it is acknowledged).
    dbapi_connection.isolation_level = None
    sqlite_pragmas(dbapi_connection, _record)


def _sqlite_begin(conn: Connection) -> None:
    # A write transaction takes the write lock at BEGIN: a deferred one that reads the head
    # first could not upgrade once another writer committed.
    immediate = conn.get_execution_options().get("coupon_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _upgrade(connection: Connection) -> None:
    config = Config()
    location = resources.files("coupon.storage") / "ledger_migrations"
    config.set_main_option("script_location", str(location))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
