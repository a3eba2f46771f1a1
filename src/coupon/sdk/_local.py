"""Verify coupons inside a service: the Authority's keys, cached, and its revocations, synced.

* :class:`RemoteKeySet` — the Authority's ``/.well-known/jwks.json``, cached for ``max_age``
  seconds and re-fetched (single flight, at most once per ``min_refresh_interval``) when a
  coupon names an unknown ``kid``.
* :class:`~coupon.sdk.RevocationSync` (in :mod:`._revocations`) — follows the revocation stream
  ``GET /v1/revocations/stream`` (server-sent events, pushed as they happen) and pulls
  ``GET /v1/revocations?after=`` whenever the stream does not prove the store current (or
  only pulls, with ``push=False``); the store fails closed (``CPN-DEP-001``) once it has not
  been confirmed current for ``max_staleness`` seconds.
* :class:`LocalVerifier` — both together behind one ``verify(token, request)``.

Key fetch failures: with keys already cached the old keys keep serving (a warning is logged);
with nothing cached :class:`~coupon.errors.DependencyUnavailable` is raised with
``CPN-DEP-004`` (``UNAVAILABLE_SIGNER``, the closest code for "signing keys unavailable").
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Iterable

import httpx

from coupon import codes
from coupon.errors import CouponError, DependencyUnavailable
from coupon.observability import get_logger
from coupon.token import (
    AsyncReplayStore,
    KeySet,
    MemoryReplayStore,
    Request,
    Verified,
    Verifier,
)

from ._revocations import RevocationSync

__all__ = ["LocalVerifier", "RemoteKeySet"]

log = get_logger("coupon.sdk")


class RemoteKeySet:
    """The Authority's signing keys, fetched from its JWKS URL and cached.

    Args:
        jwks_url: the ``/.well-known/jwks.json`` URL.
        client: the httpx client the fetches go through.
        max_age: seconds a fetched key set is used before it is fetched again.
        min_refresh_interval: the shortest time between two fetches forced by an unknown kid.
        clock: a monotonic clock, in seconds.
    """

    def __init__(
        self,
        jwks_url: str,
        *,
        client: httpx.AsyncClient,
        max_age: float = 60,
        min_refresh_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.jwks_url = jwks_url
        self._client = client
        self.max_age = max_age
        self.min_refresh_interval = min_refresh_interval
        self._clock = clock
        self._keys: KeySet | None = None
        self._fetched_at = -math.inf  # when the last fetch was attempted
        self._loaded_at = -math.inf  # when the cached keys were fetched
        self._lock = asyncio.Lock()
        self.fetches = 0  # fetch attempts made, for tests and metrics

    async def keyset(self) -> KeySet:
        """The cached keys, fetched first when none are cached or they are older than max_age.

        Raises:
            DependencyUnavailable: ``CPN-DEP-004`` when no keys were ever fetched.
        """
        if self._keys is not None and self._clock() - self._loaded_at < self.max_age:
            return self._keys
        async with self._lock:
            # Another caller may have fetched while this one waited for the lock.
            if self._keys is None or self._clock() - self._loaded_at >= self.max_age:
                await self._fetch()
        return self._require()

    async def refresh_for_unknown_kid(self) -> KeySet:
        """Fetch again (a coupon named a kid not cached), unless fetched very recently.

        Concurrent callers share one fetch; fetches are at least ``min_refresh_interval``
        apart.
        """
        started = self._clock()
        async with self._lock:
            if self._fetched_at < started and started - self._fetched_at >= (
                self.min_refresh_interval
            ):
                await self._fetch()
        return self._require()

    def _require(self) -> KeySet:
        if self._keys is None:
            raise DependencyUnavailable(codes.UNAVAILABLE_SIGNER, "signing keys unavailable")
        return self._keys

    async def _fetch(self) -> None:
        self.fetches += 1
        self._fetched_at = self._clock()
        try:
            response = await self._client.get(self.jwks_url)
            response.raise_for_status()
            keys = KeySet.from_jwks(response.json())
        except (httpx.HTTPError, ValueError, CouponError) as exc:
            if self._keys is None:
                raise DependencyUnavailable(
                    codes.UNAVAILABLE_SIGNER, "signing keys unavailable"
                ) from exc
            log.warning("jwks_fetch_failed", url=self.jwks_url, error=str(exc), kept_cached=True)
            return
        self._keys = keys
        self._loaded_at = self._fetched_at


class LocalVerifier:
    """Verify coupons locally with the Authority's keys and revocation feed.

    Args:
        authority_url: the Authority's base URL.
        api_key: an API key allowed to read ``/v1/revocations``.
        issuers: when given, the root ``iss`` must be one of these.
        client: an httpx client to use (closed by the caller); one is made otherwise.
        max_age, min_refresh_interval: see :class:`RemoteKeySet`.
        poll_interval, max_staleness, push: see :class:`RevocationSync`; with ``push`` (the
            default) revocations arrive over the stream, pulls fill in when it is down.
        replay: a DPoP replay store shared with other processes (Redis); an in-process one
            otherwise.
    """

    def __init__(
        self,
        authority_url: str,
        *,
        api_key: str,
        issuers: Iterable[str] | None = None,
        client: httpx.AsyncClient | None = None,
        max_age: float = 60,
        min_refresh_interval: float = 1.0,
        poll_interval: float = 1.0,
        max_staleness: float = 10.0,
        push: bool = True,
        replay: AsyncReplayStore | None = None,
    ) -> None:
        base = authority_url.rstrip("/")
        self._own_client = client is None
        self._client = client if client is not None else httpx.AsyncClient(timeout=5.0)
        self._issuers = list(issuers) if issuers is not None else None
        self.keys = RemoteKeySet(
            base + "/.well-known/jwks.json",
            client=self._client,
            max_age=max_age,
            min_refresh_interval=min_refresh_interval,
        )
        self.revocations = RevocationSync(
            base,
            client=self._client,
            api_key=api_key,
            poll_interval=poll_interval,
            max_staleness=max_staleness,
            push=push,
        )
        self._replay = MemoryReplayStore()  # shared across key rotations
        self._shared_replay = replay
        self._verifier: Verifier | None = None

    async def start(self) -> None:
        """Fetch the keys (errors are deferred to verify) and start the revocation sync."""
        with contextlib.suppress(DependencyUnavailable):
            await self.keys.keyset()
        await self.revocations.start()

    async def stop(self) -> None:
        """Stop the revocation sync and close the client if it was made here."""
        await self.revocations.stop()
        if self._own_client:
            await self._client.aclose()

    async def __aenter__(self) -> LocalVerifier:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _verifier_for(self, keys: KeySet) -> Verifier:
        verifier = self._verifier
        if verifier is None or verifier.keys is not keys:
            verifier = Verifier(
                keys,
                issuers=self._issuers,
                replay=self._replay,
                revocations=self.revocations.store,
            )
            self._verifier = verifier
        return verifier

    async def verify(self, token: str, request: Request, *, now: float | None = None) -> Verified:
        """Verify ``token`` for ``request``; an unknown kid refreshes the keys once.

        Raises:
            CouponError: the typed error of the first failing step.
        """
        verifier = self._verifier_for(await self.keys.keyset())
        try:
            return await self._check(verifier, token, request, now)
        except CouponError as exc:
            if exc.code.code != codes.HEADER_KID.code:
                raise
        keys = await self.keys.refresh_for_unknown_kid()
        return await self._check(self._verifier_for(keys), token, request, now)

    async def _check(
        self, verifier: Verifier, token: str, request: Request, now: float | None
    ) -> Verified:
        if self._shared_replay is None:
            return verifier.verify(token, request, now=now)
        return await verifier.verify_async(token, request, replay=self._shared_replay, now=now)
