"""The service-side API: :class:`IdempotencyGuard` decides whether a request runs or replays."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from coupon import codes
from coupon.errors import Conflict, InvalidRequest

from ._key import fingerprint, parse_idempotency_key, storage_key
from ._store import Done, IdempotencyStore, Pending, StoredResponse

__all__ = [
    "DEFAULT_LEASE",
    "DEFAULT_TTL",
    "MAX_STORED_BODY",
    "Begin",
    "IdempotencyGuard",
    "IdempotencyHook",
    "Outcome",
    "Proceed",
    "Replay",
    "Token",
]

#: How long a stored response is replayed (seconds): 24 hours.
DEFAULT_TTL = 24 * 60 * 60.0
#: How long a claim lasts if it is never completed or released (seconds).
DEFAULT_LEASE = 30.0
#: Bodies larger than this are answered normally but not stored (the key is released).
MAX_STORED_BODY = 1024 * 1024

Outcome = Literal["proceed", "replay", "conflict", "reused", "invalid"]


class IdempotencyHook(Protocol):
    """Told the outcome of every :meth:`IdempotencyGuard.begin` (e.g. to count it)."""

    def __call__(self, outcome: Outcome, /) -> None:
        """Record one outcome."""
        ...


@dataclass(frozen=True, slots=True)
class Token:
    """Our claim on a key: hand it back to :meth:`~IdempotencyGuard.complete` or ``abandon``."""

    key: str
    pending: Pending


@dataclass(frozen=True, slots=True)
class Proceed:
    """Run the request, then call ``complete(token, response)`` or ``abandon(token)``."""

    token: Token


@dataclass(frozen=True, slots=True)
class Replay:
    """Do not run the request: answer with ``response`` (and ``Idempotent-Replayed: true``)."""

    response: StoredResponse


Begin = Replay | Proceed


class IdempotencyGuard:
    """Runs each (tenant, Idempotency-Key) once and replays its first answer.

    Args:
        store: where claims and responses live (memory or Redis).
        ttl: how long a response is replayed, in seconds.
        lease: how long a claim lasts without ``complete``/``abandon``, in seconds.
        max_stored_body: larger responses are not stored (the key is released instead).
        hooks: told every outcome of :meth:`begin` (see ``coupon.observability``).
        clock: seconds since the epoch, for ``StoredResponse.created_at``.
    """

    def __init__(
        self,
        store: IdempotencyStore,
        *,
        ttl: float = DEFAULT_TTL,
        lease: float = DEFAULT_LEASE,
        max_stored_body: int = MAX_STORED_BODY,
        hooks: tuple[IdempotencyHook, ...] | list[IdempotencyHook] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        if ttl <= 0 or lease <= 0:
            raise ValueError("ttl and lease must be positive")
        self.store = store
        self.ttl = ttl
        self.lease = lease
        self.max_stored_body = max_stored_body
        self._hooks = tuple(hooks)
        self._clock = clock

    def _emit(self, outcome: Outcome) -> None:
        for hook in self._hooks:
            hook(outcome)

    async def begin(
        self, tenant: str, key_header: str | bytes, method: str, route: str, body: bytes
    ) -> Begin:
        """Claim the key for this request, or find its stored answer.

        Raises:
            InvalidRequest: ``CPN-IDEM-001`` (400) for a malformed header; ``CPN-IDEM-002``
                (422) when the key was used for a request with another fingerprint.
            Conflict: ``CPN-IDEM-003`` (409) while the first request is in flight.
            StorageError: ``CPN-DEP-003`` (503) when the store cannot answer (fail closed).
        """
        try:
            key = parse_idempotency_key(key_header)
        except InvalidRequest:
            self._emit("invalid")
            raise
        name = storage_key(tenant, key)
        pending = Pending(fingerprint(method, route, body), secrets.token_hex(16))
        existing = await self.store.claim(name, pending, lease=self.lease)
        if existing is None:
            self._emit("proceed")
            return Proceed(Token(name, pending))
        if existing.fingerprint != pending.fingerprint:
            self._emit("reused")
            raise InvalidRequest(
                codes.IDEM_REUSED, "this Idempotency-Key was used for a different request"
            )
        if isinstance(existing, Done):
            self._emit("replay")
            return Replay(existing.response)
        self._emit("conflict")
        raise Conflict(
            codes.IDEM_IN_FLIGHT, "a request with this Idempotency-Key is still being processed"
        )

    def response(
        self, status: int, headers: tuple[tuple[str, str], ...], body: bytes
    ) -> StoredResponse:
        """A :class:`StoredResponse` stamped with the guard's clock."""
        return StoredResponse(status, headers, body, self._clock())

    async def complete(self, token: Token, response: StoredResponse) -> bool:
        """Store the answer to replay, or release the key when it must not be replayed.

        A 5xx answer or one whose body exceeds ``max_stored_body`` releases the key (the
        client may retry); any other status, 4xx included, is stored for ``ttl`` seconds.

        Returns:
            True if the response was stored; False if the key was released or the lease had
            already expired (another request may hold the key now).
        """
        if response.status >= 500 or len(response.body) > self.max_stored_body:
            await self.abandon(token)
            return False
        return await self.store.complete(token.key, token.pending, response, ttl=self.ttl)

    async def abandon(self, token: Token) -> None:
        """Release the key: the request failed and the client may retry it."""
        await self.store.release(token.key, token.pending)
