"""Revocation fan-out with real engines: two "processes" share a store and a bus.

Each process is a RevocationView fed by its own RevocationSync (and, with Redis, its own
connection). The tests show push delivery, the pull fallback when pushes are lost, the
fail-closed staleness bound, PostgreSQL's seq gaps, and the server-sent-event encoding.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import pytest
import pytest_asyncio
import sqlalchemy as sa
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import create_async_engine

from coupon import codes
from coupon.authority._bus import (
    Fetch,
    InProcessBus,
    RedisBus,
    RevocationBus,
    record_from_json,
    record_to_json,
)
from coupon.authority._revocation import RevocationView
from coupon.authority._sse import (
    SseParser,
    parse_sse,
    revocation_from_sse,
    sse_comment,
    sse_event,
    sse_events,
    sse_stream,
)
from coupon.authority._sync import RevocationSync, Revoker
from coupon.errors import DependencyUnavailable, StorageError
from coupon.storage.base import AuditRecord, RevocationRecord
from coupon.storage.sql import SqlStore, normalise_url
from coupon.token import RevocationFacts

PUSH_BOUND = 0.25  # seconds from publish to applied elsewhere (the aim)


def facts(jti: str) -> RevocationFacts:
    return RevocationFacts((jti,), "lineage", ("alice",), "tenant", "kid", int(time.time()) + 60)


def rec(seq: int, value: str = "j", kind: str = "jti") -> RevocationRecord:
    return RevocationRecord(kind, value, "why", "admin", 1_700_000_000, seq)  # type: ignore[arg-type]


async def revoke_quietly(store: SqlStore, jti: str) -> RevocationRecord:
    """Store a revocation without publishing it (a publish lost in transit)."""
    return await store.add_revocation(
        RevocationRecord("jti", jti, "lost", "admin", int(time.time()))
    )


@dataclass
class Process:
    view: RevocationView
    sync: RevocationSync
    revoker: Revoker


Spawn = Callable[..., Awaitable[Process]]


@pytest_asyncio.fixture
async def spawn(store: SqlStore) -> AsyncIterator[Spawn]:
    """Start Authority-like processes on the shared store; stop them after the test."""
    running: list[tuple[RevocationSync, RevocationBus | None]] = []

    async def start(
        bus: RevocationBus | None,
        *,
        source: Fetch | None = None,
        poll_interval: float = 30.0,
        max_staleness: float = 10.0,
        gap_timeout: float = 30.0,
        ready: bool = True,
    ) -> Process:
        view = RevocationView(max_staleness=max_staleness)
        sync = RevocationSync(
            view,
            source or store,
            bus,
            poll_interval=poll_interval,
            gap_timeout=gap_timeout,
        )
        sync.start()
        running.append((sync, bus))
        if ready:
            await sync.ready(timeout=5)
        return Process(view, sync, Revoker(store, view, bus))

    yield start
    for sync, bus in running:
        await sync.stop()
        if bus is not None:
            await bus.close()


@pytest.fixture(params=["in-process", "redis"])
def make_bus(request: pytest.FixtureRequest) -> Callable[[], RevocationBus]:
    """Buses for the processes of one test: one shared in-process bus, or a Redis bus each."""
    if request.param == "in-process":
        shared = InProcessBus()
        return lambda: shared
    url: str = request.getfixturevalue("redis_url")
    channel = request.getfixturevalue("redis_prefix") + "revocations"
    return lambda: RedisBus(url, channel)


class TestTwoProcesses:
    @pytest.mark.asyncio
    async def test_revocation_reaches_the_other_process(
        self, spawn: Spawn, make_bus: Callable[[], RevocationBus]
    ) -> None:
        """Revoked on A: B enforces it within 250 ms, by push (B's next poll is 30 s away)."""
        a, b = await spawn(make_bus()), await spawn(make_bus())
        assert b.view.revoked(facts("c1"), now=time.time()) is None
        stored = await a.revoker.revoke("jti", "c1", reason="stolen", actor="ops", now=1)
        assert a.view.revoked(facts("c1"), now=time.time()) == "jti c1 revoked: stolen"
        await b.sync.wait_until(stored.seq, timeout=PUSH_BOUND)
        assert b.view.revoked(facts("c1"), now=time.time()) == "jti c1 revoked: stolen"
        assert b.sync.pushes >= 1

    @pytest.mark.asyncio
    async def test_lost_publish_converges_by_polling(
        self, spawn: Spawn, make_bus: Callable[[], RevocationBus], store: SqlStore
    ) -> None:
        """A revocation whose publish was lost reaches B at B's next pull."""
        b = await spawn(make_bus(), poll_interval=0.05)
        stored = await revoke_quietly(store, "c2")
        await b.sync.wait_until(stored.seq, timeout=1)
        assert b.view.revoked(facts("c2"), now=time.time()) is not None

    @pytest.mark.asyncio
    async def test_push_past_a_gap_pulls_the_rest(
        self, spawn: Spawn, make_bus: Callable[[], RevocationBus], store: SqlStore
    ) -> None:
        """B, pushed seq n+1 while missing n, pulls at once instead of waiting for its poll."""
        a, b = await spawn(make_bus()), await spawn(make_bus())
        missed = await revoke_quietly(store, "c3")
        pushed = await a.revoker.revoke("jti", "c4", reason="r", actor="ops", now=1)
        await b.sync.wait_until(missed.seq, timeout=PUSH_BOUND)
        assert b.view.cursor == pushed.seq

    @pytest.mark.asyncio
    async def test_propagation_latency(
        self, spawn: Spawn, make_bus: Callable[[], RevocationBus], store: SqlStore
    ) -> None:
        """Over 150 revocations, every publish is applied by B within the 250 ms bound."""
        bus_a = make_bus()
        a, b = await spawn(bus_a), await spawn(make_bus())
        latencies = []
        for i in range(150):
            stored = await store.add_revocation(
                RevocationRecord("jti", f"lat-{i}", "r", "ops", int(time.time()))
            )
            a.view.apply([stored])
            started = time.perf_counter()
            await bus_a.publish(stored)
            await b.sync.wait_until(stored.seq, timeout=PUSH_BOUND)
            latencies.append(time.perf_counter() - started)
        p99 = statistics.quantiles(latencies, n=100)[98]
        print(
            f"publish->applied p50={statistics.median(latencies) * 1e3:.2f}ms p99={p99 * 1e3:.2f}ms"
        )
        assert max(latencies) < PUSH_BOUND


class TestRedisOutage:
    @pytest.mark.asyncio
    async def test_killed_subscription_reconnects_and_resyncs(
        self, spawn: Spawn, store: SqlStore, redis_url: str, redis_prefix: str, redis_conn: Redis
    ) -> None:
        """CLIENT KILL of B's pub/sub connection: B reconnects, pulls what it may have missed."""
        channel, name = redis_prefix + "revocations", f"coupon-test-{secrets.token_hex(4)}"
        a = await spawn(RedisBus(redis_url, channel))
        b = await spawn(RedisBus(redis_url, channel, client_name=name))
        missed = await revoke_quietly(store, "while-down")
        await asyncio.sleep(0.05)
        assert not b.view.known(missed.seq)  # no push, and B's next poll is 30 s away

        killed = 0
        for client in await redis_conn.client_list(_type="pubsub"):
            if client.get("name") == name:
                killed += await redis_conn.client_kill_filter(_id=client["id"])
        assert killed == 1
        await b.sync.wait_until(missed.seq, timeout=2)
        assert b.sync.resyncs >= 2

        later = await a.revoker.revoke("jti", "after", reason="r", actor="ops", now=1)
        await b.sync.wait_until(later.seq, timeout=PUSH_BOUND)  # pushes flow again

    @pytest.mark.asyncio
    async def test_garbage_on_the_channel_triggers_a_pull(
        self, spawn: Spawn, redis_url: str, redis_prefix: str, redis_conn: Redis
    ) -> None:
        """A message that is not a revocation is dropped and makes the subscriber pull."""
        channel = redis_prefix + "revocations"
        b = await spawn(RedisBus(redis_url, channel))
        resyncs, pulls = b.sync.resyncs, b.sync.pulls
        assert await redis_conn.publish(channel, "not a revocation") == 1
        async with asyncio.timeout(1):
            while b.sync.pulls == pulls:
                await asyncio.sleep(0.01)
        assert b.sync.resyncs == resyncs + 1
        assert b.sync.pushes == 0

    @pytest.mark.asyncio
    async def test_idle_subscription_survives_pings(
        self, spawn: Spawn, redis_url: str, redis_prefix: str
    ) -> None:
        """With no traffic the bus pings; answered pings keep the one subscription up."""
        channel = redis_prefix + "revocations"
        bus_b = RedisBus(redis_url, channel, ping_interval=0.05)
        a, b = await spawn(RedisBus(redis_url, channel)), await spawn(bus_b)
        await asyncio.sleep(0.3)
        stored = await a.revoker.revoke("jti", "idle", reason="r", actor="ops", now=1)
        await b.sync.wait_until(stored.seq, timeout=PUSH_BOUND)
        assert bus_b.subscriptions == 1

    @pytest.mark.asyncio
    async def test_redis_down_for_a_subscriber_polling_converges(
        self, spawn: Spawn, redis_url: str, redis_prefix: str, closed_port: int
    ) -> None:
        """B cannot reach Redis at all; its pull fallback still enforces A's revocations."""
        channel = redis_prefix + "revocations"
        a = await spawn(RedisBus(redis_url, channel))
        dead = RedisBus(f"redis://127.0.0.1:{closed_port}/0", channel, timeout=0.2, backoff=0.05)
        b = await spawn(dead, poll_interval=0.05, ready=False)
        stored = await a.revoker.revoke("jti", "c5", reason="r", actor="ops", now=1)
        await b.sync.wait_until(stored.seq, timeout=1)
        assert b.view.revoked(facts("c5"), now=time.time()) is not None
        assert b.sync.pushes == 0
        assert b.view.staleness(time.time()) < 1

    @pytest.mark.asyncio
    async def test_publish_to_unreachable_redis_is_still_acknowledged(
        self, spawn: Spawn, store: SqlStore, closed_port: int
    ) -> None:
        """The revocation is committed and enforced locally even when the publish fails."""
        dead = RedisBus(f"redis://127.0.0.1:{closed_port}/0", timeout=0.2)
        a = await spawn(dead, ready=False)
        stored = await a.revoker.revoke("jti", "c6", reason="r", actor="ops", now=1)
        assert a.revoker.publish_failures == 1
        assert a.view.known(stored.seq)
        assert await store.revocations_after(0, limit=10) == [stored]


class TestStaleness:
    @pytest.mark.asyncio
    async def test_failing_pull_source_fails_closed(self, spawn: Spawn, store: SqlStore) -> None:
        """B's pull source fails for longer than max_staleness: B denies with CPN-DEP-001."""
        broken = False

        async def fetch(after: int, limit: int) -> list[RevocationRecord]:
            if broken:
                raise StorageError(codes.UNAVAILABLE_STORAGE, "database down")
            return await store.revocations_after(after, limit=limit)

        bus = InProcessBus()
        a = await spawn(bus)
        b = await spawn(bus, source=fetch, poll_interval=0.05, max_staleness=0.3)
        assert b.view.revoked(facts("ok"), now=time.time()) is None

        broken = True
        await asyncio.sleep(0.45)
        with pytest.raises(DependencyUnavailable) as info:
            b.view.revoked(facts("ok"), now=time.time())
        assert info.value.code.code == "CPN-DEP-001"
        assert b.sync.pull_failures >= 3
        assert b.sync.last_error is not None
        assert "database down" in b.sync.last_error

        # Pushes still arrive, and a known revocation keeps its precise reason.
        stored = await a.revoker.revoke("jti", "bad", reason="leaked", actor="ops", now=1)
        await b.sync.wait_until(stored.seq, timeout=PUSH_BOUND)
        assert b.view.revoked(facts("bad"), now=time.time()) == "jti bad revoked: leaked"

        broken = False
        await asyncio.sleep(0.15)
        assert b.view.revoked(facts("ok"), now=time.time()) is None


class TestPostgresGaps:
    """seq gaps from rolled-back or concurrent inserts: PostgreSQL only (SQLite serialises)."""

    @pytest.fixture
    def store(self, postgres_store: SqlStore) -> SqlStore:
        """Every process of these tests shares the PostgreSQL store."""
        return postgres_store

    @pytest.mark.asyncio
    async def test_rolled_back_seq_is_skipped_after_gap_timeout(
        self, spawn: Spawn, store: SqlStore, postgres_url: str
    ) -> None:
        """A seq burnt by a rolled-back insert holds the cursor only for gap_timeout."""
        first = await revoke_quietly(store, "g1")
        engine = create_async_engine(normalise_url(postgres_url))
        async with engine.begin() as conn:
            await conn.execute(
                sa.text("SELECT nextval(pg_get_serial_sequence('revocations', 'seq'))")
            )
        await engine.dispose()
        third = await revoke_quietly(store, "g3")
        assert third.seq == first.seq + 2

        b = await spawn(None, poll_interval=0.05, gap_timeout=0.3)
        assert b.view.revoked(facts("g3"), now=time.time()) is not None
        assert b.view.cursor == first.seq
        await b.sync.wait_until(first.seq + 1, timeout=2)
        assert b.view.cursor == third.seq

    @pytest.mark.asyncio
    async def test_late_commit_is_not_missed(
        self, spawn: Spawn, store: SqlStore, postgres_url: str
    ) -> None:
        """seq n commits after n+1 (and its publish is lost): the held cursor still finds it."""
        engine = create_async_engine(normalise_url(postgres_url))
        try:
            async with engine.connect() as slow:
                transaction = await slow.begin()
                result = await slow.execute(
                    sa.text(
                        "INSERT INTO revocations (kind, value, reason, actor, revoked_at)"
                        " VALUES ('jti', 'slow', 'r', 'ops', 1) RETURNING seq"
                    )
                )
                slow_seq = result.scalar_one()
                fast = await revoke_quietly(store, "fast")
                assert fast.seq == slow_seq + 1

                b = await spawn(None, poll_interval=0.05)
                assert b.view.known(fast.seq)
                assert b.view.cursor == slow_seq - 1
                await transaction.commit()
            await b.sync.wait_until(slow_seq, timeout=1)
            assert b.view.revoked(facts("slow"), now=time.time()) is not None
            assert b.view.cursor == fast.seq
        finally:
            await engine.dispose()


class TestRevoker:
    @pytest.mark.asyncio
    async def test_durable_before_acknowledged(self, store: SqlStore, store_url: str) -> None:
        """Once revoke() returns, a process started afresh on the store (a restart) sees it."""
        bus = InProcessBus()
        revoker = Revoker(store, RevocationView(max_staleness=5), bus)
        stored = await revoker.revoke("lineage", "L1", reason="r", actor="ops", now=7)
        assert stored.seq > 0

        restarted = await SqlStore.connect(store_url)
        try:
            view = RevocationView(max_staleness=5)
            await RevocationSync(view, restarted, None).pull()
        finally:
            await restarted.close()
        assert view.known(stored.seq)
        lineage_facts = RevocationFacts(("x",), "L1", ("s",), "t", "k", 0)
        assert view.revoked(lineage_facts, now=time.time()) == "lineage L1 revoked: r"

    @pytest.mark.asyncio
    async def test_store_failure_revokes_nothing(self) -> None:
        """If the commit fails the caller gets the StorageError; nothing is applied or sent."""

        class DownStore:
            async def add_revocations(
                self, records: Sequence[RevocationRecord], *, audit: AuditRecord | None = None
            ) -> list[RevocationRecord]:
                raise StorageError(codes.UNAVAILABLE_STORAGE, "down")

        bus = InProcessBus()
        received = bus.subscribe()
        view = RevocationView(max_staleness=5)
        with pytest.raises(StorageError):
            await Revoker(DownStore(), view, bus).revoke("jti", "j", reason="r", actor="a", now=1)
        assert view.highest == 0
        await bus.close()
        assert [r async for r in received] == []

    @pytest.mark.asyncio
    async def test_unknown_kind(self, store: SqlStore) -> None:
        """Only the five kinds can be revoked."""
        revoker = Revoker(store, RevocationView(max_staleness=5), None)
        with pytest.raises(ValueError, match="kind"):
            await revoker.revoke("x5t", "v", reason="r", actor="a", now=1)  # type: ignore[arg-type]


class TestSyncUnit:
    @pytest.mark.asyncio
    async def test_pages(self) -> None:
        """A pull follows pages until a short one and marks the view fresh."""
        records = [rec(i, f"j{i}") for i in range(1, 6)]
        calls: list[int] = []

        async def fetch(after: int, limit: int) -> list[RevocationRecord]:
            calls.append(after)
            return [r for r in records if r.seq > after][:limit]

        view = RevocationView(max_staleness=5)
        sync = RevocationSync(view, fetch, None, page_size=2, clock=lambda: 123.0)
        assert await sync.pull() == 5
        assert (calls, view.cursor, view.fresh_at) == ([0, 2, 4], 5, 123.0)

    @pytest.mark.asyncio
    async def test_out_of_order_source_is_refused(self) -> None:
        """A source answering with records at or below the cursor is a broken feed."""

        async def fetch(after: int, limit: int) -> list[RevocationRecord]:
            return [rec(2), rec(1)]

        view = RevocationView(max_staleness=5)
        with pytest.raises(DependencyUnavailable, match="out of order"):
            await RevocationSync(view, fetch, None).pull()
        assert view.fresh_at is None

    @pytest.mark.asyncio
    async def test_pushed_seq_alone_never_skips_a_gap(self) -> None:
        """A gap only a push reveals (nothing above it in the source) is never skipped."""

        async def fetch(after: int, limit: int) -> list[RevocationRecord]:
            return [r for r in (rec(1),) if r.seq > after]

        view = RevocationView(max_staleness=5)
        sync = RevocationSync(view, fetch, None, gap_timeout=0)
        view.apply([rec(1_000_000, "forged")])
        await sync.pull()
        await sync.pull()
        assert view.cursor == 1

    @pytest.mark.asyncio
    async def test_timeouts(self) -> None:
        """wait_until and ready raise TimeoutError when nothing happens."""

        async def fetch(after: int, limit: int) -> list[RevocationRecord]:
            raise StorageError(codes.UNAVAILABLE_STORAGE, "down")

        async with RevocationSync(RevocationView(max_staleness=5), fetch, None) as sync:
            with pytest.raises(TimeoutError):
                await sync.wait_until(1, timeout=0.05)
            with pytest.raises(TimeoutError):
                await sync.ready(timeout=0.05)


class TestInProcessBus:
    @pytest.mark.asyncio
    async def test_subscribers_get_what_follows_their_subscription(self) -> None:
        """Each subscriber receives every message published after it subscribed."""
        bus = InProcessBus()
        early = bus.subscribe()
        await bus.publish(rec(1))
        late = bus.subscribe()
        await bus.publish(rec(2))
        await bus.close()
        assert [r.seq async for r in early] == [1, 2]
        assert [r.seq async for r in late] == [2]

    @pytest.mark.asyncio
    async def test_overflow_asks_for_a_resync(self) -> None:
        """A subscriber that falls behind loses messages and is told to pull."""
        bus = InProcessBus(max_queue=2)
        resyncs: list[int] = []
        sub = bus.subscribe(on_resync=lambda: resyncs.append(1))
        for seq in range(1, 5):
            await bus.publish(rec(seq))
        await bus.close()
        assert [r.seq async for r in sub] == [1, 2]
        assert len(resyncs) == 2  # on subscribing, then on the overflow

    @pytest.mark.asyncio
    async def test_closed(self) -> None:
        """A closed bus refuses to publish or subscribe."""
        bus = InProcessBus()
        await bus.close()
        with pytest.raises(RuntimeError):
            await bus.publish(rec(1))
        with pytest.raises(RuntimeError):
            bus.subscribe()


class TestSseStream:
    @pytest.mark.asyncio
    async def test_backlog_then_live(
        self, store: SqlStore, make_bus: Callable[[], RevocationBus]
    ) -> None:
        """The stream replays after Last-Event-ID, then pushes new revocations as they come."""
        old = [await revoke_quietly(store, f"old{i}") for i in range(3)]
        bus = make_bus()
        stream = sse_stream(store, bus, after=old[0].seq, heartbeat=5)
        parser = SseParser()
        received: list[RevocationRecord] = []

        async def read_until(count: int) -> None:
            async with asyncio.timeout(2):
                while len(received) < count:
                    received.extend(
                        revocation_from_sse(e) for e in parser.feed(await anext(stream))
                    )

        try:
            await read_until(2)
            assert received == old[1:]
            revoker = Revoker(store, RevocationView(max_staleness=5), bus)
            new = await revoker.revoke("subject", "alice", reason="r", actor="ops", now=1)
            await read_until(3)
            assert received[-1] == new
        finally:
            await stream.aclose()
            await bus.close()
        assert parser.comments == 1  # ": connected"

    @pytest.mark.asyncio
    async def test_heartbeat_pulls_a_lost_publish(self, store: SqlStore) -> None:
        """Idle streams send heartbeat comments, and each heartbeat re-pulls the store."""
        bus = InProcessBus()
        stream = sse_stream(store, bus, heartbeat=0.05)
        try:
            assert await anext(stream) == sse_comment("connected")
            assert await anext(stream) == sse_comment()  # the backlog was empty
            lost = await revoke_quietly(store, "lost")
            assert await anext(stream) == sse_event(lost)
        finally:
            await stream.aclose()
            await bus.close()


class TestSseCodec:
    RECORDS = (
        RevocationRecord("jti", "a", "plain", "ops", 1, 1),
        RevocationRecord("tenant", "t:1", 'line\nbreak "quoted" ünïcode', "ops", 2, 2),
    )

    def test_round_trip(self) -> None:
        """Encoded revocations parse back to the same records, with id = seq."""
        events = parse_sse(sse_comment() + sse_events(self.RECORDS))
        assert [e.id for e in events] == ["1", "2"]
        assert [revocation_from_sse(e) for e in events] == list(self.RECORDS)

    def test_one_line_per_record(self) -> None:
        """A newline inside a field cannot break the event framing."""
        assert sse_event(self.RECORDS[1]).count("\n") == 4

    @pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"])
    def test_byte_by_byte_with_any_line_ending(self, eol: str) -> None:
        """An incremental parser fed one character at a time sees the same events."""
        text = (sse_comment() + sse_events(self.RECORDS)).replace("\n", eol)
        parser = SseParser()
        events = [e for ch in text for e in parser.feed(ch)]
        assert [revocation_from_sse(e) for e in events] == list(self.RECORDS)
        assert parser.comments == 1

    def test_unterminated_event_is_dropped(self) -> None:
        """An event without its blank line is not dispatched (the connection died mid-way)."""
        assert parse_sse(sse_event(self.RECORDS[0]).rstrip("\n")) == []

    def test_wrong_event_or_id(self) -> None:
        """Another event type, or an id that is not the record's seq, is refused."""
        data = record_to_json(self.RECORDS[0])
        for text in (
            f"event: other\ndata: {data}\n\n",
            f"id: 9\nevent: revocation\ndata: {data}\n\n",
        ):
            with pytest.raises(DependencyUnavailable):
                revocation_from_sse(parse_sse(text)[0])

    GOOD: ClassVar[dict[str, object]] = {
        "seq": 1,
        "kind": "jti",
        "value": "v",
        "reason": "r",
        "actor": "a",
        "revoked_at": 1,
    }

    @pytest.mark.parametrize(
        "message",
        [
            "not json",
            "[]",
            json.dumps({**GOOD, "seq": 0}),
            json.dumps({**GOOD, "seq": True}),
            json.dumps({**GOOD, "kind": "x5t"}),
            json.dumps({**GOOD, "value": 5}),
            json.dumps({**GOOD, "revoked_at": "1"}),
            json.dumps({k: v for k, v in GOOD.items() if k != "revoked_at"}),
            b"\xff\xfe",
            "[" * 50_000,
            json.dumps({**GOOD, "value": "x" * 70_000}),
        ],
    )
    def test_malformed_messages(self, message: str | bytes) -> None:
        """Anything but a stored revocation is CPN-DEP-001, never a raw ValueError."""
        with pytest.raises(DependencyUnavailable) as info:
            record_from_json(message)
        assert info.value.code is codes.UNAVAILABLE_REVOCATION

    def test_comment_is_one_line(self) -> None:
        """A comment with a line break is a programming error."""
        with pytest.raises(ValueError, match="one line"):
            sse_comment("a\nb")
