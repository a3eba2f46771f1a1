"""Keys of legacy JWT issuers, fetched from their JWKS URLs and cached.

A fetched set is used for ``jwks_cache_seconds``; an unknown ``kid`` refetches at once (at
most every ``min_refresh`` seconds, so a flood of made-up kids cannot hammer the issuer). When
the URL fails, the keys fetched last stay in use for ``jwks_max_stale`` more seconds; past that,
or with nothing fetched yet, verification fails closed with ``CPN-LEG-009``.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from coupon import codes
from coupon._settings_migration import LegacyIssuer
from coupon.errors import DependencyUnavailable
from coupon.observability import get_logger

__all__ = ["Fetch", "JwksCache", "fetch_jwks"]

Fetch = Callable[[str], Awaitable[list[dict[str, Any]]]]

_log = get_logger("coupon.authority.legacy")
_MAX_BYTES = 1 << 20
_MAX_KEYS = 100


async def fetch_jwks(url: str) -> list[dict[str, Any]]:
    """GET a JWKS document and return its keys (objects only).

    Raises:
        ValueError: the answer is not a JWKS document (or is too large).
        httpx.HTTPError: the request failed or answered an error status.
    """
    async with httpx.AsyncClient(timeout=3.0, follow_redirects=False) as client:
        response = await client.get(url, headers={"Accept": "application/json"})
        response.raise_for_status()
        if len(response.content) > _MAX_BYTES:
            raise ValueError("JWKS document too large")
        document = response.json()
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list) or len(keys) > _MAX_KEYS:
        raise ValueError("not a JWKS document")
    return [key for key in keys if isinstance(key, dict)]


@dataclass(frozen=True, slots=True)
class _Entry:
    keys: list[dict[str, Any]]
    fetched_at: float


class JwksCache:
    """The keys of every asymmetric legacy issuer, fetched on demand.

    Args:
        fetch: how a JWKS URL is read (:func:`fetch_jwks` by default).
        clock: monotonic seconds.
        min_refresh: least seconds between two fetches of one URL for an unknown ``kid``.
    """

    def __init__(
        self,
        *,
        fetch: Fetch = fetch_jwks,
        clock: Callable[[], float] = time.monotonic,
        min_refresh: float = 10.0,
    ) -> None:
        self._fetch = fetch
        self._clock = clock
        self._min_refresh = min_refresh
        self._entries: dict[str, _Entry] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._attempted: dict[str, float] = {}
        #: Failed fetches so far (for tests and logs).
        self.failures = 0

    async def keys(self, issuer: LegacyIssuer, *, kid: str | None) -> list[dict[str, Any]]:
        """The issuer's keys, fresh enough, refetched once if ``kid`` is not among them.

        Raises:
            DependencyUnavailable: ``CPN-LEG-009`` when no usable keys are known.
        """
        url = issuer.jwks_url
        if url is None:
            raise ValueError("the issuer has no jwks_url")
        entry = self._entries.get(url)
        now = self._clock()
        stale = entry is None or now - entry.fetched_at >= issuer.jwks_cache_seconds
        unknown = (
            entry is not None and kid is not None and all(k.get("kid") != kid for k in entry.keys)
        )
        # Retry at most every min_refresh: neither made-up kids nor an issuer that is down
        # turn every request into a fetch.
        if (stale or unknown) and now - self._attempted.get(url, -math.inf) >= self._min_refresh:
            entry = await self._refresh(url)
        if entry is None:
            raise DependencyUnavailable(codes.LEGACY_KEYS, f"no keys from {url} yet")
        if self._clock() - entry.fetched_at > issuer.jwks_cache_seconds + issuer.jwks_max_stale:
            raise DependencyUnavailable(codes.LEGACY_KEYS, f"keys from {url} are too old")
        return entry.keys

    async def _refresh(self, url: str) -> _Entry | None:
        lock = self._locks.setdefault(url, asyncio.Lock())
        started = self._clock()
        async with lock:
            current = self._entries.get(url)
            if self._attempted.get(url, -math.inf) >= started:
                return current  # someone else fetched while we waited (single flight)
            self._attempted[url] = self._clock()
            try:
                keys = await self._fetch(url)
            except Exception as exc:  # any failure keeps the last keys, within max_stale
                self.failures += 1
                _log.warning("legacy_jwks_fetch_failed", url=url, error=repr(exc)[:200])
                return current
            fresh = _Entry(keys=keys, fetched_at=self._clock())
            self._entries[url] = fresh
            return fresh
