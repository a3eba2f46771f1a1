"""Signed audit events: who did what to what, when, why, with what result.

Each event is RFC 8785 canonical JSON, signed with Ed25519 by the emitting service over a
domain-separated message, and stored durably before the request it records is answered.
The Ledger takes the stored events over (they carry an empty ``ledger_index`` until then).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from coupon.storage.base import AuditRecord
from coupon.token.hazmat import b64url_encode

__all__ = [
    "AUDIT_CONTEXT",
    "AuditEvent",
    "AuditSigner",
    "AuditSink",
    "StoreAuditSink",
]

AUDIT_CONTEXT: Final = b"coupon-audit-v1\n"


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One audit event before it is signed."""

    action: str
    result: str
    actor: dict[str, Any]
    target: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    code: str | None = None
    trace_id: str = ""
    request_id: str = ""
    lineage: str | None = None
    policy_version: str | None = None
    service: str = "authority"

    def document(self, *, event_id: str, at_ms: int) -> dict[str, Any]:
        """The canonical envelope as a JSON-ready dict."""
        return {
            "v": 1,
            "id": event_id,
            "time": at_ms,
            "service": self.service,
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "reason": self.reason,
            "result": self.result,
            "code": self.code,
            "trace_id": self.trace_id,
            "request_id": self.request_id,
            "lineage": self.lineage,
            "policy_version": self.policy_version,
        }


class AuditSigner:
    """The service's audit signing key (derived from the master key, so every process agrees)."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.public_key: Ed25519PublicKey = private.public_key()
        self.public_b64 = b64url_encode(raw)
        self.kid = "audit:" + self.public_b64[:16]

    @classmethod
    def from_seed(cls, seed: bytes) -> AuditSigner:
        """The key for a 32-byte seed (the Authority derives it from its master key)."""
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    def sign(self, canonical: bytes) -> bytes:
        """Sign canonical event bytes (domain-separated by :data:`AUDIT_CONTEXT`)."""
        return self._private.sign(AUDIT_CONTEXT + canonical)

    def verify(self, canonical: bytes, signature: bytes) -> bool:
        """Check a signature made by :meth:`sign`."""
        try:
            self.public_key.verify(signature, AUDIT_CONTEXT + canonical)
        except Exception:
            return False
        return True


class AuditStore(Protocol):
    async def add_audit(self, record: AuditRecord) -> AuditRecord: ...


class AuditSink(Protocol):
    """Where audit events go (the Ledger implements this in a later stage)."""

    async def emit(self, event: AuditEvent) -> AuditRecord: ...


class StoreAuditSink:
    """Signs each event and stores it durably; returns once it is committed."""

    def __init__(self, store: AuditStore, signer: AuditSigner) -> None:
        self._store = store
        self._signer = signer

    def prepare(self, event: AuditEvent) -> AuditRecord:
        """Canonicalise and sign ``event``; the caller stores it with the change it records."""
        now_ms = int(time.time() * 1000)
        canonical = rfc8785.dumps(event.document(event_id=uuid.uuid4().hex, at_ms=now_ms))
        return AuditRecord(
            event=canonical,
            signature=self._signer.sign(canonical),
            kid=self._signer.kid,
            created_at=now_ms // 1000,
        )

    async def emit(self, event: AuditEvent) -> AuditRecord:
        """Sign and store ``event`` on its own."""
        return await self._store.add_audit(self.prepare(event))
