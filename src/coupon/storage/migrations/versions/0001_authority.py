"""The Authority's first tables: keys, coupons, revocations, policies, audit, API keys.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# 64-bit sequence numbers; SQLite needs INTEGER for its rowid autoincrement.
SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "keys",
        sa.Column("kid", sa.String(128), primary_key=True),
        sa.Column("alg", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("public_jwk", sa.JSON, nullable=False),
        sa.Column("sealed_private", sa.LargeBinary, nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("activated_at", sa.BigInteger, nullable=True),
        sa.Column("retire_after", sa.BigInteger, nullable=True),
    )
    op.create_table(
        "coupons",
        sa.Column("jti", sa.String(256), primary_key=True),
        sa.Column("lineage", sa.String(256), nullable=False),
        sa.Column("parent_jti", sa.String(256), nullable=True),
        sa.Column("subject", sa.String(256), nullable=False),
        sa.Column("tenant", sa.String(256), nullable=False),
        sa.Column("audience", sa.JSON, nullable=False),
        sa.Column("resource", sa.String(1024), nullable=False),
        sa.Column("actions", sa.JSON, nullable=False),
        sa.Column("purpose", sa.String(512), nullable=False),
        sa.Column("binding", sa.JSON, nullable=False),
        sa.Column("kid", sa.String(128), nullable=False),
        sa.Column("policy_version", sa.String(256), nullable=True),
        sa.Column("caller", sa.String(256), nullable=False),
        sa.Column("issued_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_coupons_lineage", "coupons", ["lineage"])
    op.create_index("ix_coupons_subject", "coupons", ["subject"])
    op.create_table(
        "revocations",
        sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("value", sa.String(256), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("revoked_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_revocations_kind_value", "revocations", ["kind", "value"])
    op.create_table(
        "policies",
        sa.Column("version", sa.String(256), primary_key=True),
        sa.Column("bundle", sa.LargeBinary, nullable=False),
        sa.Column("signature", sa.LargeBinary, nullable=False),
        sa.Column("signer", sa.String(128), nullable=False),
        sa.Column("uploaded_by", sa.String(256), nullable=False),
        sa.Column("uploaded_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "policy_activations",
        sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
        sa.Column("version", sa.String(256), nullable=False),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("activated_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "audit_events",
        sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
        sa.Column("event", sa.LargeBinary, nullable=False),
        sa.Column("signature", sa.LargeBinary, nullable=False),
        sa.Column("kid", sa.String(128), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("ledger_index", sa.BigInteger, nullable=True),
    )
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(64), primary_key=True),
        sa.Column("secret_hash", sa.LargeBinary, nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("roles", sa.JSON, nullable=False),
        sa.Column("tenant", sa.String(256), nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("disabled", sa.Boolean, nullable=False),
    )


def downgrade() -> None:
    for table in (
        "api_keys",
        "audit_events",
        "policy_activations",
        "policies",
        "revocations",
        "coupons",
        "keys",
    ):
        op.drop_table(table)
