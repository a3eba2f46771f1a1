"""The storage port: small records and the interface every adapter implements.

Adapters: :mod:`coupon.storage.sql` (SQLite embedded, PostgreSQL in production). Every
adapter raises :class:`coupon.errors.StorageError` (``CPN-DEP-003``) when the engine fails and
:class:`coupon.errors.Conflict` on a duplicate, never a driver exception.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from ._session_records import RefreshTokenRecord, SessionRecord, SessionStore

__all__ = [
    "ApiKeyRecord",
    "AuditRecord",
    "CouponRecord",
    "KeyRecord",
    "KeyState",
    "PolicyActivation",
    "PolicyRecord",
    "RefreshTokenRecord",
    "RevocationKind",
    "RevocationRecord",
    "SessionRecord",
    "SessionStore",
    "Store",
]

KeyState = Literal["next", "current", "retiring", "retired"]
RevocationKind = Literal["jti", "lineage", "subject", "tenant", "kid"]


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A coupon-signing key and where it is in its life."""

    kid: str
    alg: str
    state: KeyState
    public_jwk: dict[str, str]
    sealed_private: bytes | None
    created_at: int
    activated_at: int | None = None
    retire_after: int | None = None


@dataclass(frozen=True, slots=True)
class CouponRecord:
    """What the Authority remembers of each coupon it issued (never the token itself)."""

    jti: str
    lineage: str
    parent_jti: str | None
    subject: str
    tenant: str
    audience: list[str]
    resource: str
    actions: list[str]
    purpose: str
    binding: dict[str, str]
    kid: str
    policy_version: str | None
    caller: str
    issued_at: int
    expires_at: int


@dataclass(frozen=True, slots=True)
class RevocationRecord:
    """One durable revocation; ``seq`` orders the feed (0 before it is stored)."""

    kind: RevocationKind
    value: str
    reason: str
    actor: str
    revoked_at: int
    seq: int = 0


@dataclass(frozen=True, slots=True)
class PolicyRecord:
    """An uploaded, signature-checked policy bundle."""

    version: str
    bundle: bytes
    signature: bytes
    signer: str
    uploaded_by: str
    uploaded_at: int


@dataclass(frozen=True, slots=True)
class PolicyActivation:
    """One entry of the activation history (the latest is in force)."""

    seq: int
    version: str
    actor: str
    activated_at: int


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """A signed audit event waiting for (or taken over by) the Ledger."""

    event: bytes
    signature: bytes
    kid: str
    created_at: int
    seq: int = 0
    ledger_index: int | None = None
    #: Personal data the event commits to, kept out of the signed event (JSON; see
    #: ``coupon.authority._audit.seal_personal``). The Ledger encrypts it per subject.
    personal: bytes | None = None


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """A service credential: the secret is stored only as a hash."""

    key_id: str
    secret_hash: bytes
    name: str
    roles: list[str]
    created_at: int
    tenant: str | None = None
    disabled: bool = False


class Store(SessionStore, Protocol):
    """Everything the Authority persists (sessions: :class:`SessionStore`). All methods are
    coroutines."""

    async def migrate(self) -> None:
        """Bring the schema to the newest migration (safe to run from many processes)."""

    async def close(self) -> None:
        """Release connections."""

    async def ping(self) -> None:
        """Raise ``StorageError`` unless the engine answers."""

    # keys
    async def list_keys(self) -> list[KeyRecord]: ...
    async def add_key(self, record: KeyRecord) -> None: ...
    async def update_key(
        self, kid: str, *, state: KeyState, activated_at: int | None, retire_after: int | None
    ) -> None: ...

    # coupons
    async def add_coupon(self, record: CouponRecord, *, audit: AuditRecord | None = None) -> None:
        """Store a coupon record and, in the same transaction, its audit event."""
        ...

    async def get_coupon(self, jti: str) -> CouponRecord | None: ...
    async def coupon_descendants(self, jti: str, *, max_depth: int = 16) -> list[str]: ...

    # revocations
    async def add_revocation(self, record: RevocationRecord) -> RevocationRecord:
        """Store durably and return the record with its ``seq``."""
        ...

    async def add_revocations(
        self, records: Sequence[RevocationRecord], *, audit: AuditRecord | None = None
    ) -> list[RevocationRecord]:
        """Store revocations and their audit event in one transaction."""
        ...

    async def revocations_after(self, seq: int, *, limit: int) -> list[RevocationRecord]: ...

    # policies
    async def add_policy(self, record: PolicyRecord) -> None: ...
    async def get_policy(self, version: str) -> PolicyRecord | None: ...
    async def list_policies(self) -> list[PolicyRecord]: ...
    async def activate_policy(self, version: str, *, actor: str, at: int) -> PolicyActivation: ...
    async def policy_history(self) -> list[PolicyActivation]: ...

    # audit
    async def add_audit(self, record: AuditRecord) -> AuditRecord: ...
    async def audit_after(self, seq: int, *, limit: int) -> list[AuditRecord]: ...
    async def audit_pending(self, *, limit: int) -> list[AuditRecord]:
        """Events the Ledger has not taken over yet, oldest first."""
        ...

    async def mark_audit(self, placed: Sequence[tuple[int, int]]) -> None:
        """Record ``(seq, ledger index)`` pairs: these events are in the Ledger."""
        ...

    # api keys
    async def add_api_key(self, record: ApiKeyRecord) -> None: ...
    async def get_api_key(self, key_id: str) -> ApiKeyRecord | None: ...
    async def count_api_keys(self) -> int: ...
