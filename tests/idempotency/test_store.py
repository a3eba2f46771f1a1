"""One contract suite for every store adapter (memory and a real Redis)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from redis.asyncio import Redis
from tests.idempotency.idem_support import FakeClock, StoreCase

from coupon import codes
from coupon.errors import DependencyUnavailable, StorageError
from coupon.idempotency import (
    Done,
    MemoryIdempotencyStore,
    Pending,
    RedisIdempotencyStore,
    StoredResponse,
)
from coupon.idempotency._store import decode_record, encode_record

RESPONSE = StoredResponse(201, (("content-type", "application/json"),), b'{"id":1}', 1.5)
P1 = Pending("fp-1", "owner-1")
P2 = Pending("fp-1", "owner-2")


class TestStoredResponse:
    def test_json_round_trip(self) -> None:
        binary = StoredResponse(200, (("a", "b"), ("a", "c")), bytes(range(256)), 12.25)
        assert StoredResponse.from_json(binary.to_json()) == binary
        assert StoredResponse.from_json(binary.to_json().decode()) == binary

    @pytest.mark.parametrize(
        "data",
        [
            b"not json",
            b"[]",
            b'{"status": 200}',
            b'{"status": 99, "headers": [], "body": "", "created_at": 0}',
            b'{"status": 200, "headers": [["a"]], "body": "", "created_at": 0}',
            b'{"status": 200, "headers": [], "body": "!!", "created_at": 0}',
            b'{"status": 200, "headers": [], "body": "", "created_at": "x"}',
            b"\xff",
        ],
    )
    def test_corrupt_json(self, data: bytes) -> None:
        with pytest.raises(StorageError) as info:
            StoredResponse.from_json(data)
        assert info.value.code is codes.UNAVAILABLE_STORAGE

    def test_record_round_trip(self) -> None:
        for record in (P1, Done("fp", RESPONSE)):
            assert decode_record(encode_record(record)) == record

    @pytest.mark.parametrize(
        "data", [b"{}", b'{"v": 2}', b'{"v": 1, "fp": "x", "state": "odd"}', b'{"v": 1}']
    )
    def test_corrupt_record(self, data: bytes) -> None:
        with pytest.raises(StorageError):
            decode_record(data)


@pytest.mark.asyncio
class TestContract:
    async def test_first_claim_wins(self, store_case: StoreCase) -> None:
        store = store_case.store
        assert await store.claim("t:k", P1, lease=5) is None
        assert await store.claim("t:k", P2, lease=5) == P1
        assert await store.claim("other:k", P2, lease=5) is None

    async def test_complete_then_replay(self, store_case: StoreCase) -> None:
        store = store_case.store
        await store.claim("t:k", P1, lease=5)
        assert await store.complete("t:k", P1, RESPONSE, ttl=5)
        assert await store.claim("t:k", P2, lease=5) == Done("fp-1", RESPONSE)
        assert not await store.release("t:k", P1), "a completed record is not released"

    async def test_only_the_holder_completes_or_releases(self, store_case: StoreCase) -> None:
        store = store_case.store
        await store.claim("t:k", P1, lease=5)
        assert not await store.complete("t:k", P2, RESPONSE, ttl=5)
        assert not await store.release("t:k", P2)
        assert not await store.complete("t:none", P1, RESPONSE, ttl=5)
        assert await store.release("t:k", P1)
        assert await store.claim("t:k", P2, lease=5) is None

    async def test_lease_expires(self, store_case: StoreCase) -> None:
        store = store_case.store
        await store.claim("t:k", P1, lease=0.1)
        await store_case.wait(0.25)
        assert await store.claim("t:k", P2, lease=5) is None
        assert not await store.complete("t:k", P1, RESPONSE, ttl=5), "the old lease is gone"

    async def test_response_expires(self, store_case: StoreCase) -> None:
        store = store_case.store
        await store.claim("t:k", P1, lease=5)
        await store.complete("t:k", P1, RESPONSE, ttl=0.1)
        await store_case.wait(0.25)
        assert await store.claim("t:k", P2, lease=5) is None

    async def test_concurrent_claims(self, store_case: StoreCase) -> None:
        store = store_case.store
        results = await asyncio.gather(
            *(store.claim("t:k", Pending("fp", f"o{i}"), lease=5) for i in range(20))
        )
        assert sum(r is None for r in results) == 1


class TestMemory:
    @pytest.mark.asyncio
    async def test_bounded(self) -> None:
        clock = FakeClock()
        store = MemoryIdempotencyStore(max_entries=3, clock=clock)
        await store.claim("old", P1, lease=1)
        clock.advance(2)
        for key in ("a", "b", "c"):
            await store.claim(key, P1, lease=60)
        assert len(store) == 3
        await store.claim("d", P1, lease=60)
        assert len(store) == 3
        assert await store.claim("a", P2, lease=60) is None, "the oldest was dropped"

    def test_misuse(self) -> None:
        with pytest.raises(ValueError, match="max_entries"):
            MemoryIdempotencyStore(max_entries=0)


class TestRedisFailsClosed:
    @pytest.mark.asyncio
    @pytest.mark.parametrize("action", ["claim", "complete", "release"])
    async def test_unreachable(self, action: str, closed_port: int) -> None:
        store = RedisIdempotencyStore.from_url(f"redis://127.0.0.1:{closed_port}/0", timeout=0.5)
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "claim": lambda: store.claim("t:k", P1, lease=5),
            "complete": lambda: store.complete("t:k", P1, RESPONSE, ttl=5),
            "release": lambda: store.release("t:k", P1),
        }
        try:
            with pytest.raises(DependencyUnavailable) as info:
                await calls[action]()
        finally:
            await store.close()
        assert isinstance(info.value, StorageError)
        assert info.value.code is codes.UNAVAILABLE_STORAGE

    @pytest.mark.asyncio
    async def test_keys_are_prefixed_and_hashed(
        self, redis_store: RedisIdempotencyStore, redis_prefix: str, redis_url: str
    ) -> None:
        await redis_store.claim("acme:abc", P1, lease=5)
        client = Redis.from_url(redis_url)
        try:
            keys = [k async for k in client.scan_iter(match=f"{redis_prefix}*")]
            ttl = await client.pttl(f"{redis_prefix}idem:acme:abc")
        finally:
            await client.aclose()
        assert keys == [f"{redis_prefix}idem:acme:abc".encode()]
        assert 0 < ttl <= 5000
