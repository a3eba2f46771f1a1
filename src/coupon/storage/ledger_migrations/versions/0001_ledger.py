"""The Ledger's tables, and the triggers that keep them append-only.

Revision ID: L0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision = "L0001"
down_revision = None

_APPEND_ONLY = ("ledger_entries", "ledger_checkpoints", "ledger_cosignatures")

_SQLITE_TRIGGERS = [
    *(
        f"CREATE TRIGGER {table}_no_{verb} BEFORE {verb.upper()} ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
        for table in _APPEND_ONLY
        for verb in ("update", "delete")
    ),
    "CREATE TRIGGER ledger_tiles_no_delete BEFORE DELETE ON ledger_tiles "
    "BEGIN SELECT RAISE(ABORT, 'ledger_tiles only grow'); END",
    # A tile may only be extended: same place, old content as a prefix of the new.
    "CREATE TRIGGER ledger_tiles_only_grow BEFORE UPDATE ON ledger_tiles "
    "WHEN NEW.level != OLD.level OR NEW.idx != OLD.idx "
    "OR length(NEW.hashes) < length(OLD.hashes) "
    "OR substr(NEW.hashes, 1, length(OLD.hashes)) != OLD.hashes "
    "BEGIN SELECT RAISE(ABORT, 'ledger_tiles only grow'); END",
]

_POSTGRES_TRIGGERS = [
    "CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
    "BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END $$",
    "CREATE FUNCTION ledger_tile_grows() RETURNS trigger LANGUAGE plpgsql AS $$ "
    "BEGIN IF NEW.level <> OLD.level OR NEW.idx <> OLD.idx "
    "OR length(NEW.hashes) < length(OLD.hashes) "
    "OR substring(NEW.hashes FROM 1 FOR length(OLD.hashes)) <> OLD.hashes "
    "THEN RAISE EXCEPTION 'ledger_tiles only grow'; END IF; RETURN NEW; END $$",
    *(
        f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
        "FOR EACH ROW EXECUTE FUNCTION ledger_append_only()"
        for table in _APPEND_ONLY
    ),
    *(
        f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
        "FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only()"
        for table in (*_APPEND_ONLY, "ledger_tiles")
    ),
    "CREATE TRIGGER ledger_tiles_no_delete BEFORE DELETE ON ledger_tiles "
    "FOR EACH ROW EXECUTE FUNCTION ledger_append_only()",
    "CREATE TRIGGER ledger_tiles_only_grow BEFORE UPDATE ON ledger_tiles "
    "FOR EACH ROW EXECUTE FUNCTION ledger_tile_grows()",
]


def upgrade() -> None:
    op.create_table(
        "ledger_entries",
        sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("leaf_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("event_key", sa.String(200), nullable=True, unique=True),
        sa.Column("time_ms", sa.BigInteger, nullable=False),
        sa.Column("service", sa.String(64), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("result", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("target", sa.String(512), nullable=False),
        sa.Column("subject_ref", sa.String(64), nullable=True),
        sa.Column("code", sa.String(32), nullable=True),
        sa.Column("trace_id", sa.String(64), nullable=False),
    )
    op.create_index("ix_ledger_entries_leaf_hash", "ledger_entries", ["leaf_hash"])
    op.create_index("ix_ledger_entries_time", "ledger_entries", ["time_ms"])
    op.create_index("ix_ledger_entries_action", "ledger_entries", ["action", "time_ms"])
    op.create_index("ix_ledger_entries_actor", "ledger_entries", ["actor", "time_ms"])
    op.create_index("ix_ledger_entries_subject", "ledger_entries", ["subject_ref"])
    op.create_table(
        "ledger_tiles",
        sa.Column("level", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("hashes", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "ledger_checkpoints",
        sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("root_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("published_ms", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_ledger_checkpoints_size", "ledger_checkpoints", ["size"])
    op.create_index("ix_ledger_checkpoints_published", "ledger_checkpoints", ["published_ms"])
    op.create_table(
        "ledger_cosignatures",
        sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
        sa.Column("checkpoint_seq", sa.BigInteger, nullable=False),
        sa.Column("witness", sa.String(256), nullable=False),
        sa.Column("line", sa.Text, nullable=False),
        sa.Column("added_ms", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_ledger_cosignatures_checkpoint", "ledger_cosignatures", ["checkpoint_seq"])
    op.create_table(
        "ledger_keys",
        sa.Column("key_id", sa.String(16), primary_key=True),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("public_key", sa.LargeBinary(32), nullable=False),
        sa.Column("sealed_private", sa.LargeBinary, nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("retire_ms", sa.BigInteger, nullable=True),
    )
    op.create_table(
        "ledger_subject_keys",
        sa.Column("subject_ref", sa.String(64), primary_key=True),
        sa.Column("sealed_key", sa.LargeBinary, nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("last_used_ms", sa.BigInteger, nullable=False),
    )
    dialect = op.get_bind().dialect.name
    for statement in _POSTGRES_TRIGGERS if dialect == "postgresql" else _SQLITE_TRIGGERS:
        op.execute(statement)


def downgrade() -> None:  # pragma: no cover - history is not dropped by a migration
    raise NotImplementedError("the Ledger's history is never dropped")
