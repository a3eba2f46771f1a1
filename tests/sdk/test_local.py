"""``RemoteKeySet``, ``RevocationSync`` and ``LocalVerifier`` over MockTransport."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import structlog

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


class Feed(httpx.AsyncByteStream):
    """One server-sent event stream: the test puts chunks, None to end it, or an error."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | Exception | None] = asyncio.Queue()
        self.closed = False
        self.queue.put_nowait(b": connected\n\n")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while (item := await self.queue.get()) is not None:
            if isinstance(item, Exception):
                raise item
            yield item

    async def aclose(self) -> None:
        self.closed = True

    def event(self, record: dict[str, Any], *, id: str | None = None) -> None:
        """Send one revocation event (``id`` defaults to the record's seq)."""
        ident = str(record["seq"]) if id is None else id
        data = json.dumps(record)
        self.queue.put_nowait(f"id: {ident}\nevent: revocation\ndata: {data}\n\n".encode())

    def heartbeat(self) -> None:
        self.queue.put_nowait(b": heartbeat\n\n")


class Server:
    """A fake Authority: JWKS, the revocation feed and stream, counting the calls."""

    def __init__(self, *keys: SigningKey) -> None:
        self.keys = list(keys)
        self.jwks_calls = 0
        self.feed_calls = 0
        self.fail = False
        self.stream_status = 200
        self.revocations: list[dict[str, Any]] = []
        self.stream_requests: list[httpx.Request] = []
        self.feeds: list[Feed] = []

    async def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/revocations/stream":
            self.stream_requests.append(request)
            if self.fail or self.stream_status != 200:
                return httpx.Response(503 if self.fail else self.stream_status)
            feed = Feed()
            self.feeds.append(feed)
            return httpx.Response(200, headers={"Content-Type": "text/event-stream"}, stream=feed)
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


def record(seq: int, jti: str) -> dict[str, Any]:
    return {"seq": seq, "kind": "jti", "value": jti, "reason": "r", "actor": "a", "revoked_at": 5}


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


async def until(condition: Callable[[], object], timeout: float = 1.0) -> None:
    """Wait until ``condition()`` is true, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


async def drained(feed: Feed) -> None:
    """Wait until the client has read and handled everything put on ``feed``."""
    await until(feed.queue.empty)
    await asyncio.sleep(0.02)


def push_sync(
    client: httpx.AsyncClient,
    *,
    clock: Callable[[], float] = time.monotonic,
    poll_interval: float = 0.02,
    max_staleness: float = 10.0,
) -> RevocationSync:
    sync = RevocationSync(
        BASE,
        client=client,
        api_key="k",
        poll_interval=poll_interval,
        max_staleness=max_staleness,
        clock=clock,
    )
    sync.retry_initial = sync.retry_max = 0.02
    return sync


class TestPush:
    """``RevocationSync`` following the server-sent event stream, with pulls as fallback."""

    def test_heartbeat_and_read_timeout_follow_max_staleness(self) -> None:
        """The heartbeat asked for is a third of max_staleness, within 1 to 60 s."""
        client = Server().client()
        for staleness, heartbeat in [(10.0, 10 / 3), (1.0, 1.0), (600.0, 60.0)]:
            sync = RevocationSync(BASE, client=client, api_key="k", max_staleness=staleness)
            assert sync.heartbeat == heartbeat
            assert sync.heartbeat < sync.read_timeout < 2 * sync.heartbeat + 1
        # Capped exponential backoff with jitter: 0.5 s at first, at most retry_max (30 s).
        assert 0.25 <= sync._backoff(1) <= 0.5
        assert 15 <= sync._backoff(100) <= sync.retry_max

    def test_events_are_applied_as_they_arrive(self) -> None:
        """A pushed revocation is enforced at once and advances the cursor."""
        server = Server()

        async def main() -> None:
            async with server.client() as client:
                sync = push_sync(client)
                await sync.start()
                try:
                    await until(lambda: server.feeds)
                    request = server.stream_requests[0]
                    assert request.url.params["after"] == "0"
                    assert float(request.url.params["heartbeat"]) == sync.heartbeat
                    assert request.headers["Accept"] == "text/event-stream"
                    assert request.headers["X-API-Key"] == "k"
                    assert "Last-Event-ID" not in request.headers
                    feed = server.feeds[0]
                    feed.queue.put_nowait(b"event: other\ndata: ignored\n\n")
                    feed.event(record(3, "j1"))
                    await until(lambda: sync.pushed == 1)
                    assert sync.store.cursor == 3
                    assert sync.store.revoked(facts("j1"), now=time.time()) is not None
                    assert sync.stream_connects == 1
                    assert len(server.feeds) == 1  # the unknown event did not break the stream
                finally:
                    await sync.stop()
                assert feed.closed

        asyncio.run(main())

    def test_heartbeat_confirms_the_store_current(self) -> None:
        """A heartbeat at R vouches back to R - heartbeat, or to the data before it if that
        came later; the connect comment vouches for nothing."""
        server = Server()
        clock = Clock()

        async def main() -> None:
            async with server.client() as client:
                sync = push_sync(client, clock=clock, poll_interval=60)
                await sync.start()
                try:
                    await until(lambda: server.feeds)
                    await drained(server.feeds[0])  # ": connected" read
                    clock.now += 100
                    with pytest.raises(DependencyUnavailable):
                        sync.store.revoked(facts("j2"), now=time.time())
                    assert (sync.heartbeats, sync.streaming) == (0, False)
                    feed = server.feeds[0]
                    # Quiet for 100 s: the heartbeat vouches only back to ": connected".
                    feed.heartbeat()
                    await until(lambda: sync.heartbeats == 1)
                    assert sync.store.staleness() == 100
                    assert sync.streaming
                    clock.now += 1  # a second heartbeat soon after: back to R - heartbeat
                    feed.heartbeat()
                    await until(lambda: sync.heartbeats == 2)
                    assert sync.store.staleness() == pytest.approx(sync.heartbeat)
                    assert sync.store.revoked(facts("j2"), now=time.time()) is None
                    clock.now += 9  # a late third one: back to the second
                    feed.heartbeat()
                    await until(lambda: sync.heartbeats == 3)
                    assert sync.store.staleness() == 9
                    assert sync.pulls == 1  # only the one in start()
                finally:
                    await sync.stop()

        asyncio.run(main())

    def test_busy_stream_without_heartbeats_is_backed_by_pulls(self) -> None:
        """Pulls pause while heartbeats prove the store current and resume when they stop."""
        server = Server()
        clock = Clock()

        async def main() -> None:
            async with server.client() as client:
                sync = push_sync(client, clock=clock)
                await sync.start()
                try:
                    await until(lambda: server.feeds)
                    server.feeds[0].heartbeat()
                    await until(lambda: sync.heartbeats == 1)
                    await asyncio.sleep(0.05)
                    pulls = sync.pulls
                    await asyncio.sleep(0.1)  # five poll intervals
                    assert sync.pulls == pulls
                    clock.now += sync.read_timeout + 1  # events only since the heartbeat
                    server.feeds[0].event(record(1, "j1"))
                    await until(lambda: sync.pulls > pulls)
                    assert sync.store.staleness() == 0
                    assert len(server.feeds) == 1  # still the same stream
                finally:
                    await sync.stop()

        asyncio.run(main())

    def test_stream_down_falls_back_to_pulls(self) -> None:
        """A refused stream is retried while pulls keep the store fresh; one warning in all."""
        server = Server()
        server.stream_status = 503

        async def main() -> None:
            async with server.client() as client:
                sync = push_sync(client, max_staleness=0.3)
                await sync.start()
                try:
                    await until(lambda: len(server.stream_requests) >= 3)
                    server.revocations.append(record(1, "j1"))
                    await until(lambda: sync.store.cursor == 1)
                    await asyncio.sleep(0.4)  # past max_staleness: only pulls keep it fresh
                    assert sync.store.revoked(facts("j2"), now=time.time()) is None
                    assert sync.store.revoked(facts("j1"), now=time.time()) is not None
                    assert (sync.stream_connects, sync.pushed, sync.streaming) == (0, 0, False)
                    assert sync.pulls >= 10
                finally:
                    await sync.stop()

        with structlog.testing.capture_logs() as logs:
            asyncio.run(main())
        down = [e for e in logs if e["event"] == "revocation_stream_down"]
        assert [e["log_level"] for e in down] == ["warning"]
        assert "HTTP 503" in down[0]["problem"]
        assert any(e["event"] == "revocation_stream_still_down" for e in logs)

    def test_stream_and_pulls_down_fail_closed(self) -> None:
        """When neither the stream nor the pulls answer, the store goes stale and refuses."""
        server = Server()
        clock = Clock()

        async def main() -> None:
            async with server.client() as client:
                sync = push_sync(client, clock=clock)
                await sync.start()
                try:
                    await until(lambda: server.feeds)
                    server.feeds[0].heartbeat()
                    await until(lambda: sync.streaming)
                    server.fail = True
                    pulls = sync.pulls
                    server.feeds[0].queue.put_nowait(httpx.ReadError("connection reset"))
                    await until(lambda: not sync.streaming)
                    await until(lambda: sync.pulls >= pulls + 2 and len(server.stream_requests) > 2)
                    assert sync.store.revoked(facts("j2"), now=time.time()) is None
                    clock.now += sync.store.max_staleness + 1
                    with pytest.raises(DependencyUnavailable) as stale:
                        sync.store.revoked(facts("j2"), now=time.time())
                    assert stale.value.code is codes.UNAVAILABLE_REVOCATION
                finally:
                    await sync.stop()

        asyncio.run(main())

    def test_reconnect_resumes_with_last_event_id(self) -> None:
        """After the stream ends or breaks, the next request carries Last-Event-ID and after."""
        server = Server()

        async def main() -> None:
            async with server.client() as client:
                sync = push_sync(client)
                await sync.start()
                try:
                    await until(lambda: server.feeds)
                    server.feeds[0].event(record(7, "j7"))
                    await until(lambda: sync.pushed == 1)
                    server.feeds[0].queue.put_nowait(None)  # the server ends the stream
                    await until(lambda: len(server.feeds) == 2)
                    again = server.stream_requests[1]
                    assert again.headers["Last-Event-ID"] == "7"
                    assert again.url.params["after"] == "7"
                    assert server.feeds[0].closed
                    server.feeds[1].event(record(8, "j8"))
                    await until(lambda: sync.pushed == 2)
                    server.feeds[1].queue.put_nowait(httpx.ReadError("connection reset"))
                    await until(lambda: len(server.feeds) == 3)
                    assert server.stream_requests[2].headers["Last-Event-ID"] == "8"
                    assert sync.stream_connects == 3
                finally:
                    await sync.stop()

        asyncio.run(main())

    def test_silent_stream_is_dropped(self) -> None:
        """A stream that sends nothing for read_timeout is closed, pulled over and reopened."""
        server = Server()

        async def main() -> None:
            async with server.client() as client:
                sync = push_sync(client, poll_interval=60)
                sync.read_timeout = 0.1
                await sync.start()
                try:
                    await until(lambda: len(server.feeds) >= 2)
                    assert server.feeds[0].closed
                    assert sync.pulls >= 2  # the fallback pulled at once
                finally:
                    await sync.stop()

        asyncio.run(main())

    def test_malformed_event_drops_the_stream(self) -> None:
        """An event whose id is not its record's seq is not applied; the stream is reopened."""
        server = Server()

        async def main() -> None:
            async with server.client() as client:
                sync = push_sync(client)
                await sync.start()
                try:
                    await until(lambda: server.feeds)
                    server.feeds[0].event(record(2, "j2"), id="3")
                    await until(lambda: len(server.feeds) == 2)
                    assert (sync.pushed, sync.store.cursor) == (0, 0)
                    assert "Last-Event-ID" not in server.stream_requests[1].headers
                finally:
                    await sync.stop()

        asyncio.run(main())

    def test_pull_only_mode_never_streams(self) -> None:
        """push=False (also through LocalVerifier) pulls every poll_interval, no stream."""
        server = Server()

        async def main() -> None:
            async with server.client() as client:
                local = LocalVerifier(
                    BASE, api_key="k", client=client, poll_interval=0.02, push=False
                )
                assert local.revocations.push is False
                async with local:
                    await until(lambda: local.revocations.pulls >= 3)
                assert server.stream_requests == []

        asyncio.run(main())
