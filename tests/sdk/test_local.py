"""``RemoteKeySet``, ``RevocationSync`` and ``LocalVerifier`` over MockTransport."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from coupon import codes
from coupon.errors import CouponRevoked, DependencyUnavailable
from coupon.sdk import LocalVerifier, RemoteKeySet, RevocationSync
from coupon.token import (
    Binding,
    KeySet,
    Request,
    RevocationFacts,
    SigningKey,
    create_dpop_proof,
    mint,
    new_jti,
)

BASE = "http://authority.test"
JWKS = BASE + "/.well-known/jwks.json"
ISSUER = "https://authority.example"
URI = "https://orders.example/orders/123"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Server:
    """A fake Authority: JWKS and the revocation feed, counting the calls."""

    def __init__(self, *keys: SigningKey) -> None:
        self.keys = list(keys)
        self.jwks_calls = 0
        self.feed_calls = 0
        self.fail = False
        self.revocations: list[dict[str, Any]] = []

    async def handle(self, request: httpx.Request) -> httpx.Response:
        if self.fail:
            return httpx.Response(503)
        if request.url.path == "/.well-known/jwks.json":
            self.jwks_calls += 1
            await asyncio.sleep(0.01)  # let concurrent callers pile up
            return httpx.Response(200, json=KeySet(self.keys).to_jwks())
        if request.url.path == "/v1/revocations":
            self.feed_calls += 1
            assert request.headers["X-API-Key"] == "k"
            after = int(request.url.params["after"])
            page = [r for r in self.revocations if r["seq"] > after]
            cursor = max([after] + [r["seq"] for r in page])
            return httpx.Response(200, json={"revocations": page, "cursor": cursor})
        return httpx.Response(404)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handle))


def facts(jti: str = "j1") -> RevocationFacts:
    return RevocationFacts(
        jtis=(jti,), lineage="l", subjects=("alice",), tenant="t", kid="k", issued_at=1
    )


def test_single_flight_unknown_kid_refresh() -> None:
    server = Server(SigningKey.generate())
    clock = Clock()

    async def main() -> None:
        async with server.client() as client:
            keys = RemoteKeySet(JWKS, client=client, clock=clock)
            await keys.keyset()
            assert server.jwks_calls == 1
            clock.now += 5  # past min_refresh_interval
            await asyncio.gather(*(keys.refresh_for_unknown_kid() for _ in range(20)))
            assert server.jwks_calls == 2
            # Within min_refresh_interval of the last fetch: no new fetch.
            await keys.refresh_for_unknown_kid()
            assert server.jwks_calls == 2

    asyncio.run(main())


def test_keyset_cached_for_max_age() -> None:
    server = Server(SigningKey.generate())
    clock = Clock()

    async def main() -> None:
        async with server.client() as client:
            keys = RemoteKeySet(JWKS, client=client, max_age=60, clock=clock)
            first = await keys.keyset()
            clock.now += 59
            assert await keys.keyset() is first
            assert server.jwks_calls == 1
            clock.now += 2
            assert await keys.keyset() is not first
            assert server.jwks_calls == 2

    asyncio.run(main())


def test_fetch_failure_without_and_with_cache() -> None:
    key = SigningKey.generate()
    server = Server(key)
    clock = Clock()

    async def main() -> None:
        async with server.client() as client:
            keys = RemoteKeySet(JWKS, client=client, clock=clock)
            server.fail = True
            with pytest.raises(DependencyUnavailable) as caught:
                await keys.keyset()
            assert caught.value.code is codes.UNAVAILABLE_SIGNER
            server.fail = False
            cached = await keys.keyset()
            assert cached.get(key.kid) is not None
            server.fail = True
            clock.now += 120
            assert await keys.keyset() is cached  # stale but kept
            clock.now += 5
            assert await keys.refresh_for_unknown_kid() is cached

    asyncio.run(main())


def test_revocations_fail_closed_when_stale() -> None:
    server = Server()
    clock = Clock()

    async def main() -> None:
        async with server.client() as client:
            sync = RevocationSync(BASE, client=client, api_key="k", max_staleness=10, clock=clock)
            with pytest.raises(DependencyUnavailable) as never:
                sync.store.revoked(facts(), now=time.time())
            assert never.value.code is codes.UNAVAILABLE_REVOCATION
            server.revocations.append(
                {"seq": 1, "kind": "jti", "value": "j1", "reason": "r", "actor": "a",
                 "revoked_at": 5}
            )  # fmt: skip
            await sync.pull()
            assert sync.store.cursor == 1
            assert sync.store.revoked(facts("j1"), now=time.time()) is not None
            assert sync.store.revoked(facts("j2"), now=time.time()) is None
            clock.now += 11
            with pytest.raises(DependencyUnavailable) as stale:
                sync.store.revoked(facts("j2"), now=time.time())
            assert stale.value.code.code == "CPN-DEP-001"
            # A known revocation is still reported when stale.
            assert sync.store.revoked(facts("j1"), now=time.time()) is not None
            server.fail = True
            await sync._pull_logged()  # a failed pull does not refresh
            with pytest.raises(DependencyUnavailable):
                sync.store.revoked(facts("j2"), now=time.time())

    asyncio.run(main())


def test_local_verifier_rotation_and_revocation() -> None:
    old, holder = SigningKey.generate(), SigningKey.generate()
    server = Server(old)

    def token_by(key: SigningKey) -> str:
        return mint(
            key, issuer=ISSUER, subject="alice", audience="orders", tenant="t",
            resource="orders/**", actions=["read"], purpose="billing",
            binding=Binding(jkt=holder.public.thumbprint), ttl=60,
        )  # fmt: skip

    def request(token: str) -> Request:
        proof = create_dpop_proof(
            holder, method="GET", uri=URI, now=int(time.time()), jti=new_jti(),
            access_token=token,
        )  # fmt: skip
        return Request(
            audience="orders", resource="orders/123", action="read", purpose="billing",
            tenant="t", method="GET", uri=URI, dpop=proof,
        )  # fmt: skip

    async def main() -> None:
        async with server.client() as client:
            local = LocalVerifier(BASE, api_key="k", issuers=[ISSUER], client=client)
            async with local:
                token = token_by(old)
                assert (await local.verify(token, request(token))).claims.sub == "alice"
                new = SigningKey.generate()
                server.keys.append(new)
                local.keys._fetched_at -= 5  # pretend the last fetch was a while ago
                rotated = token_by(new)
                verified = await local.verify(rotated, request(rotated))
                assert verified.kid == new.kid
                assert server.jwks_calls == 2
                jti = verified.claims.jti
                server.revocations.append(
                    {"seq": 1, "kind": "jti", "value": jti, "reason": "r", "actor": "a",
                     "revoked_at": int(time.time())}
                )  # fmt: skip
                await local.revocations.pull()
                with pytest.raises(CouponRevoked):
                    await local.verify(rotated, request(rotated))

    asyncio.run(main())
