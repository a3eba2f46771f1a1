"""Revocations as server-sent events: ``GET /v1/revocations/stream``.

The client parser lives in :mod:`coupon._sse` (standard library only, so the SDK can use it
without importing the Authority); it is re-exported here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Iterable
from typing import Any, Final

from coupon._sse import SseEvent, SseParser, parse_sse
from coupon.storage.base import RevocationRecord

from ._bus import (
    Fetch,
    RevocationBus,
    RevocationSource,
    aclose_quietly,
    as_fetch,
    bad_feed,
    record_from_json,
    record_to_json,
)

__all__ = [
    "SseEvent",
    "SseParser",
    "parse_sse",
    "revocation_from_sse",
    "sse_comment",
    "sse_event",
    "sse_events",
    "sse_stream",
]

MAX_MESSAGE: Final = 64 * 1024


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
    fetch = as_fetch(source)
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
        await aclose_quietly(subscription)


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


def revocation_from_sse(event: SseEvent) -> RevocationRecord:
    """The revocation carried by a ``revocation`` event.

    Raises:
        DependencyUnavailable: ``CPN-DEP-001`` for another event type or a malformed record.
    """
    if event.event != "revocation":
        raise bad_feed(f"unexpected event {event.event!r}")
    record = record_from_json(event.data)
    if event.id is not None and event.id != str(record.seq):
        raise bad_feed("event id does not match the record's seq")
    return record
