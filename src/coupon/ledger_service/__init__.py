"""The Ledger service: sequencing, checkpoints, the auditor API, the relay, witnesses.

The pure Merkle and note code is :mod:`coupon.ledger`; this package is its adapter to a
database and to HTTP. ``docs/ledger.md`` describes the whole.
"""

from ._entries import Leaf, Submission, parse_leaf
from ._relay import AuditOutbox, AuditRelay
from ._routes import ledger_router
from ._sequencer import Head, Receipt
from ._service import Ledger, LedgerConfig, emitter_keys

__all__ = [
    "AuditOutbox",
    "AuditRelay",
    "Head",
    "Leaf",
    "Ledger",
    "LedgerConfig",
    "Receipt",
    "Submission",
    "emitter_keys",
    "ledger_router",
    "parse_leaf",
]
