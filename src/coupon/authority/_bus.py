"""Revocation buses: how a revocation reaches every process within milliseconds.

:class:`InProcessBus` serves the embedded default, :class:`RedisBus` (pub/sub) several
processes. A bus may lose messages (a Redis outage); :mod:`._sync` pulls as a backstop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict
from typing import Final, Protocol, runtime_checkable

import structlog
from redis.asyncio.client import PubSub

from coupon import codes
from coupon.errors import DependencyUnavailable
from coupon.storage.base import AuditRecord, RevocationKind, RevocationRecord

from ._replay import REDIS_ERRORS, redis_client
from ._revocation import KINDS

__all__ = [
    "Fetch",
    "InProcessBus",
    "RedisBus",
    "Resync",
    "RevocationBus",
    "RevocationSource",
    "RevocationWriter",
    "aclose_quietly",
    "as_fetch",
    "bad_feed",
    "record_from_json",
    "record_to_json",
]


_log = structlog.get_logger("coupon.authority.revocation")

MAX_MESSAGE: Final = 64 * 1024
_EOL: Final = re.compile(r"\r\n|\r|\n")

#: An async pull source: ``(after, limit) -> records with seq > after, ascending``.
Fetch = Callable[[int, int], Awaitable[list[RevocationRecord]]]
#: Called by a bus whenever messages may have been missed (subscribed, reconnected, overflow).
Resync = Callable[[], None]


@runtime_checkable
class RevocationSource(Protocol):
    """Anything with the storage port's ``revocations_after`` (the Authority's store)."""

    async def revocations_after(self, seq: int, *, limit: int) -> list[RevocationRecord]: ...


class RevocationWriter(Protocol):
    """The one storage call the revoke path needs."""

    async def add_revocations(
        self, records: Sequence[RevocationRecord], *, audit: AuditRecord | None = None
    ) -> list[RevocationRecord]: ...


async def aclose_quietly(closeable: object, *, timeout: float = 2.0) -> None:
    """Close an async generator or a redis-py ``PubSub`` (whose ``aclose`` is untyped).

    Bounded: closing a subscription whose connection is mid-read can wait on that read,
    and a shutdown must not hang on it.
    """
    aclose = getattr(closeable, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(aclose(), timeout)


def as_fetch(source: RevocationSource | Fetch) -> Fetch:
    if isinstance(source, RevocationSource):
        store = source
        return lambda after, limit: store.revocations_after(after, limit=limit)
    return source


# -- the wire format ---------------------------------------------------------------------------


def record_to_json(record: RevocationRecord) -> str:
    """Encode a stored revocation as one line of compact JSON."""
    return json.dumps(asdict(record), separators=(",", ":"), sort_keys=True)


def bad_feed(reason: str) -> DependencyUnavailable:
    return DependencyUnavailable(codes.UNAVAILABLE_REVOCATION, f"revocation feed: {reason}")


def record_from_json(data: str | bytes) -> RevocationRecord:
    """Decode :func:`record_to_json` output from the bus or the feed.

    Raises:
        DependencyUnavailable: ``CPN-DEP-001`` when the message is not a stored revocation.
    """
    if len(data) > MAX_MESSAGE:
        raise bad_feed("message too large")
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        raise bad_feed("message is not JSON") from None
    if not isinstance(obj, dict):
        raise bad_feed("message is not a JSON object")
    seq, kind, revoked_at = obj.get("seq"), obj.get("kind"), obj.get("revoked_at")
    texts = [obj.get(name) for name in ("value", "reason", "actor")]
    if type(seq) is not int or seq <= 0 or type(revoked_at) is not int:
        raise bad_feed("seq and revoked_at must be integers (seq > 0)")
    if kind not in KINDS:
        raise bad_feed(f"unknown kind {kind!r}")
    value, reason, actor = texts
    if not (isinstance(value, str) and isinstance(reason, str) and isinstance(actor, str)):
        raise bad_feed("value, reason and actor must be strings")
    typed_kind: RevocationKind = kind
    return RevocationRecord(typed_kind, value, reason, actor, revoked_at, seq)


# -- buses -------------------------------------------------------------------------------------


class RevocationBus(Protocol):
    """Pushes stored revocations to every subscribed process (best effort, fast)."""

    async def publish(self, record: RevocationRecord) -> None:
        """Send ``record`` to every current subscriber.

        Raises:
            DependencyUnavailable: the bus is unreachable (the record is still durable).
        """
        ...

    def subscribe(self, *, on_resync: Resync | None = None) -> AsyncIterator[RevocationRecord]:
        """Yield every record published after the subscription is established.

        ``on_resync()`` is called when the subscription is established and whenever messages
        may have been lost since (a reconnect, an overflow): the consumer should pull.
        """
        ...

    async def close(self) -> None:
        """Stop every subscription and release connections."""
        ...


class _Subscriber:
    __slots__ = ("closed", "lost", "on_resync", "queue")

    def __init__(self, size: int, on_resync: Resync | None) -> None:
        self.queue: asyncio.Queue[RevocationRecord | None] = asyncio.Queue(size)
        self.lost = False
        self.closed = False
        self.on_resync = on_resync


class InProcessBus:
    """The embedded bus: one bounded asyncio queue per subscriber, in this process.

    A subscriber that falls ``max_queue`` messages behind loses messages and is told to
    resync rather than letting the queue grow without bound.
    """

    def __init__(self, *, max_queue: int = 10_000) -> None:
        self._max_queue = max_queue
        self._subscribers: set[_Subscriber] = set()
        self._closed = False

    async def publish(self, record: RevocationRecord) -> None:
        """See :meth:`RevocationBus.publish`."""
        if self._closed:
            raise RuntimeError("the bus is closed")
        for sub in self._subscribers:
            try:
                sub.queue.put_nowait(record)
            except asyncio.QueueFull:
                sub.lost = True

    def subscribe(self, *, on_resync: Resync | None = None) -> AsyncIterator[RevocationRecord]:
        """See :meth:`RevocationBus.subscribe`; the subscription starts at this call."""
        if self._closed:
            raise RuntimeError("the bus is closed")
        sub = _Subscriber(self._max_queue, on_resync)
        self._subscribers.add(sub)
        if on_resync is not None:
            on_resync()
        return self._drain(sub)

    async def _drain(self, sub: _Subscriber) -> AsyncIterator[RevocationRecord]:
        try:
            while not (sub.closed and sub.queue.empty()):
                item = await sub.queue.get()
                if item is None:
                    break
                if sub.lost:
                    sub.lost = False
                    if sub.on_resync is not None:
                        sub.on_resync()
                yield item
        finally:
            self._subscribers.discard(sub)

    async def close(self) -> None:
        """See :meth:`RevocationBus.close`."""
        self._closed = True
        for sub in self._subscribers:
            sub.closed = True
            if not sub.queue.full():
                sub.queue.put_nowait(None)  # wake a waiting reader; a full queue drains first


class RedisBus:
    """Redis pub/sub on one channel; every process subscribes with its own connection.

    Pub/sub drops messages while a subscriber is disconnected, so after every (re)subscription
    the subscriber is told to resync (pull). A dead connection is noticed by a ``PING`` every
    ``ping_interval`` seconds without traffic; reconnects back off exponentially with jitter
    from ``backoff`` to ``max_backoff`` seconds.
    """

    def __init__(
        self,
        url: str,
        channel: str = "coupon:revocations",
        *,
        timeout: float = 2.0,
        backoff: float = 0.05,
        max_backoff: float = 2.0,
        ping_interval: float = 5.0,
        client_name: str | None = None,
    ) -> None:
        self.channel = channel
        self._client = redis_client(url, timeout=timeout, client_name=client_name)
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._ping_interval = ping_interval
        self._pubsubs: set[PubSub] = set()
        self._closed = False
        #: How many times a subscription was established (1 + reconnects), for metrics.
        self.subscriptions = 0

    async def publish(self, record: RevocationRecord) -> None:
        """See :meth:`RevocationBus.publish`."""
        try:
            await self._client.publish(self.channel, record_to_json(record))
        except REDIS_ERRORS as exc:
            raise DependencyUnavailable(
                codes.UNAVAILABLE_REVOCATION, f"revocation bus unreachable: {type(exc).__name__}"
            ) from exc

    async def subscribe(
        self, *, on_resync: Resync | None = None
    ) -> AsyncIterator[RevocationRecord]:
        """See :meth:`RevocationBus.subscribe`; never gives up until the bus is closed."""
        backoff = self._backoff
        while not self._closed:
            pubsub = self._client.pubsub()
            self._pubsubs.add(pubsub)
            try:
                await pubsub.subscribe(self.channel)
                pinged = False
                while True:
                    message = await pubsub.get_message(timeout=self._ping_interval)
                    if message is None:
                        if pinged:
                            raise ConnectionError("no answer to PING")
                        await pubsub.ping()
                        pinged = True
                        continue
                    pinged = False
                    if message["type"] == "subscribe":
                        backoff = self._backoff
                        self.subscriptions += 1
                        if on_resync is not None:
                            on_resync()
                    elif message["type"] == "message":
                        try:
                            record = record_from_json(message["data"])
                        except DependencyUnavailable as exc:
                            _log.warning("revocation_bus_bad_message", reason=exc.reason)
                            if on_resync is not None:
                                on_resync()
                            continue
                        yield record
            except Exception as exc:
                if self._closed:
                    return
                if not isinstance(exc, REDIS_ERRORS):
                    raise
                _log.warning("revocation_bus_disconnected", error=type(exc).__name__)
            finally:
                self._pubsubs.discard(pubsub)
                await aclose_quietly(pubsub)
            await asyncio.sleep(backoff * (0.5 + random.random() / 2))  # noqa: S311
            backoff = min(backoff * 2, self._max_backoff)

    async def close(self) -> None:
        """See :meth:`RevocationBus.close`."""
        self._closed = True
        for pubsub in list(self._pubsubs):
            await aclose_quietly(pubsub)
        await self._client.aclose()
