"""Idempotency-Key handling (draft-ietf-httpapi-idempotency-key-header).

A ``POST`` or ``PATCH`` carrying ``Idempotency-Key: "<key>"`` runs once per (tenant, key).
Its first answer (2xx or 4xx) is stored and replayed for 24 hours with
``Idempotent-Replayed: true``; the same key with another payload is ``CPN-IDEM-002`` (422),
a retry while the first request runs is ``CPN-IDEM-003`` (409), and a 5xx or an exception
releases the key so the client may retry. See ``docs/idempotency.md``.
"""

from __future__ import annotations

from ._guard import (
    DEFAULT_LEASE,
    DEFAULT_TTL,
    MAX_STORED_BODY,
    Begin,
    IdempotencyGuard,
    IdempotencyHook,
    Proceed,
    Replay,
    Token,
)
from ._key import MAX_KEY_LENGTH, fingerprint, parse_idempotency_key, storage_key
from ._middleware import (
    DEFAULT_REPLAY_HEADERS,
    IDEMPOTENT_REPLAYED,
    MAX_REQUEST_BODY,
    IdempotencyMiddleware,
)
from ._redis import RedisIdempotencyStore
from ._store import (
    Done,
    IdempotencyStore,
    MemoryIdempotencyStore,
    Pending,
    Record,
    StoredResponse,
)

__all__ = [
    "DEFAULT_LEASE",
    "DEFAULT_REPLAY_HEADERS",
    "DEFAULT_TTL",
    "IDEMPOTENT_REPLAYED",
    "MAX_KEY_LENGTH",
    "MAX_REQUEST_BODY",
    "MAX_STORED_BODY",
    "Begin",
    "Done",
    "IdempotencyGuard",
    "IdempotencyHook",
    "IdempotencyMiddleware",
    "IdempotencyStore",
    "MemoryIdempotencyStore",
    "Pending",
    "Proceed",
    "Record",
    "RedisIdempotencyStore",
    "Replay",
    "StoredResponse",
    "Token",
    "fingerprint",
    "parse_idempotency_key",
    "storage_key",
]
