"""The session tables (SQLAlchemy Core), on the Authority's metadata; migration 0003 makes them."""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Column, Index, Integer, LargeBinary, String, Table, Text

from ._schema import metadata

__all__ = ["session_refresh_tokens", "sessions"]

sessions = Table(
    "sessions",
    metadata,
    Column("session_id", String(64), primary_key=True),  # also the lineage of its coupons
    Column("tenant", String(256), nullable=False),
    Column("subject", String(256), nullable=False),
    Column("jkt", String(64), nullable=False),  # the device key (RFC 7638 thumbprint)
    Column("audience", JSON, nullable=False),
    Column("resource", String(1024), nullable=False),
    Column("actions", JSON, nullable=False),
    Column("purpose", String(512), nullable=False),
    Column("caller", String(256), nullable=False),
    Column("caller_tenant", String(256), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("last_used_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("idle_timeout", BigInteger, nullable=False),
    Column("created_ns", BigInteger, nullable=False),  # orders starts within a second
    Column("generation", Integer, nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
    Column("revoked_reason", Text, nullable=True),
    Index("ix_sessions_user", "tenant", "subject"),
)

session_refresh_tokens = Table(
    "session_refresh_tokens",
    metadata,
    Column("token_hash", LargeBinary(32), primary_key=True),  # SHA-256 of the secret
    Column("session_id", String(64), nullable=False),
    Column("generation", Integer, nullable=False),
    Column("issued_at", BigInteger, nullable=False),
    Column("spent_at", BigInteger, nullable=True),
    Index("ix_session_refresh_tokens_session", "session_id"),
)
