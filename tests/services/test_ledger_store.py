"""The Ledger service in one process, on SQLite and on PostgreSQL: appends, receipts,
proofs, tiles, the database's append-only triggers, restarts, personal data and bad input."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import create_async_engine
from tests.services.conftest import PostgresServer
from tests.services.ledger_support import EMITTER, event, running_ledger

from coupon import codes
from coupon.errors import MalformedLogData, NotFound, UntrustedLogData
from coupon.keys import MasterKey
from coupon.ledger import (
    Ed25519Verifier,
    TileBuilder,
    TileRef,
    hash_leaf,
    open_checkpoint,
    parse_bundle,
    verify_consistency,
    verify_inclusion,
)
from coupon.ledger_service import Submission, parse_leaf
from coupon.storage.ledger_sql import SearchFilter
from coupon.storage.sql import normalise_url

pytestmark = pytest.mark.asyncio


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty Ledger database on each engine."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    postgres: PostgresServer = request.getfixturevalue("postgres")
    yield postgres.create_database()


def verifier(ledger: Any) -> Ed25519Verifier:
    """The verifier of the log's current checkpoint key."""
    return Ed25519Verifier.from_vkey(ledger.keys.describe()[-1].vkey)


class TestAppend:
    """Appends are acknowledged after commit with a receipt that proofs confirm."""

    async def test_receipts_and_proofs(self, url: str) -> None:
        """Concurrent appends get consecutive indices; each proves into a signed checkpoint."""
        async with running_ledger(url) as ledger:
            subs = [event(i) for i in range(300)]
            receipts = await asyncio.gather(*(ledger.append(s) for s in subs))
            assert sorted(r.index for r in receipts) == list(range(300))
            row = await ledger.publish(force=True)
            assert row is not None
            assert row.size == 300
            checkpoint, _, _ = open_checkpoint(row.note, [verifier(ledger)])
            assert checkpoint.origin == "test.example/ledger"
            stored = {r.idx: r for r in await ledger.entries(0, 300)}
            for receipt in receipts[::37]:
                assert stored[receipt.index].leaf_hash == receipt.leaf_hash
                assert hash_leaf(stored[receipt.index].data) == receipt.leaf_hash
                proof = await ledger.inclusion_proof(receipt.index, 300)
                verify_inclusion(receipt.index, 300, receipt.leaf_hash, proof, checkpoint.root_hash)

    async def test_duplicate_event(self, url: str) -> None:
        """The same signed event twice is one entry; the second receipt says so."""
        async with running_ledger(url) as ledger:
            sub = event(1)
            first, second = await asyncio.gather(ledger.append(sub), ledger.append(sub))
            third = await ledger.append(sub)
            assert first.index == second.index == third.index == 0
            assert [first.duplicate, second.duplicate, third.duplicate] == [False, True, True]
            assert ledger.head.size == 1

    async def test_tiles_match_the_core(self, url: str) -> None:
        """Hash tiles and entry bundles served are the ones tlog-tiles defines."""
        async with running_ledger(url, batch_size=64) as ledger:
            receipts = [await ledger.append(event(i)) for i in range(5)]
            receipts += await asyncio.gather(*(ledger.append(event(i)) for i in range(5, 300)))
            hashes = [r.leaf_hash for r in sorted(receipts, key=lambda r: r.index)]
            expected = TileBuilder().append(hashes)
            assert await ledger.tile(TileRef(0, 0)) == expected[0, 0]
            assert await ledger.tile(TileRef(0, 1, 44)) == expected[0, 1]
            assert await ledger.tile(TileRef(0, 1, 10)) == expected[0, 1][: 10 * 32]
            assert await ledger.tile(TileRef(1, 0, 1)) == expected[1, 0]
            bundle = parse_bundle(await ledger.tile(TileRef(-1, 1, 44)), count=44)
            assert [hash_leaf(e) for e in bundle] == hashes[256:]
            with pytest.raises(NotFound):
                await ledger.tile(TileRef(0, 1, 45))
            with pytest.raises(NotFound):
                await ledger.tile(TileRef(0, 1))


async def _sql(url: str, statement: str) -> None:
    engine = create_async_engine(normalise_url(url))
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text(statement))
    finally:
        await engine.dispose()


class TestAppendOnlyInTheDatabase:
    """The database itself refuses to rewrite history (triggers, not just Python)."""

    @pytest.mark.parametrize(
        "statement",
        [
            "UPDATE ledger_entries SET data = data WHERE idx = 0",
            "DELETE FROM ledger_entries WHERE idx = 0",
            "UPDATE ledger_checkpoints SET size = size + 1",
            "DELETE FROM ledger_checkpoints",
            "DELETE FROM ledger_tiles",
            "UPDATE ledger_tiles SET hashes = substr(hashes, 1, 32) WHERE level = 0",
            "UPDATE ledger_tiles SET idx = idx + 1",
        ],
    )
    async def test_refused(self, url: str, statement: str) -> None:
        """Rewriting or deleting entries, checkpoints or tiles fails inside the engine."""
        async with running_ledger(url) as ledger:
            await asyncio.gather(*(ledger.append(event(i)) for i in range(3)))
            await ledger.publish(force=True)
        if url.startswith("postgresql"):
            statement = statement.replace(
                "substr(hashes, 1, 32)", "substring(hashes FROM 1 FOR 32)"
            )
        with pytest.raises(
            (IntegrityError, OperationalError, DBAPIError), match=r"append-only|only grow"
        ):
            await _sql(url, statement)

    async def test_tiles_may_grow(self, url: str) -> None:
        """Extending a tile is the one update allowed (that is how the log grows)."""
        async with running_ledger(url) as ledger:
            await ledger.append(event(0))
            tile = await ledger.tile(TileRef(0, 0, 1))
        engine = create_async_engine(normalise_url(url))
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    sa.text("UPDATE ledger_tiles SET hashes = :h WHERE level = 0 AND idx = 0"),
                    {"h": tile + bytes(32)},
                )
        finally:
            await engine.dispose()


class TestRestart:
    """A new process on the same database carries on the same log."""

    async def test_head_survives(self, url: str) -> None:
        """After a restart the head, the checkpoints and the proofs continue consistently."""
        master = MasterKey(os.urandom(32))
        async with running_ledger(url, master=master) as ledger:
            await asyncio.gather(*(ledger.append(event(i)) for i in range(700)))
            first = await ledger.publish(force=True)
            assert first is not None
            vkey = ledger.keys.describe()[-1].vkey
        async with running_ledger(url, master=master) as ledger:
            assert ledger.head.size == 700
            assert ledger.keys.describe()[-1].vkey == vkey
            more = await asyncio.gather(*(ledger.append(event(i)) for i in range(700, 1000)))
            assert min(r.index for r in more) == 700
            second = await ledger.publish(force=True)
            assert second is not None
            assert second.size == 1000
            proof = await ledger.consistency_proof(700, 1000)
            verify_consistency(700, 1000, proof, first.root_hash, second.root_hash)
            assert await ledger.root(700) == first.root_hash


class TestTwoSequencers:
    """Two processes on one log take turns: the write lock and the stored head keep it one."""

    async def test_alternating(self, url: str) -> None:
        """Appends through two Ledgers interleave into one gapless, provable log."""
        master = MasterKey(os.urandom(32))
        async with (
            running_ledger(url, master=master) as one,
            running_ledger(url, master=master) as two,
        ):
            receipts = []
            for round_ in range(6):
                ledger = one if round_ % 2 == 0 else two
                batch = [event(round_ * 100 + i) for i in range(70)]
                receipts += await asyncio.gather(*(ledger.append(s) for s in batch))
            assert sorted(r.index for r in receipts) == list(range(420))
            row = await two.publish(force=True)
            assert row is not None
            assert row.size == 420
            for receipt in receipts[::41]:
                proof = await one.inclusion_proof(receipt.index, 420)
                verify_inclusion(receipt.index, 420, receipt.leaf_hash, proof, row.root_hash)


class TestPersonalData:
    """Personal data is encrypted per subject; erasure shreds it and proofs stay valid."""

    async def test_erase(self, url: str) -> None:
        """Search by subject finds the entries; after erasure they no longer decrypt."""
        async with running_ledger(url) as ledger:
            alice = await ledger.append(event(1, subject="alice"))
            await ledger.append(event(2, subject="bob"))
            row = await ledger.publish(force=True)
            assert row is not None
            (entry,) = await ledger.entries(alice.index, alice.index + 1)
            assert b"alice" not in entry.data  # only ciphertext and a reference
            leaf = parse_leaf(entry.data)
            assert leaf.pd_ref == ledger.vault.ref("alice")
            assert EMITTER.verify(leaf.signed_bytes(), leaf.signature)
            hits = await ledger.search(
                SearchFilter(subject_ref=ledger.vault.ref("alice")), after=-1, limit=10
            )
            assert [h.idx for h in hits] == [alice.index]
            assert b"alice@example" in await ledger.personal_data(entry)
            assert await ledger.vault.erase(ledger.vault.ref("alice"))
            with pytest.raises(NotFound) as caught:
                await ledger.personal_data(entry)
            assert caught.value.code is codes.LOG_ERASED
            proof = await ledger.inclusion_proof(alice.index, row.size)
            verify_inclusion(alice.index, row.size, hash_leaf(entry.data), proof, row.root_hash)


class TestBadInput:
    """Malformed or untrusted events are refused with a code, never stored."""

    async def test_refusals(self, url: str) -> None:
        """Unknown emitter, bad signature, non-canonical JSON, a lying commitment."""
        async with running_ledger(url) as ledger:
            good = event(1)
            with pytest.raises(UntrustedLogData):
                await ledger.append(Submission(good.event, good.signature, "audit:nobody"))
            with pytest.raises(UntrustedLogData):
                await ledger.append(Submission(good.event, bytes(64), good.kid))
            with pytest.raises(MalformedLogData):
                await ledger.append(Submission(good.event + b" ", good.signature, good.kid))
            with pytest.raises(MalformedLogData):
                await ledger.append(Submission(b"[1]", good.signature, good.kid))
            personal = event(2, subject="carol")
            assert personal.personal is not None
            forged = personal.personal.replace(b"carol", b"dave")
            with pytest.raises(MalformedLogData):
                await ledger.append(
                    Submission(personal.event, personal.signature, personal.kid, forged)
                )
            assert ledger.head.size == 0
