"""Revocation fan-out: store durably, then push to every process, with the pull feed as backstop.

The write path (:class:`Revoker`)::

    store.add_revocation  ->  acknowledge-able (durable, has a seq)
    view.apply            ->  this process enforces it
    bus.publish           ->  every other process enforces it within milliseconds

The read path of every process (:class:`RevocationSync`) subscribes to the bus and also pulls
``revocations_after(view.cursor)`` every ``poll_interval``. Pushes make revocation fast; pulls
make it certain: a lost publish, a Redis outage or a ``seq`` gap is repaired by the next pull,
and every successful pull confirms the view current (:meth:`RevocationView.mark_fresh`). A view
that no pull has confirmed for ``max_staleness`` seconds denies everything.

The same :class:`RevocationSync` serves remote subscribers: their pull source is an HTTP call
to ``GET /v1/revocations?after=`` and their push is the server-sent-event stream that
:func:`sse_stream` produces and :class:`SseParser` reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any, Final, Protocol, runtime_checkable

import structlog
from redis.asyncio.client import PubSub

from coupon import codes
from coupon.errors import DependencyUnavailable
from coupon.storage.base import RevocationKind, RevocationRecord

from ._replay import REDIS_ERRORS, redis_client
from ._revocation import KINDS, RevocationView

__all__ = [
    "Fetch",
    "InProcessBus",
    "RedisBus",
    "Resync",
    "RevocationBus",
    "RevocationSource",
    "RevocationSync",
    "RevocationWriter",
    "Revoker",
    "SseEvent",
    "SseParser",
    "parse_sse",
    "record_from_json",
    "record_to_json",
    "revocation_from_sse",
    "sse_comment",
    "sse_event",
    "sse_events",
    "sse_stream",
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

    async def add_revocation(self, record: RevocationRecord) -> RevocationRecord: ...


async def _aclose(closeable: object, *, timeout: float = 2.0) -> None:
    """Close an async generator or a redis-py ``PubSub`` (whose ``aclose`` is untyped).

    Bounded: closing a subscription whose connection is mid-read can wait on that read,
    and a shutdown must not hang on it.
    """
    aclose = getattr(closeable, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(aclose(), timeout)


def _as_fetch(source: RevocationSource | Fetch) -> Fetch:
    if isinstance(source, RevocationSource):
        store = source
        return lambda after, limit: store.revocations_after(after, limit=limit)
    return source


# -- the wire format ---------------------------------------------------------------------------


def record_to_json(record: RevocationRecord) -> str:
    """Encode a stored revocation as one line of compact JSON."""
    return json.dumps(asdict(record), separators=(",", ":"), sort_keys=True)


def _bad(reason: str) -> DependencyUnavailable:
    return DependencyUnavailable(codes.UNAVAILABLE_REVOCATION, f"revocation feed: {reason}")


def record_from_json(data: str | bytes) -> RevocationRecord:
    """Decode :func:`record_to_json` output from the bus or the feed.

    Raises:
        DependencyUnavailable: ``CPN-DEP-001`` when the message is not a stored revocation.
    """
    if len(data) > MAX_MESSAGE:
        raise _bad("message too large")
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        raise _bad("message is not JSON") from None
    if not isinstance(obj, dict):
        raise _bad("message is not a JSON object")
    seq, kind, revoked_at = obj.get("seq"), obj.get("kind"), obj.get("revoked_at")
    texts = [obj.get(name) for name in ("value", "reason", "actor")]
    if type(seq) is not int or seq <= 0 or type(revoked_at) is not int:
        raise _bad("seq and revoked_at must be integers (seq > 0)")
    if kind not in KINDS:
        raise _bad(f"unknown kind {kind!r}")
    value, reason, actor = texts
    if not (isinstance(value, str) and isinstance(reason, str) and isinstance(actor, str)):
        raise _bad("value, reason and actor must be strings")
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
                await _aclose(pubsub)
            await asyncio.sleep(backoff * (0.5 + random.random() / 2))  # noqa: S311
            backoff = min(backoff * 2, self._max_backoff)

    async def close(self) -> None:
        """See :meth:`RevocationBus.close`."""
        self._closed = True
        for pubsub in list(self._pubsubs):
            await _aclose(pubsub)
        await self._client.aclose()


# -- the read path -----------------------------------------------------------------------------


class RevocationSync:
    """Keeps one :class:`RevocationView` current: push from the bus, pull as backstop.

    Args:
        view: the view to feed.
        source: ``store`` (anything with ``revocations_after``) or an async
            ``fetch(after, limit)``, e.g. an HTTP call to ``GET /v1/revocations?after=``.
        bus: the push channel, or None to rely on pulls alone.
        poll_interval: seconds between pulls (the heartbeat that keeps the view fresh).
        clock: the time source for freshness (seconds since the epoch).
        page_size: records per pull request.
        gap_timeout: how long a ``seq`` gap the source confirms (a later record exists) may
            stay open before it is taken for a rolled-back insert and skipped. Until then each
            pull starts below the gap, so a transaction that commits late is still picked up.
    """

    def __init__(
        self,
        view: RevocationView,
        source: RevocationSource | Fetch,
        bus: RevocationBus | None,
        *,
        poll_interval: float = 1.0,
        clock: Callable[[], float] = time.time,
        page_size: int = 1000,
        gap_timeout: float = 30.0,
    ) -> None:
        self._view = view
        self._fetch = _as_fetch(source)
        self._bus = bus
        self._poll_interval = poll_interval
        self._clock = clock
        self._page_size = page_size
        self._gap_timeout = gap_timeout
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._subscribed = asyncio.Event()
        self._pulled = asyncio.Event()
        self._epoch = 0  # subscriptions (re)established so far
        self._pulled_epoch = -1  # the epoch at the start of the last successful pull
        self._pull_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._gap_seen: dict[int, float] = {}
        self._source_highest = 0
        #: Counters for metrics and tests.
        self.pulls = 0
        self.pull_failures = 0
        self.pushes = 0
        self.resyncs = 0
        self.last_error: str | None = None

    @property
    def view(self) -> RevocationView:
        """The view this sync feeds."""
        return self._view

    def start(self) -> None:
        """Start the background tasks (call from a running event loop)."""
        if self._tasks:
            raise RuntimeError("already started")
        self._view.add_listener(self._changed.set)
        self._tasks.append(asyncio.create_task(self._poll_loop(), name="revocation-poll"))
        if self._bus is not None:
            self._tasks.append(asyncio.create_task(self._push_loop(), name="revocation-push"))

    async def stop(self) -> None:
        """Stop the background tasks and wait for them to finish (before closing the bus)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if tasks:
            self._view.remove_listener(self._changed.set)

    async def __aenter__(self) -> RevocationSync:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def ready(self, timeout: float) -> None:
        """Wait until the view is complete: subscribed (with a bus), then pulled once.

        The pull must have started after the subscription was established, so nothing
        stored before this returns can be missing, and everything after arrives by push.

        Raises:
            TimeoutError: not ready within ``timeout`` seconds.
        """
        async with asyncio.timeout(timeout):
            if self._bus is not None:
                await self._subscribed.wait()
            while self._pulled_epoch < self._epoch or self._pulled_epoch < 0:
                self._pulled.clear()
                await self._pulled.wait()

    async def wait_until(self, seq: int, timeout: float) -> None:
        """Wait until revocation ``seq`` is applied to the view.

        Raises:
            TimeoutError: it was not applied within ``timeout`` seconds.
        """
        async with asyncio.timeout(timeout):
            while not self._view.known(seq):
                self._changed.clear()
                await self._changed.wait()

    def request_pull(self) -> None:
        """Ask the background task to pull now instead of at the next interval."""
        self._wake.set()

    async def pull(self) -> int:
        """Pull everything after the view's cursor; return how many records were new.

        On success the view is marked fresh as of the moment the pull started.

        Raises:
            Exception: whatever the source raises; nothing is marked fresh then.
        """
        async with self._pull_lock:
            epoch = self._epoch
            started = self._clock()
            after = self._view.cursor
            new = 0
            while True:
                batch = await self._fetch(after, self._page_size)
                previous = after
                for record in batch:
                    if record.seq <= previous:
                        raise _bad("records out of order")
                    previous = record.seq
                new += self._view.apply(batch)
                if batch:
                    self._source_highest = max(self._source_highest, batch[-1].seq)
                if len(batch) < self._page_size:
                    break
                after = batch[-1].seq
            self._settle_gaps(started)
            self._view.mark_fresh(started)
            self.pulls += 1
            self._pulled_epoch = max(self._pulled_epoch, epoch)
            self._pulled.set()
            return new

    def _settle_gaps(self, now: float) -> None:
        seen: dict[int, float] = {}
        skipping = True
        for _low, high in self._view.gaps():
            if high >= self._source_highest:
                break  # only the source can confirm a gap, not a pushed message
            first = self._gap_seen.get(high, now)
            if skipping and now - first >= self._gap_timeout:
                _log.warning("revocation_gap_skipped", through=high)
                self._view.skip(high)
            else:
                skipping = False
                seen[high] = first
        self._gap_seen = seen

    def _on_resync(self) -> None:
        self.resyncs += 1
        self._epoch += 1
        self._subscribed.set()
        self.request_pull()

    async def _poll_loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.pull()
            except Exception as exc:
                self.pull_failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                _log.warning("revocation_pull_failed", error=self.last_error)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_interval):
                    await self._wake.wait()

    async def _push_loop(self) -> None:
        assert self._bus is not None
        while True:
            subscription: AsyncIterator[RevocationRecord] | None = None
            try:
                subscription = self._bus.subscribe(on_resync=self._on_resync)
                async for record in subscription:
                    self.pushes += 1
                    jumped = record.seq > self._view.highest + 1
                    self._view.apply([record])
                    if jumped:
                        self.request_pull()
                return  # the bus was closed
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                _log.warning("revocation_push_failed", error=self.last_error)
            finally:
                await _aclose(subscription)
            await asyncio.sleep(self._poll_interval)


# -- the write path ----------------------------------------------------------------------------


class Revoker:
    """What the Authority's revoke call does: commit, enforce locally, then publish.

    The caller acknowledges only after :meth:`revoke` returns, i.e. after the commit, so an
    acknowledged revocation survives a crash. A failed publish is logged and counted, not
    raised: every other process converges at its next pull.
    """

    def __init__(
        self, store: RevocationWriter, view: RevocationView, bus: RevocationBus | None
    ) -> None:
        self._store = store
        self._view = view
        self._bus = bus
        self.publish_failures = 0

    async def revoke(
        self, kind: RevocationKind, value: str, *, reason: str, actor: str, now: int
    ) -> RevocationRecord:
        """Revoke ``kind``/``value`` durably and return the stored record (with its ``seq``).

        Raises:
            StorageError: the store could not commit it (nothing was revoked).
            ValueError: ``kind`` is not one of jti, lineage, subject, tenant, kid.
        """
        if kind not in KINDS:
            raise ValueError(f"unknown revocation kind {kind!r}")
        stored = await self._store.add_revocation(
            RevocationRecord(kind=kind, value=value, reason=reason, actor=actor, revoked_at=now)
        )
        self._view.apply([stored])
        if self._bus is not None:
            try:
                await self._bus.publish(stored)
            except Exception as exc:
                self.publish_failures += 1
                _log.warning("revocation_publish_failed", seq=stored.seq, error=str(exc))
        return stored


# -- server-sent events ------------------------------------------------------------------------


def sse_event(record: RevocationRecord) -> str:
    """One revocation as a server-sent event (``id`` is the ``seq``)."""
    return f"id: {record.seq}\nevent: revocation\ndata: {record_to_json(record)}\n\n"


def sse_events(records: Iterable[RevocationRecord]) -> str:
    """Several revocations as consecutive server-sent events."""
    return "".join(sse_event(record) for record in records)


def sse_comment(text: str = "heartbeat") -> str:
    """A comment line: keeps proxies from closing an idle stream; clients ignore it."""
    if "\n" in text or "\r" in text:
        raise ValueError("an SSE comment is one line")
    return f": {text}\n\n"


async def _fetch_all(fetch: Fetch, after: int, page_size: int) -> list[RevocationRecord]:
    records: list[RevocationRecord] = []
    while True:
        batch = [r for r in await fetch(after, page_size) if r.seq > after]
        records.extend(batch)
        if len(batch) < page_size:
            return records
        after = batch[-1].seq


async def sse_stream(
    source: RevocationSource | Fetch,
    bus: RevocationBus,
    *,
    after: int = 0,
    heartbeat: float = 15.0,
    page_size: int = 1000,
    max_queue: int = 1000,
    closing: asyncio.Event | None = None,
) -> AsyncGenerator[str, None]:
    """The body of ``GET /v1/revocations/stream``: backlog after ``after``, then live pushes.

    The stream ends when ``closing`` is set (the server is shutting down), so a graceful
    shutdown does not wait for long-lived subscribers; they reconnect with ``Last-Event-ID``.

    ``after`` is the client's ``Last-Event-ID``. Every ``heartbeat`` seconds without traffic a
    comment is sent and the source is pulled again, so a lost publish reaches the client too.
    Records arrive in ``seq`` order without duplicates; a push past a gap is sent after a pull.
    """
    fetch = _as_fetch(source)
    queue: asyncio.Queue[RevocationRecord | None] = asyncio.Queue(max_queue)
    lost = True  # start with the backlog

    def resync() -> None:
        nonlocal lost
        try:
            queue.put_nowait(None)
        except asyncio.QueueFull:
            lost = True

    subscription = bus.subscribe(on_resync=resync)

    async def read() -> None:
        nonlocal lost
        async for record in subscription:
            try:
                queue.put_nowait(record)
            except asyncio.QueueFull:
                lost = True

    reader = asyncio.create_task(read(), name="revocation-sse-reader")
    last = after
    try:
        yield sse_comment("connected")
        while True:
            if lost:
                lost = False
                for record in await _fetch_all(fetch, last, page_size):
                    yield sse_event(record)
                    last = record.seq
            item = await _next_item(queue, closing, heartbeat)
            if item is _CLOSED:
                yield sse_comment("closing")
                return
            if item is _TIMEOUT:
                lost = True
                yield sse_comment()
                continue
            assert not isinstance(item, _Signal)
            if item is None or item.seq > last + 1:
                lost = True
            elif item.seq == last + 1:
                yield sse_event(item)
                last = item.seq
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(reader, 2.0)
        await _aclose(subscription)


class _Signal:
    """A non-record outcome of waiting for the next record."""


_CLOSED = _Signal()
_TIMEOUT = _Signal()


async def _next_item(
    queue: asyncio.Queue[RevocationRecord | None], closing: asyncio.Event | None, timeout: float
) -> RevocationRecord | _Signal | None:
    get = asyncio.ensure_future(queue.get())
    waiters: set[asyncio.Future[Any]] = {get}
    stop = asyncio.ensure_future(closing.wait()) if closing is not None else None
    if stop is not None:
        waiters.add(stop)
    try:
        done, _ = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            if not waiter.done():
                waiter.cancel()
    if get in done:
        return get.result()
    return _CLOSED if stop is not None and stop in done else _TIMEOUT


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One dispatched server-sent event (``id`` is the last event id seen, per WHATWG)."""

    event: str
    data: str
    id: str | None = None


class SseParser:
    """An incremental ``text/event-stream`` parser (WHATWG HTML §9.2.6) for clients.

    Feed it decoded chunks as they arrive; it returns the events completed so far. Comment
    lines are counted in :attr:`comments` (heartbeats) and otherwise ignored.
    """

    def __init__(self) -> None:
        self._buffer = ""
        self._after_cr = False
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        self.comments = 0

    def feed(self, chunk: str) -> list[SseEvent]:
        """Parse ``chunk``; return the events it completed."""
        events: list[SseEvent] = []
        if not chunk:
            return events
        if self._after_cr and chunk[0] == "\n":
            chunk = chunk[1:]  # the second half of a CRLF split across chunks
        self._after_cr = False
        buffer = self._buffer + chunk
        start = 0
        for match in _EOL.finditer(buffer):
            self._line(buffer[start : match.start()], events)
            start = match.end()
        self._after_cr = buffer.endswith("\r")
        self._buffer = buffer[start:]
        return events

    def _line(self, line: str, events: list[SseEvent]) -> None:
        if not line:
            if self._data:
                events.append(SseEvent(self._event or "message", "\n".join(self._data), self._id))
            self._data, self._event = [], ""
            return
        if line.startswith(":"):
            self.comments += 1
            return
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id" and "\0" not in value:
            self._id = value


def parse_sse(text: str) -> list[SseEvent]:
    """Parse a whole ``text/event-stream`` body (an unterminated last event is dropped)."""
    return SseParser().feed(text)


def revocation_from_sse(event: SseEvent) -> RevocationRecord:
    """The revocation carried by a ``revocation`` event.

    Raises:
        DependencyUnavailable: ``CPN-DEP-001`` for another event type or a malformed record.
    """
    if event.event != "revocation":
        raise _bad(f"unexpected event {event.event!r}")
    record = record_from_json(event.data)
    if event.id is not None and event.id != str(record.seq):
        raise _bad("event id does not match the record's seq")
    return record
