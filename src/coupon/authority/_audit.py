"""Signed audit events: who did what to what, when, why, with what result.

Each event is RFC 8785 canonical JSON, signed with Ed25519 by the emitting service over a
domain-separated message, and stored durably before the request it records is answered.
The Ledger's relay takes the stored events over (they carry an empty ``ledger_index`` until
then), see ``coupon.ledger_service``.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from coupon.ledger import AUDIT_CONTEXT
from coupon.storage.base import AuditRecord
from coupon.token.hazmat import b64url_encode

__all__ = [
    "AUDIT_CONTEXT",
    "AuditEvent",
    "AuditSigner",
    "AuditSink",
    "StoreAuditSink",
    "seal_personal",
]


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
    #: The person (or service) the event is about, when that is personal data: the Ledger
    #: encrypts ``personal`` under a key of this subject's, which erasure destroys.
    subject: str | None = None
    personal: dict[str, Any] | None = None

    def document(
        self, *, event_id: str, at_ms: int, commitment: str | None = None
    ) -> dict[str, Any]:
        """The canonical envelope as a JSON-ready dict.

        ``commitment`` stands in for the personal data: SHA-256 over a random salt and the
        data, so the signed event proves what the data was without containing it.
        """
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
            "personal": None if commitment is None else {"commit": commitment},
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


def seal_personal(
    subject: str | None, data: dict[str, Any] | None
) -> tuple[bytes | None, str | None]:
    """The personal part kept beside the event, and the commitment the event carries."""
    if subject is None and not data:
        return None, None
    salt = secrets.token_bytes(16)
    body = {"subject": subject, "data": data or {}}
    digest = hashlib.sha256(salt + rfc8785.dumps(body)).digest()
    kept = json.dumps({**body, "salt": b64url_encode(salt)}).encode()
    return kept, b64url_encode(digest)


class AuditStore(Protocol):
    async def add_audit(self, record: AuditRecord) -> AuditRecord: ...


class AuditSink(Protocol):
    """Where audit events go."""

    async def emit(self, event: AuditEvent) -> AuditRecord: ...


class StoreAuditSink:
    """Signs each event and stores it durably; returns once it is committed."""

    def __init__(self, store: AuditStore, signer: AuditSigner) -> None:
        self._store = store
        self._signer = signer
        #: Called after an event is stored on its own (the Ledger's relay wakes on it).
        self.on_stored: list[Any] = []

    def prepare(self, event: AuditEvent) -> AuditRecord:
        """Canonicalise and sign ``event``; the caller stores it with the change it records."""
        now_ms = int(time.time() * 1000)
        personal, commitment = seal_personal(event.subject, event.personal)
        canonical = rfc8785.dumps(
            event.document(event_id=uuid.uuid4().hex, at_ms=now_ms, commitment=commitment)
        )
        return AuditRecord(
            event=canonical,
            signature=self._signer.sign(canonical),
            kid=self._signer.kid,
            created_at=now_ms // 1000,
            personal=personal,
        )

    async def emit(self, event: AuditEvent) -> AuditRecord:
        """Sign and store ``event`` on its own."""
        record = await self._store.add_audit(self.prepare(event))
        self.stored()
        return record

    def stored(self) -> None:
        """Tell the listeners that events were committed (with a change, or on their own)."""
        for notify in self.on_stored:
            notify()
