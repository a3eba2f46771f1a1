"""The store port and the in-memory adapter.

A store holds one record per tenant-scoped key: :class:`Pending` while the first request
runs (a lease that expires on its own, so a crashed worker does not block the key), then
:class:`Done` with the response to replay until its TTL runs out.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from coupon import codes
from coupon.errors import StorageError

__all__ = [
    "Done",
    "IdempotencyStore",
    "MemoryIdempotencyStore",
    "Pending",
    "Record",
    "StoredResponse",
    "decode_record",
    "encode_record",
]


def _corrupt(reason: str) -> StorageError:
    return StorageError(codes.UNAVAILABLE_STORAGE, f"corrupt idempotency record: {reason}")


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """The first answer to a key: replayed verbatim (plus ``Idempotent-Replayed: true``).

    Attributes:
        status: the HTTP status code.
        headers: the selected headers, lower-case names, in order.
        body: the complete body.
        created_at: when it was stored (seconds since the epoch).
    """

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    created_at: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; the body is base64."""
        return {
            "status": self.status,
            "headers": [list(pair) for pair in self.headers],
            "body": base64.b64encode(self.body).decode("ascii"),
            "created_at": self.created_at,
        }

    @classmethod
    def from_dict(cls, data: object) -> StoredResponse:
        """The inverse of :meth:`to_dict`.

        Raises:
            StorageError: ``CPN-DEP-003`` when ``data`` is not a stored response.
        """
        if not isinstance(data, dict):
            raise _corrupt("response is not an object")
        status, headers = data.get("status"), data.get("headers")
        body, created_at = data.get("body"), data.get("created_at")
        if not (isinstance(status, int) and 100 <= status <= 599):
            raise _corrupt("bad status")
        if not isinstance(headers, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p)
            for p in headers
        ):
            raise _corrupt("bad headers")
        if not isinstance(body, str) or not isinstance(created_at, int | float):
            raise _corrupt("bad body or timestamp")
        try:
            raw = base64.b64decode(body, validate=True)
        except binascii.Error:
            raise _corrupt("body is not base64") from None
        pairs = [(p[0], p[1]) for p in headers]
        return cls(status, tuple(pairs), raw, float(created_at))

    def to_json(self) -> bytes:
        """Serialise to compact JSON."""
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> StoredResponse:
        """Parse :meth:`to_json` output (``StorageError`` when it is not)."""
        try:
            parsed = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise _corrupt("not JSON") from None
        return cls.from_dict(parsed)


@dataclass(frozen=True, slots=True)
class Pending:
    """A claimed key: the first request is in flight.

    Attributes:
        fingerprint: the first request's :func:`~coupon.idempotency.fingerprint`.
        owner: a random id of the claim; only its holder may complete or release it.
    """

    fingerprint: str
    owner: str


@dataclass(frozen=True, slots=True)
class Done:
    """A completed key: replay ``response`` to a request with the same fingerprint."""

    fingerprint: str
    response: StoredResponse


Record = Pending | Done


def encode_record(record: Record) -> bytes:
    """Serialise a record deterministically (adapters compare the bytes of a lease)."""
    data: dict[str, Any]
    if isinstance(record, Pending):
        data = {"v": 1, "state": "pending", "fp": record.fingerprint, "owner": record.owner}
    else:
        data = {
            "v": 1,
            "state": "done",
            "fp": record.fingerprint,
            "response": record.response.to_dict(),
        }
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


def decode_record(data: bytes | str) -> Record:
    """The inverse of :func:`encode_record` (``StorageError`` when it is not a record)."""
    try:
        parsed = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise _corrupt("not JSON") from None
    if not isinstance(parsed, dict) or parsed.get("v") != 1:
        raise _corrupt("unknown version")
    fp = parsed.get("fp")
    if not isinstance(fp, str):
        raise _corrupt("no fingerprint")
    if parsed.get("state") == "pending" and isinstance(parsed.get("owner"), str):
        return Pending(fp, parsed["owner"])
    if parsed.get("state") == "done":
        return Done(fp, StoredResponse.from_dict(parsed.get("response")))
    raise _corrupt("unknown state")


@runtime_checkable
class IdempotencyStore(Protocol):
    """Where claims and stored responses live; shared by every process that serves a tenant.

    Keys are already tenant-scoped (``<tenant>:<sha256(key)>``); adapters add a prefix.
    Every method raises ``StorageError`` (``CPN-DEP-003``) when the store cannot answer.
    """

    async def claim(self, key: str, pending: Pending, *, lease: float) -> Record | None:
        """Atomically store ``pending`` for ``lease`` seconds unless ``key`` has a record.

        Returns:
            ``None`` when the claim is ours, otherwise the record already there.
        """
        ...

    async def complete(
        self, key: str, pending: Pending, response: StoredResponse, *, ttl: float
    ) -> bool:
        """Replace our lease with ``Done`` for ``ttl`` seconds; False if we lost the lease."""
        ...

    async def release(self, key: str, pending: Pending) -> bool:
        """Delete our lease so the client may retry; False if we no longer hold it."""
        ...


class MemoryIdempotencyStore:
    """An in-process store for tests and the embedded Authority: bounded, with TTLs.

    When full it drops expired records first, then the oldest ones (LRU by insertion).

    Args:
        max_entries: the most records kept.
        clock: seconds since the epoch (inject a fake one in tests).
    """

    def __init__(
        self, *, max_entries: int = 10_000, clock: Callable[[], float] = time.time
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max = max_entries
        self._clock = clock
        self._records: OrderedDict[str, tuple[Record, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._records)

    def _live(self, key: str) -> Record | None:
        entry = self._records.get(key)
        if entry is None:
            return None
        if entry[1] <= self._clock():
            del self._records[key]
            return None
        return entry[0]

    def _put(self, key: str, record: Record, seconds: float) -> None:
        self._records.pop(key, None)
        self._records[key] = (record, self._clock() + seconds)
        if len(self._records) > self._max:
            now = self._clock()
            for stale in [k for k, (_, exp) in self._records.items() if exp <= now]:
                del self._records[stale]
            while len(self._records) > self._max:
                self._records.popitem(last=False)

    async def claim(self, key: str, pending: Pending, *, lease: float) -> Record | None:
        """See :meth:`IdempotencyStore.claim`."""
        existing = self._live(key)
        if existing is not None:
            return existing
        self._put(key, pending, lease)
        return None

    async def complete(
        self, key: str, pending: Pending, response: StoredResponse, *, ttl: float
    ) -> bool:
        """See :meth:`IdempotencyStore.complete`."""
        if self._live(key) != pending:
            return False
        self._put(key, Done(pending.fingerprint, response), ttl)
        return True

    async def release(self, key: str, pending: Pending) -> bool:
        """See :meth:`IdempotencyStore.release`."""
        if self._live(key) != pending:
            return False
        del self._records[key]
        return True
