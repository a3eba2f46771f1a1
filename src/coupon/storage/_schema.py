"""The Authority's tables (SQLAlchemy Core). Migrations in ``migrations/`` create them."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
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
    "api_keys",
    "audit_events",
    "coupons",
    "keys",
    "metadata",
    "policies",
    "policy_activations",
    "revocations",
]

metadata = MetaData()
# 64-bit sequence numbers; SQLite needs INTEGER for its rowid autoincrement.
_SEQ = BigInteger().with_variant(Integer(), "sqlite")

keys = Table(
    "keys",
    metadata,
    Column("kid", String(128), primary_key=True),
    Column("alg", String(16), nullable=False),
    Column("state", String(16), nullable=False),  # next | current | retiring | retired
    Column("public_jwk", JSON, nullable=False),
    Column("sealed_private", LargeBinary, nullable=True),  # None for keys held in an HSM
    Column("created_at", BigInteger, nullable=False),
    Column("activated_at", BigInteger, nullable=True),
    Column("retire_after", BigInteger, nullable=True),
)

coupons = Table(
    "coupons",
    metadata,
    Column("jti", String(256), primary_key=True),
    Column("lineage", String(256), nullable=False),
    Column("parent_jti", String(256), nullable=True),
    Column("subject", String(256), nullable=False),
    Column("tenant", String(256), nullable=False),
    Column("audience", JSON, nullable=False),
    Column("resource", String(1024), nullable=False),
    Column("actions", JSON, nullable=False),
    Column("purpose", String(512), nullable=False),
    Column("binding", JSON, nullable=False),
    Column("kid", String(128), nullable=False),
    Column("policy_version", String(256), nullable=True),
    Column("caller", String(256), nullable=False),
    Column("issued_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Index("ix_coupons_lineage", "lineage"),
    Index("ix_coupons_subject", "subject"),
)

revocations = Table(
    "revocations",
    metadata,
    Column("seq", _SEQ, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),  # jti | lineage | subject | tenant | kid
    Column("value", String(256), nullable=False),
    Column("reason", Text, nullable=False),
    Column("actor", String(256), nullable=False),
    Column("revoked_at", BigInteger, nullable=False),
    Index("ix_revocations_kind_value", "kind", "value"),
)

policies = Table(
    "policies",
    metadata,
    Column("version", String(256), primary_key=True),
    Column("bundle", LargeBinary, nullable=False),
    Column("signature", LargeBinary, nullable=False),
    Column("signer", String(128), nullable=False),
    Column("uploaded_by", String(256), nullable=False),
    Column("uploaded_at", BigInteger, nullable=False),
)

policy_activations = Table(
    "policy_activations",
    metadata,
    Column("seq", _SEQ, primary_key=True, autoincrement=True),
    Column("version", String(256), nullable=False),
    Column("actor", String(256), nullable=False),
    Column("activated_at", BigInteger, nullable=False),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("seq", _SEQ, primary_key=True, autoincrement=True),
    Column("event", LargeBinary, nullable=False),  # RFC 8785 canonical JSON
    Column("signature", LargeBinary, nullable=False),
    Column("kid", String(128), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("ledger_index", BigInteger, nullable=True),  # set once the Ledger takes it over
    Column("personal", LargeBinary, nullable=True),  # personal data the event commits to
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(64), primary_key=True),
    Column("secret_hash", LargeBinary, nullable=False),
    Column("name", String(256), nullable=False),
    Column("roles", JSON, nullable=False),
    Column("tenant", String(256), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("disabled", Boolean, nullable=False, default=False),
)
