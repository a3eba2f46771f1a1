"""The signature domain of audit events, shared by their emitters and the Ledger."""

from __future__ import annotations

from typing import Final

__all__ = ["AUDIT_CONTEXT"]

#: Emitters sign ``AUDIT_CONTEXT + canonical event``: the prefix keeps an event signature
#: from ever passing for a signature over anything else made with the same key.
AUDIT_CONTEXT: Final = b"coupon-audit-v1\n"
