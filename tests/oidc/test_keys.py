"""The key cache of one provider (``ProviderKeys``) against the real provider process.

The cache's clock is a fake one the tests move; HTTP goes to the provider for real, and the
provider counts the discovery and JWKS requests it serves.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from tests.oidc.conftest import ProviderProcess

from coupon.authority._oidc_keys import FetchEvent, ProviderKeys, cache_ttl
from coupon.errors import AuthenticationFailed, DependencyUnavailable

pytestmark = pytest.mark.usefixtures("fresh_provider")


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest_asyncio.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5.0, follow_redirects=False) as client:
        yield client


def _keys(
    provider: ProviderProcess,
    http: httpx.AsyncClient,
    clock: Clock,
    events: list[FetchEvent] | None = None,
    *,
    issuer: str | None = None,
) -> ProviderKeys:
    return ProviderKeys(
        issuer or provider.issuer,
        client=http,
        max_age=3600,
        refresh_interval=10.0,
        clock=clock,
        on_fetch=events.append if events is not None else None,
    )


def _current_kid(provider: ProviderProcess, alg: str = "RS256") -> str:
    kid: str = next(k["kid"] for k in provider.jwks()["keys"] if k["alg"] == alg)
    return kid


class TestCacheControl:
    @pytest.mark.parametrize(
        ("header", "expected"),
        [
            (None, 300.0),
            ("public, max-age=120", 120.0),
            ("max-age=5", 60.0),
            ("max-age=999999", 3600.0),
            ("no-store", 60.0),
            ("no-cache, max-age=600", 60.0),
            ('max-age="240"', 240.0),
            ("s-maxage=10", 300.0),
            ("max-age=abc", 300.0),
        ],
    )
    def test_bounds(self, header: str | None, expected: float) -> None:
        """max-age is honoured within [60 s, the maximum]; no-store/no-cache mean the minimum."""
        assert cache_ttl(header, maximum=3600.0) == expected


class TestFetching:
    @pytest.mark.asyncio
    async def test_discovery_then_jwks_then_cached(
        self, provider: ProviderProcess, http: httpx.AsyncClient
    ) -> None:
        """The first lookup fetches discovery and the JWKS; the next ones use the cache."""
        clock, events = Clock(), list[FetchEvent]()
        keys = _keys(provider, http, clock, events)
        kid, ec_kid = _current_kid(provider), _current_kid(provider, "ES256")
        before = provider.stats()
        assert (await keys.key_for(kid, "RS256")).kid == kid
        assert (await keys.key_for(ec_kid, "ES256")).algorithms == {"ES256"}
        after = provider.stats()
        assert after["discovery"] == before["discovery"] + 1
        assert after["jwks"] == before["jwks"] + 1
        assert [(e.document, e.result) for e in events] == [("discovery", "ok"), ("jwks", "ok")]

    @pytest.mark.asyncio
    async def test_max_age_is_honoured(
        self, provider: ProviderProcess, http: httpx.AsyncClient
    ) -> None:
        """With max-age=120 the keys are fetched again after 120 s, not before."""
        provider.configure(jwks_max_age=120)
        clock = Clock()
        keys = _keys(provider, http, clock)
        kid = _current_kid(provider)
        await keys.key_for(kid, "RS256")
        start = provider.stats()["jwks"]
        clock.now += 119
        await keys.key_for(kid, "RS256")
        assert provider.stats()["jwks"] == start
        clock.now += 2
        await keys.key_for(kid, "RS256")  # served from the cache while one fetch runs
        await asyncio.sleep(0.3)
        assert provider.stats()["jwks"] == start + 1

    @pytest.mark.asyncio
    async def test_unknown_kids_single_flight_and_rate_limited(
        self, provider: ProviderProcess, http: httpx.AsyncClient
    ) -> None:
        """50 concurrent forged kids: one refetch; more forged kids within the interval: none;
        after the interval: one more."""
        clock = Clock()
        keys = _keys(provider, http, clock)
        await keys.warm()
        start = provider.stats()["jwks"]
        results = await asyncio.gather(
            *(keys.key_for(f"forged-{n}", "RS256") for n in range(50)), return_exceptions=True
        )
        assert all(isinstance(r, AuthenticationFailed) for r in results)
        assert {r.code.code for r in results if isinstance(r, AuthenticationFailed)} == {
            "CPN-OIDC-004"
        }
        assert provider.stats()["jwks"] == start + 1
        clock.now += 5
        with pytest.raises(AuthenticationFailed):
            await keys.key_for("forged-x", "RS256")
        assert provider.stats()["jwks"] == start + 1
        clock.now += 6
        with pytest.raises(AuthenticationFailed):
            await keys.key_for("forged-y", "RS256")
        assert provider.stats()["jwks"] == start + 2

    @pytest.mark.asyncio
    async def test_rotation_is_followed(
        self, provider: ProviderProcess, http: httpx.AsyncClient
    ) -> None:
        """A new kid is fetched on first sight; the removed key is gone after that refetch."""
        clock = Clock()
        keys = _keys(provider, http, clock)
        old = _current_kid(provider)
        await keys.key_for(old, "RS256")
        new = provider.rotate("RS256")
        assert (await keys.key_for(new, "RS256")).kid == new
        clock.now += 11
        with pytest.raises(AuthenticationFailed) as refused:
            await keys.key_for(old, "RS256")
        assert refused.value.code.code == "CPN-OIDC-004"


class TestFailures:
    @pytest.mark.asyncio
    async def test_issuer_mismatch_in_discovery(
        self, provider: ProviderProcess, http: httpx.AsyncClient
    ) -> None:
        """Discovery naming another issuer is refused (CPN-OIDC-014), and no JWKS is read."""
        provider.configure(discovery_issuer="https://login.example.com")
        keys = _keys(provider, http, Clock())
        start = provider.stats()["jwks"]
        with pytest.raises(DependencyUnavailable) as failed:
            await keys.key_for("any", "RS256")
        assert failed.value.code.code == "CPN-OIDC-014"
        assert provider.stats()["jwks"] == start

    @pytest.mark.asyncio
    async def test_jwks_error_status(
        self, provider: ProviderProcess, http: httpx.AsyncClient
    ) -> None:
        """A 503 from the JWKS is "unavailable" (CPN-OIDC-013), a 404 "invalid" (-014)."""
        for status, code in ((503, "CPN-OIDC-013"), (404, "CPN-OIDC-014")):
            provider.configure(jwks_status=status)
            with pytest.raises(DependencyUnavailable) as failed:
                await _keys(provider, http, Clock()).key_for("any", "RS256")
            assert failed.value.code.code == code

    @pytest.mark.asyncio
    async def test_unreachable(self, http: httpx.AsyncClient, closed_port: int) -> None:
        """Nothing listening: CPN-OIDC-013; the next lookup within the interval fails fast
        without another attempt."""
        events: list[FetchEvent] = []
        keys = ProviderKeys(
            f"http://127.0.0.1:{closed_port}", client=http, clock=Clock(), on_fetch=events.append
        )
        for _ in range(3):
            with pytest.raises(DependencyUnavailable) as failed:
                await keys.key_for("any", "RS256")
            assert failed.value.code.code == "CPN-OIDC-013"
        assert len(events) == 1

    @pytest.mark.asyncio
    async def test_cached_keys_outlive_an_outage(
        self, provider: ProviderProcess, http: httpx.AsyncClient
    ) -> None:
        """Once fetched, keys keep working while the JWKS fails; an unknown kid during the
        outage is a 503 (the provider could not be asked), not a 401."""
        clock = Clock()
        keys = _keys(provider, http, clock)
        kid = _current_kid(provider)
        await keys.key_for(kid, "RS256")
        provider.configure(jwks_status=503)
        clock.now += 4000  # past the cache lifetime
        assert (await keys.key_for(kid, "RS256")).kid == kid
        await asyncio.sleep(0.3)  # the background refetch fails
        clock.now += 11
        assert (await keys.key_for(kid, "RS256")).kid == kid
        with pytest.raises(DependencyUnavailable) as failed:
            await keys.key_for("rotated-during-outage", "RS256")
        assert failed.value.code.code == "CPN-OIDC-013"

    @pytest.mark.asyncio
    async def test_close_cancels_a_fetch(self, http: httpx.AsyncClient) -> None:
        """close() ends a fetch in flight (here one that waits for a listener that never
        answers)."""

        accepted = asyncio.Event()
        writers: list[asyncio.StreamWriter] = []

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writers.append(writer)
            accepted.set()

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        keys = ProviderKeys(f"http://127.0.0.1:{port}", client=http, clock=Clock())
        lookup = asyncio.ensure_future(keys.key_for("any", "RS256"))
        await asyncio.wait_for(accepted.wait(), 5)
        await keys.close()
        with pytest.raises((DependencyUnavailable, asyncio.CancelledError)):
            await lookup
        for writer in writers:
            writer.close()
            await writer.wait_closed()
        server.close()
        await server.wait_closed()
