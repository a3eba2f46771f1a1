"""Keep a service's copy of the Authority's revocations current: pushed, with pulls as fallback.

:class:`RevocationSync` fills a :class:`SyncedRevocations` store, which the
:class:`~coupon.token.Verifier` consults and which fails closed (``CPN-DEP-001``) once it has not
been confirmed current for ``max_staleness`` seconds.

* **Push** (the default): after one pull, a background task follows
  ``GET /v1/revocations/stream?after=<cursor>&heartbeat=<h>`` (server-sent events) and applies
  each revocation as it arrives. Heartbeats confirm the store current; ``h`` is a third of
  ``max_staleness``, within the 1 to 60 s the Authority accepts.
* **Pull**: ``GET /v1/revocations?after=<cursor>`` every ``poll_interval`` whenever the stream
  does not prove the store current: while it connects, while it is down (connect error, a
  status other than 200, a read error, or silence for ``read_timeout``), or while it is so busy
  that the server sends no heartbeat. With ``push=False`` only pulls run.

A failed stream is retried with capped exponential backoff and jitter, resuming with
``Last-Event-ID``. If the stream and the pulls both fail, the store goes stale and fails closed.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import math
import random
import time
from collections.abc import Callable, Iterable
from typing import Any, Final

import httpx

from coupon import codes
from coupon._sse import SseEvent, SseParser
from coupon.errors import DependencyUnavailable
from coupon.observability import get_logger
from coupon.token import MemoryRevocations, RevocationFacts

__all__ = ["RevocationSync", "SyncedRevocations"]

log = get_logger("coupon.sdk")
_PAGE: Final = 1000
#: The heartbeats the Authority accepts, in seconds.
_MIN_HEARTBEAT: Final = 1.0
_MAX_HEARTBEAT: Final = 60.0
#: Stream bytes tolerated without a complete event or comment (a record is at most 64 KiB).
_MAX_PENDING: Final = 1 << 20


class SyncedRevocations:
    """A ``RevocationChecker`` fed by :class:`RevocationSync`; fails closed when stale.

    Known revocations are reported even when stale (a denial either way). Otherwise, if the
    store was never confirmed current, or not within ``max_staleness`` seconds (by ``clock``),
    :meth:`revoked` raises ``DependencyUnavailable`` (``CPN-DEP-001``).
    """

    def __init__(
        self, *, max_staleness: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not max_staleness > 0:
            raise ValueError("max_staleness must be positive")
        self.max_staleness = max_staleness
        self._clock = clock
        self._table = MemoryRevocations()
        self._fresh_at: float | None = None
        self.cursor = 0

    def apply(self, entries: Iterable[dict[str, Any]]) -> None:
        """Enforce feed entries (``{seq, kind, value, reason, revoked_at, ...}``)."""
        for entry in entries:
            self._table.add(
                str(entry["kind"]),
                str(entry["value"]),
                reason=str(entry.get("reason", "")),
                revoked_at=int(entry["revoked_at"]),
            )
            self.cursor = max(self.cursor, int(entry["seq"]))

    def mark_fresh(self, at: float) -> None:
        """Record that at ``at`` (by ``clock``) the store held every revocation."""
        if self._fresh_at is None or at > self._fresh_at:
            self._fresh_at = at

    def staleness(self) -> float:
        """Seconds since the store was last confirmed current; infinite if it never was."""
        return math.inf if self._fresh_at is None else self._clock() - self._fresh_at

    def revoked(self, facts: RevocationFacts, *, now: float) -> str | None:
        """The revocation reason, None if the coupon stands; raises when stale."""
        reason = self._table.revoked(facts, now=now)
        if reason is not None:
            return reason
        if self._fresh_at is None:
            raise DependencyUnavailable(
                codes.UNAVAILABLE_REVOCATION, "revocation state not yet synchronised"
            )
        age = self.staleness()
        if age > self.max_staleness:
            raise DependencyUnavailable(
                codes.UNAVAILABLE_REVOCATION,
                f"revocation state is {age:.1f}s old (bound {self.max_staleness:g}s)",
            )
        return None


class _StreamError(Exception):
    """The stream broke the protocol: a bad status or content type, a malformed event."""


_PULL_ERRORS: Final = (httpx.HTTPError, ValueError, KeyError, TypeError)
_STREAM_ERRORS: Final = (*_PULL_ERRORS, TimeoutError, RecursionError, _StreamError)


class RevocationSync:
    """Keeps :attr:`store` current from the Authority's revocation stream and pull feed.

    Args:
        base_url: the Authority's base URL.
        client: the httpx client the requests go through.
        api_key: an API key with role verifier, issuer or auditor.
        poll_interval: seconds between pulls while pulling (always, with ``push=False``).
        max_staleness: seconds without confirmation after which the store fails closed.
        push: follow the server-sent event stream, pulling only when it does not prove the
            store current.
        clock: a monotonic clock, in seconds.

    Attributes that tune the stream, set before :meth:`start`: ``heartbeat`` (asked of the
    server), ``read_timeout`` (the silence after which the stream counts as dead),
    ``retry_initial`` and ``retry_max`` (the reconnect backoff). Counters for tests and
    metrics: ``pulls`` (attempted), ``stream_connects`` (streams opened), ``pushed``
    (revocations applied from the stream), ``heartbeats``; ``streaming`` is true from the first
    heartbeat of a stream until it fails.
    """

    def __init__(
        self,
        base_url: str,
        *,
        client: httpx.AsyncClient,
        api_key: str,
        poll_interval: float = 1.0,
        max_staleness: float = 10.0,
        push: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        base = base_url.rstrip("/")
        self._url = base + "/v1/revocations"
        self._stream_url = base + "/v1/revocations/stream"
        self._client = client
        self._api_key = api_key
        self.poll_interval = poll_interval
        self.push = push
        self._clock = clock
        self.store = SyncedRevocations(max_staleness=max_staleness, clock=clock)
        # Heartbeats keep the store about 2h old at most (see _on_heartbeat); a third of the bound
        # leaves another h to notice a dead stream and pull.
        self.heartbeat = max(_MIN_HEARTBEAT, min(_MAX_HEARTBEAT, max_staleness / 3))
        self.read_timeout = self.heartbeat + max(1.0, self.heartbeat / 4)
        self.retry_initial = 0.5
        self.retry_max = 30.0
        self.pulls = 0
        self.stream_connects = 0
        self.pushed = 0
        self.heartbeats = 0
        self.streaming = False
        self._heartbeat_at: float | None = None  # the last heartbeat of the current stream
        self._last_event_id: str | None = None
        self._down_reported = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def pull(self) -> None:
        """Pull every page after the store's cursor, then mark the store fresh."""
        self.pulls += 1
        started = self._clock()
        while True:
            response = await self._client.get(
                self._url,
                params={"after": self.store.cursor, "limit": _PAGE},
                headers={"X-API-Key": self._api_key},
            )
            response.raise_for_status()
            body = response.json()
            entries = body.get("revocations", [])
            self.store.apply(entries)
            self.store.cursor = max(self.store.cursor, int(body.get("cursor", 0)))
            if len(entries) < _PAGE:
                break
        self.store.mark_fresh(started)

    async def start(self) -> None:
        """Pull once (errors are logged), then keep the store current in the background."""
        if self._task is None:
            await self._pull_logged()
            self._wake = asyncio.Event()  # bound to this event loop
            self._task = asyncio.create_task(self._run(), name="coupon-revocation-sync")

    async def stop(self) -> None:
        """Stop the background task (and the stream)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.streaming = False
        self._heartbeat_at = None

    async def _run(self) -> None:
        if not self.push:
            await self._poll()
            return
        async with asyncio.TaskGroup() as group:
            group.create_task(self._poll(), name="coupon-revocation-pull")
            group.create_task(self._follow(), name="coupon-revocation-stream")

    # -- pulls -----------------------------------------------------------------------------------

    async def _pull_logged(self) -> None:
        try:
            await self.pull()
        except _PULL_ERRORS as exc:
            log.warning("revocation_pull_failed", url=self._url, error=str(exc))

    async def _poll(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)
            self._wake.clear()
            if self._pull_needed():
                await self._pull_logged()

    def _pull_needed(self) -> bool:
        at = self._heartbeat_at
        if at is None or self._clock() - at > self.read_timeout:
            return True  # no stream, or none that proved the store current lately
        # Heartbeats alone cannot keep the store fresh when max_staleness is under 3 s (the
        # heartbeat does not go below 1 s): pull as well when it would expire before next turn.
        return self.store.staleness() + self.poll_interval >= self.store.max_staleness

    # -- the stream ------------------------------------------------------------------------------

    async def _follow(self) -> None:
        failures = 0
        while True:
            try:
                await self._stream()
                problem = "the server ended the stream"
            except TimeoutError:
                problem = f"nothing received for {self.read_timeout:g}s"
            except _StreamError as exc:
                problem = str(exc)
            except _STREAM_ERRORS as exc:
                problem = f"{type(exc).__name__}: {exc}"
            # A stream that proved itself starts the backoff afresh; one that keeps failing
            # before its first heartbeat (a flapping proxy) backs off further each time.
            failures = 1 if self._heartbeat_at is not None else failures + 1
            self._stream_down(problem)
            await asyncio.sleep(self._backoff(failures))

    def _backoff(self, failures: int) -> float:
        # Equal jitter: replicas that lost the Authority together do not return together.
        ceiling = min(self.retry_max, self.retry_initial * 2.0 ** min(failures - 1, 32))
        return ceiling * (0.5 + random.random() / 2)  # noqa: S311

    async def _stream(self) -> None:
        headers = {"X-API-Key": self._api_key, "Accept": "text/event-stream"}
        if self._last_event_id is not None:
            headers["Last-Event-ID"] = self._last_event_id
        params: dict[str, int | float] = {"after": self.store.cursor, "heartbeat": self.heartbeat}
        # httpx's read timeout would cut a quiet stream at the client's usual timeout (and
        # MockTransport ignores it): the deadline below, pushed back by every chunk, replaces it.
        base = self._client.timeout
        timeout = httpx.Timeout(connect=base.connect, read=None, write=base.write, pool=base.pool)
        loop = asyncio.get_running_loop()
        previous = self._clock()  # when the last data arrived (first: the request was sent)
        async with (
            asyncio.timeout(self.read_timeout) as silence,
            self._client.stream(
                "GET", self._stream_url, params=params, headers=headers, timeout=timeout
            ) as response,
        ):
            if response.status_code != 200:
                raise _StreamError(f"HTTP {response.status_code}")
            content_type = response.headers.get("content-type", "")
            if not content_type.startswith("text/event-stream"):
                raise _StreamError(f"content type {content_type!r}")
            self.stream_connects += 1
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            comments: list[str] = []
            parser = SseParser(on_comment=comments.append)
            pending = 0
            async for chunk in response.aiter_bytes():
                received = self._clock()
                silence.reschedule(loop.time() + self.read_timeout)
                events = parser.feed(decoder.decode(chunk))
                for event in events:
                    self._on_event(event)
                if "heartbeat" in comments:
                    self._on_heartbeat(received, previous)
                previous = received
                pending = 0 if events or comments else pending + len(chunk)
                comments.clear()
                if pending > _MAX_PENDING:
                    raise _StreamError(f"{pending} bytes without a complete event")

    def _on_event(self, event: SseEvent) -> None:
        if event.event != "revocation":
            return  # an event type from a newer Authority; heartbeats still decide freshness
        entry = json.loads(event.data)
        if not isinstance(entry, dict):
            raise _StreamError("a revocation event that is not a JSON object")
        if event.id is not None and event.id != str(entry.get("seq")):
            raise _StreamError(f"event id {event.id!r} does not match seq {entry.get('seq')!r}")
        self.store.apply([entry])
        self.pushed += 1
        if event.id is not None:
            self._last_event_id = event.id

    def _on_heartbeat(self, received: float, previous: float) -> None:
        # The server sends a heartbeat only after its queue of publishes stayed empty for
        # `heartbeat` seconds, and the stream is ordered, so every publish it had before that
        # quiet interval was applied here first. A publish it never got (a lost bus message)
        # is covered too: a later publish would have shown the seq gap and made it pull at
        # once; otherwise its last pull (after its previous message: the last heartbeat, or
        # the connect comment before the backlog) came just before the interval began.
        # So a heartbeat received at R vouches for every revocation committed before the
        # earlier of R - heartbeat and `previous`, when the data before it arrived (about when
        # the server sent its previous message). The second bound absorbs the server's pull
        # time and a server that waits longer than asked. Not subtracted: the one-way network
        # and bus latency, milliseconds against a heartbeat of at least 1 s.
        # Events prove nothing about time (a later revocation may still be queued or lost), so
        # a stream too busy to send heartbeats leaves freshness to the pulls (_pull_needed).
        self.store.mark_fresh(min(received - self.heartbeat, previous))
        self.heartbeats += 1
        self._heartbeat_at = received
        if not self.streaming:
            self.streaming = True
            self._down_reported = False
            log.info("revocation_stream_up", url=self._stream_url, heartbeat=self.heartbeat)

    def _stream_down(self, problem: str) -> None:
        self._heartbeat_at = None
        if self.streaming or not self._down_reported:
            log.warning(
                "revocation_stream_down",
                url=self._stream_url,
                problem=problem,
                pulling_every=self.poll_interval,
            )
            self._down_reported = True
            self._wake.set()  # pull now: the last heartbeat vouched for up to 2h ago
        else:
            log.debug("revocation_stream_still_down", url=self._stream_url, problem=problem)
        self.streaming = False
