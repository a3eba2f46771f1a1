"""End-user sessions and their refresh tokens (hashed), for refresh-token rotation.

Revision ID: 0003_sessions
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_sessions"
down_revision = "0002"


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("session_id", sa.String(64), primary_key=True),
        sa.Column("tenant", sa.String(256), nullable=False),
        sa.Column("subject", sa.String(256), nullable=False),
        sa.Column("jkt", sa.String(64), nullable=False),
        sa.Column("audience", sa.JSON, nullable=False),
        sa.Column("resource", sa.String(1024), nullable=False),
        sa.Column("actions", sa.JSON, nullable=False),
        sa.Column("purpose", sa.String(512), nullable=False),
        sa.Column("caller", sa.String(256), nullable=False),
        sa.Column("caller_tenant", sa.String(256), nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("last_used_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.Column("idle_timeout", sa.BigInteger, nullable=False),
        sa.Column("created_ns", sa.BigInteger, nullable=False),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("revoked_at", sa.BigInteger, nullable=True),
        sa.Column("revoked_reason", sa.Text, nullable=True),
    )
    op.create_index("ix_sessions_user", "sessions", ["tenant", "subject"])
    op.create_table(
        "session_refresh_tokens",
        sa.Column("token_hash", sa.LargeBinary(32), primary_key=True),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("issued_at", sa.BigInteger, nullable=False),
        sa.Column("spent_at", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_session_refresh_tokens_session", "session_refresh_tokens", ["session_id"])


def downgrade() -> None:
    op.drop_index("ix_session_refresh_tokens_session", "session_refresh_tokens")
    op.drop_table("session_refresh_tokens")
    op.drop_index("ix_sessions_user", "sessions")
    op.drop_table("sessions")
