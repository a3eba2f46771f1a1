"""One provider's signing keys: discovery, then its JWKS, fetched with httpx and cached.

- The discovery document's ``issuer`` must equal the configured issuer exactly, and its
  ``jwks_uri`` must be https (http only on a loopback host). Redirects are not followed.
- Keys are kept for the JWKS answer's ``Cache-Control: max-age``, bounded to
  ``[MIN_CACHE, max_age]`` (``no-store``/``no-cache``: the lower bound; none: ``DEFAULT_CACHE``).
  When they expire, the cached keys go on serving while one background fetch replaces them.
- A ``kid`` we do not know makes one refetch (single flight: concurrent callers wait for the
  same fetch), at most once per ``refresh_interval``: forged kids cannot cause a fetch storm,
  and a provider that rotated its key is followed within a request.
- A failed fetch is retried no sooner than ``refresh_interval`` later. Meanwhile cached keys
  keep working (up to ``stale_limit`` past their expiry); without any, the answer is
  ``CPN-OIDC-013`` (unreachable) or ``CPN-OIDC-014`` (wrong metadata): a 503, never a 401.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import httpx

from coupon import codes
from coupon._settings_oidc import check_https_url
from coupon.codes import ErrorCode
from coupon.errors import AuthenticationFailed, CouponError, DependencyUnavailable, MalformedCoupon
from coupon.observability import get_logger, tracer_provider
from coupon.token.hazmat import loads_object

from ._oidc_core import VerificationKey, choose_key, parse_jwks

__all__ = ["DEFAULT_CACHE", "MIN_CACHE", "FetchEvent", "ProviderKeys", "cache_ttl"]

MIN_CACHE: Final = 60.0
DEFAULT_CACHE: Final = 300.0
_MAX_DOCUMENT: Final = 256 * 1024
_MAX_AGE: Final = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d{1,10})\"?\s*(?:,|$)", re.IGNORECASE)
_NO_CACHE: Final = re.compile(r"(?:^|,)\s*no-(?:store|cache)\s*(?:,|$|=)", re.IGNORECASE)
_log = get_logger("coupon.authority.oidc")
_TRACER = tracer_provider().get_tracer("coupon.authority")


def cache_ttl(
    cache_control: str | None,
    *,
    maximum: float,
    minimum: float = MIN_CACHE,
    default: float = DEFAULT_CACHE,
) -> float:
    """How long to keep a document: its ``max-age`` bounded to ``[minimum, maximum]``."""
    if cache_control and _NO_CACHE.search(cache_control):
        return minimum
    match = _MAX_AGE.search(cache_control or "")
    seconds = float(match.group(1)) if match else default
    return max(minimum, min(seconds, maximum))


@dataclass(frozen=True, slots=True)
class FetchEvent:
    """One discovery or JWKS fetch, for metrics."""

    issuer: str
    document: str  # "discovery" or "jwks"
    result: str  # "ok", "unavailable" or "invalid"
    seconds: float
    keys: int = 0


def _unavailable(reason: str) -> DependencyUnavailable:
    return DependencyUnavailable(codes.OIDC_UNAVAILABLE, reason)


def _invalid(reason: str) -> DependencyUnavailable:
    return DependencyUnavailable(codes.OIDC_METADATA, reason)


class ProviderKeys:
    """The cached signing keys of one OpenID provider (see the module documentation)."""

    def __init__(
        self,
        issuer: str,
        *,
        client: httpx.AsyncClient,
        max_age: float = 3600.0,
        refresh_interval: float = 10.0,
        stale_limit: float = 86_400.0,
        clock: Callable[[], float] = time.monotonic,
        on_fetch: Callable[[FetchEvent], None] | None = None,
    ) -> None:
        self.issuer = issuer
        self._client = client
        self._max_age = max_age
        self._interval = refresh_interval
        self._stale_limit = stale_limit
        self._clock = clock
        self._on_fetch = on_fetch
        self._jwks_uri: str | None = None
        self._discovery_until = float("-inf")
        self._keys: tuple[VerificationKey, ...] | None = None
        self._fresh_until = float("-inf")
        self._retry_at = float("-inf")
        self._last_forced = float("-inf")
        self._error: tuple[ErrorCode, str] | None = None
        self._inflight: asyncio.Task[None] | None = None

    @property
    def discovery_url(self) -> str:
        """OpenID Connect Discovery 1.0 §4: the issuer, then ``/.well-known/...``."""
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"

    @property
    def keys(self) -> tuple[VerificationKey, ...]:
        """The keys cached now (maybe stale; empty before the first successful fetch)."""
        return self._keys or ()

    async def key_for(self, kid: str | None, alg: str) -> VerificationKey:
        """The key that verifies a token with ``kid`` and ``alg``.

        Raises:
            AuthenticationFailed: ``CPN-OIDC-004``: the provider does not publish that key.
            DependencyUnavailable: ``CPN-OIDC-013``/``-014``: no keys, and the provider cannot
                be asked or answers wrongly; or the kid is unknown and the last fetch failed.
        """
        now = self._clock()
        if now >= self._fresh_until and (self._inflight is not None or now >= self._retry_at):
            if self._usable(now) is None:
                await self._refresh()
            else:
                self._start_refresh()  # serve the cached keys while one fetch replaces them
        keys = self._usable(self._clock())
        if keys is None:
            raise self._failure()
        key = choose_key(keys, kid, alg)
        if key is not None:
            return key
        # A kid we do not know: the provider may have rotated. Ask once, not once per caller.
        if self._inflight is not None:
            await self._refresh()
        elif self._clock() - self._last_forced >= self._interval:
            self._last_forced = self._clock()
            await self._refresh()
        key = choose_key(self._usable(self._clock()) or (), kid, alg)
        if key is not None:
            return key
        if self._error is not None:
            raise self._failure()
        what = f"kid {kid!r}" if kid is not None else f"a kid (several keys fit {alg})"
        raise AuthenticationFailed(codes.OIDC_KID, f"{self.issuer} publishes no key for {what}")

    async def warm(self) -> None:
        """Fetch discovery and keys now (at start); a failure is recorded, not raised."""
        await self._refresh()

    async def close(self) -> None:
        """Cancel a fetch in flight."""
        task = self._inflight
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- internals -------------------------------------------------------------------------------

    def _usable(self, now: float) -> tuple[VerificationKey, ...] | None:
        if self._keys is None or now >= self._fresh_until + self._stale_limit:
            return None
        return self._keys

    def _failure(self) -> DependencyUnavailable:
        code, reason = self._error or (codes.OIDC_UNAVAILABLE, "no keys fetched yet")
        return DependencyUnavailable(code, reason)

    def _start_refresh(self) -> asyncio.Task[None]:
        task = self._inflight
        if task is None:
            task = asyncio.get_running_loop().create_task(self._fetch(), name="coupon-oidc-fetch")
            self._inflight = task
            task.add_done_callback(self._fetched)
        return task

    def _fetched(self, task: asyncio.Task[None]) -> None:
        if self._inflight is task:
            self._inflight = None

    async def _refresh(self) -> None:
        await asyncio.shield(self._start_refresh())

    async def _fetch(self) -> None:
        with _TRACER.start_as_current_span("coupon.oidc.fetch_keys") as span:
            span.set_attribute("coupon.oidc.issuer", self.issuer)
            try:
                await self._fetch_documents()
            except CouponError as exc:
                self._error = (exc.code, exc.reason)
                self._retry_at = self._clock() + self._interval
                span.set_attribute("coupon.code", exc.code.code)
                _log.warning(
                    "oidc_keys_fetch_failed",
                    issuer=self.issuer,
                    code=exc.code.code,
                    reason=exc.reason,
                    cached_keys=len(self.keys),
                )
            else:
                self._error = None

    async def _fetch_documents(self) -> None:
        now = self._clock()
        if self._jwks_uri is None or now >= self._discovery_until:
            try:
                discovery, ttl = await self._get_json(self.discovery_url, "discovery")
                self._jwks_uri = self._check_discovery(discovery)
                self._discovery_until = now + ttl
            except CouponError:
                if self._jwks_uri is None:
                    raise
                # Keep the jwks_uri we know; the keys themselves decide below.
        assert self._jwks_uri is not None
        started = time.perf_counter()
        document, ttl = await self._get_json(self._jwks_uri, "jwks", record=False)
        try:
            keys, skipped = parse_jwks(document)
            if not keys:
                raise ValueError(f"no usable signing key ({'; '.join(skipped)[:300]})")
        except ValueError as exc:
            self._event("jwks", "invalid", started)
            raise _invalid(f"{self._jwks_uri}: {exc}") from None
        self._event("jwks", "ok", started, keys=len(keys))
        self._keys = keys
        self._fresh_until = self._clock() + ttl
        _log.info(
            "oidc_keys_fetched",
            issuer=self.issuer,
            kids=[k.kid for k in keys],
            skipped=skipped[:8],
            cache_seconds=ttl,
        )

    def _check_discovery(self, document: dict[str, Any]) -> str:
        if document.get("issuer") != self.issuer:
            got = str(document.get("issuer"))[:200]
            raise _invalid(f"discovery names issuer {got!r}, configured {self.issuer!r}")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise _invalid("discovery has no jwks_uri")
        try:
            return check_https_url(jwks_uri, "jwks_uri")
        except ValueError as exc:
            raise _invalid(str(exc)) from None

    def _event(self, document: str, result: str, started: float, *, keys: int = 0) -> None:
        if self._on_fetch is not None:
            seconds = time.perf_counter() - started
            self._on_fetch(FetchEvent(self.issuer, document, result, seconds, keys))

    async def _get_json(
        self, url: str, document: str, *, record: bool = True
    ) -> tuple[dict[str, Any], float]:
        """GET ``url`` as a JSON object (bounded), with its cache lifetime."""
        started = time.perf_counter()
        try:
            async with self._client.stream(
                "GET", url, headers={"Accept": "application/json"}
            ) as response:
                if response.status_code != 200:
                    transient = response.status_code >= 500 or response.status_code == 429
                    error = _unavailable if transient else _invalid
                    raise error(f"{url} answered HTTP {response.status_code}")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > _MAX_DOCUMENT:
                        raise _invalid(f"{url} is larger than {_MAX_DOCUMENT} bytes")
                ttl = cache_ttl(response.headers.get("cache-control"), maximum=self._max_age)
            parsed = loads_object(bytes(body))
        except httpx.HTTPError as exc:
            self._event(document, "unavailable", started)
            raise _unavailable(f"{url}: {type(exc).__name__}: {exc}"[:300]) from None
        except MalformedCoupon as exc:
            self._event(document, "invalid", started)
            raise _invalid(f"{url} is not a JSON object: {exc.reason}") from None
        except DependencyUnavailable as exc:
            result = "unavailable" if exc.code is codes.OIDC_UNAVAILABLE else "invalid"
            self._event(document, result, started)
            raise
        if record:
            self._event(document, "ok", started)
        return parsed, ttl
