"""Alembic environment of the Ledger: run programmatically with a connection handed in.

It keeps its own version table, so the Ledger can share a database with the Authority or
live in one of its own.
"""

from __future__ import annotations

from alembic import context

from coupon.storage._ledger_schema import ledger_metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=ledger_metadata,
    render_as_batch=True,
    version_table="ledger_alembic_version",
)
with context.begin_transaction():
    context.run_migrations()
