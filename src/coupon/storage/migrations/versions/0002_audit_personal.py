"""Audit events keep their personal data apart, and the Ledger finds what it has not taken.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("personal", sa.LargeBinary, nullable=True))
    # The relay asks for the events without a ledger index, oldest first.
    op.create_index(
        "ix_audit_events_pending",
        "audit_events",
        ["seq"],
        postgresql_where=sa.text("ledger_index IS NULL"),
        sqlite_where=sa.text("ledger_index IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_audit_events_pending", "audit_events")
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("personal")
