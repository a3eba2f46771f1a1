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
to ``GET /v1/revocations?after=`` and their push is the server-sent-event stream of
:mod:`._sse`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence

import structlog

from coupon.storage.base import AuditRecord, RevocationKind, RevocationRecord

from ._bus import (
    Fetch,
    RevocationBus,
    RevocationSource,
    RevocationWriter,
    aclose_quietly,
    as_fetch,
    bad_feed,
)
from ._revocation import KINDS, RevocationView

__all__ = [
    "RevocationSync",
    "Revoker",
]

_log = structlog.get_logger("coupon.authority.revocation")


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
        self._fetch = as_fetch(source)
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
                        raise bad_feed("records out of order")
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
                await aclose_quietly(subscription)
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
        record = RevocationRecord(
            kind=kind, value=value, reason=reason, actor=actor, revoked_at=now
        )
        (stored,) = await self.commit([record])
        return stored

    async def commit(
        self, records: Sequence[RevocationRecord], *, audit: AuditRecord | None = None
    ) -> list[RevocationRecord]:
        """Store ``records`` (and the audit event recording them) in one transaction, then
        enforce them here and publish them to every other process.

        Raises:
            StorageError: the store could not commit them (nothing was revoked).
        """
        stored = await self._store.add_revocations(records, audit=audit)
        self._view.apply(stored)
        if self._bus is not None:
            for record in stored:
                try:
                    await self._bus.publish(record)
                except Exception as exc:
                    self.publish_failures += 1
                    _log.warning("revocation_publish_failed", seq=record.seq, error=str(exc))
        return stored
