"""The Ledger's tables (SQLAlchemy Core); ``ledger_migrations/`` creates them.

Entries, checkpoints and cosignatures are append-only and tiles only grow: triggers in the
database refuse anything else (see the migration), so not even a bug in this code, or an
operator with a SQL prompt and no DDL rights, can rewrite history.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

__all__ = [
    "ledger_checkpoints",
    "ledger_cosignatures",
    "ledger_entries",
    "ledger_keys",
    "ledger_metadata",
    "ledger_subject_keys",
    "ledger_tiles",
]

ledger_metadata = MetaData()
_SEQ = BigInteger().with_variant(Integer(), "sqlite")

ledger_entries = Table(
    "ledger_entries",
    ledger_metadata,
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("leaf_hash", LargeBinary(32), nullable=False),
    Column("data", LargeBinary, nullable=False),  # the leaf: canonical JSON envelope
    Column("event_key", String(200), nullable=True, unique=True),  # emitter kid + event id
    # Search columns, copied out of the entry (the entry itself is the truth).
    Column("time_ms", BigInteger, nullable=False),
    Column("service", String(64), nullable=False),
    Column("action", String(64), nullable=False),
    Column("result", String(16), nullable=False),
    Column("actor", String(256), nullable=False),
    Column("target", String(512), nullable=False),
    Column("subject_ref", String(64), nullable=True),
    Column("code", String(32), nullable=True),
    Column("trace_id", String(64), nullable=False),
    Index("ix_ledger_entries_leaf_hash", "leaf_hash"),
    Index("ix_ledger_entries_time", "time_ms"),
    Index("ix_ledger_entries_action", "action", "time_ms"),
    Index("ix_ledger_entries_actor", "actor", "time_ms"),
    Index("ix_ledger_entries_subject", "subject_ref"),
)

ledger_tiles = Table(
    "ledger_tiles",
    ledger_metadata,
    Column("level", Integer, primary_key=True, autoincrement=False),
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("hashes", LargeBinary, nullable=False),  # up to 256 concatenated 32-byte hashes
)

ledger_checkpoints = Table(
    "ledger_checkpoints",
    ledger_metadata,
    Column("seq", _SEQ, primary_key=True, autoincrement=True),
    Column("size", BigInteger, nullable=False),
    Column("root_hash", LargeBinary(32), nullable=False),
    Column("note", Text, nullable=False),  # the signed note, as served
    Column("published_ms", BigInteger, nullable=False),
    Index("ix_ledger_checkpoints_size", "size"),
    Index("ix_ledger_checkpoints_published", "published_ms"),
)

ledger_cosignatures = Table(
    "ledger_cosignatures",
    ledger_metadata,
    Column("seq", _SEQ, primary_key=True, autoincrement=True),
    Column("checkpoint_seq", BigInteger, nullable=False),
    Column("witness", String(256), nullable=False),
    Column("line", Text, nullable=False),  # the note signature line
    Column("added_ms", BigInteger, nullable=False),
    Index("ix_ledger_cosignatures_checkpoint", "checkpoint_seq"),
)

ledger_keys = Table(
    "ledger_keys",
    ledger_metadata,
    Column("key_id", String(16), primary_key=True),  # hex of the note key id
    Column("name", String(256), nullable=False),
    Column("public_key", LargeBinary(32), nullable=False),
    Column("sealed_private", LargeBinary, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("retire_ms", BigInteger, nullable=True),  # stops signing after this time
)

ledger_subject_keys = Table(
    "ledger_subject_keys",
    ledger_metadata,
    Column("subject_ref", String(64), primary_key=True),
    Column("sealed_key", LargeBinary, nullable=False),  # deleting the row shreds the data
    Column("created_ms", BigInteger, nullable=False),
    Column("last_used_ms", BigInteger, nullable=False),
)
