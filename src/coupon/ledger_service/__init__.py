"""The Ledger service: sequencing, checkpoints, the auditor API, the relay, witnesses.

The pure Merkle and note code is :mod:`coupon.ledger`; this package is its adapter to a
database and to HTTP (the routes, ``_routes.ledger_router``, are mounted by the app that
also runs the Authority, whose callers they authenticate). ``docs/ledger.md`` describes it.
"""

from ._entries import Leaf, Submission, parse_leaf
from ._relay import AuditOutbox, AuditRelay
from ._sequencer import Head, Receipt
from ._service import Ledger, LedgerConfig
from ._wiring import emitter_keys, witnessing

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
    "parse_leaf",
    "witnessing",
]
