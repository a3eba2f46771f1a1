"""The Ledger's checkpoint keys in a SoftHSM2 token (``CheckpointKeys(..., hsm=...)``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pkcs11
import pytest
import pytest_asyncio
from pkcs11 import Attribute
from tests.keys.hsm_support import open_token, private_key, raw_session, wait_for
from tests.softhsm_fixtures import SoftHsm, Token

from coupon.errors import DependencyUnavailable
from coupon.keys import MasterKey, Pkcs11Token, parse_reference
from coupon.ledger import Checkpoint, open_checkpoint, parse_vkey, sign_note
from coupon.ledger_service._signing import CheckpointKeys
from coupon.storage.ledger_sql import LedgerStore

ORIGIN = "ledger.example/v1/ledger"
CHECKPOINT = Checkpoint(ORIGIN, 1, bytes(32)).text()


@pytest.fixture
def hsm(hsm_token: Token) -> Iterator[Pkcs11Token]:
    token = open_token(hsm_token)
    yield token
    token.close()


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[LedgerStore]:
    """The Ledger's SQLite store."""
    ledger = await LedgerStore.connect(f"sqlite+aiosqlite:///{tmp_path}/ledger.db")
    await ledger.migrate()
    yield ledger
    await ledger.close()


def verifiers(keys: CheckpointKeys) -> list[object]:
    """The published vkeys, as note verifiers."""
    return [parse_vkey(info.vkey) for info in keys.describe()]


class TestCheckpointKeysInTheToken:
    """Checkpoint keys generated, stored by reference and used in the token."""

    @pytest.mark.asyncio
    async def test_first_key_is_made_in_the_token(
        self, hsm: Pkcs11Token, hsm_token: Token, store: LedgerStore
    ) -> None:
        """An empty log gets a key generated in the token; the row holds a reference and
        the public key; a checkpoint signed with it verifies with the published vkey."""
        keys = CheckpointKeys(store, MasterKey.generate(), ORIGIN, hsm=hsm)
        await keys.load()
        (row,) = await store.signing_keys()
        label, object_id = parse_reference(row["sealed_private"]) or ("", b"")
        assert label == hsm_token.label
        assert object_id == f"ledger:{row['key_id']}".encode()
        note = sign_note(CHECKPOINT, *keys.active()).encode()
        checkpoint, _, signatures = open_checkpoint(note, [parse_vkey(keys.describe()[0].vkey)])
        assert checkpoint.size == 1
        assert len(signatures) == 1
        with raw_session(hsm_token.label) as session:
            key = private_key(session, object_id)
            assert key[Attribute.NEVER_EXTRACTABLE] is True
            with pytest.raises(pkcs11.AttributeSensitive):
                key[Attribute.VALUE]

    @pytest.mark.asyncio
    async def test_rotation_overlap_signs_with_both(
        self, hsm: Pkcs11Token, store: LedgerStore
    ) -> None:
        """After a rotation the old and the new token key both sign; each alone verifies."""
        keys = CheckpointKeys(store, MasterKey.generate(), ORIGIN, hsm=hsm)
        await keys.load()
        new, retiring = await keys.rotate(overlap_ms=60_000)
        assert len(retiring) == 1
        note = sign_note(CHECKPOINT, *keys.active()).encode()
        for vkey in (new.vkey, retiring[0].vkey):
            _, _, signatures = open_checkpoint(note, [parse_vkey(vkey)])
            assert len(signatures) == 1
        assert all(parse_reference(r["sealed_private"]) for r in await store.signing_keys())

    @pytest.mark.asyncio
    async def test_outage_fails_closed_then_recovers(
        self, softhsm: SoftHsm, hsm: Pkcs11Token, store: LedgerStore
    ) -> None:
        """No checkpoint is signed while the token is away; the same key signs afterwards."""
        keys = CheckpointKeys(store, MasterKey.generate(), ORIGIN, hsm=hsm)
        await keys.load()
        sign_note(CHECKPOINT, *keys.active())
        with softhsm.removed(), pytest.raises(DependencyUnavailable):
            sign_note(CHECKPOINT, *keys.active())
        wait_for(lambda: hsm.up, what="reconnecting")
        note = sign_note(CHECKPOINT, *keys.active()).encode()
        open_checkpoint(note, [parse_vkey(keys.describe()[0].vkey)])


class TestNoSoftwareFallback:
    """Keys held one way are never signed with the other way."""

    @pytest.mark.asyncio
    async def test_a_sealed_key_does_not_sign_with_the_hsm_on(
        self, hsm: Pkcs11Token, store: LedgerStore
    ) -> None:
        """A log whose key is sealed in the store, opened with an HSM: signing is refused."""
        master = MasterKey.generate()
        await CheckpointKeys(store, master, ORIGIN).load()  # a software key
        keys = CheckpointKeys(store, master, ORIGIN, hsm=hsm)
        await keys.load()
        with pytest.raises(DependencyUnavailable, match="sealed in the store"):
            sign_note(CHECKPOINT, *keys.active())

    @pytest.mark.asyncio
    async def test_an_hsm_key_does_not_sign_without_it(
        self, hsm: Pkcs11Token, store: LedgerStore
    ) -> None:
        """A log whose key is in a token, opened without the HSM backend: refused, and the
        message names the setting."""
        master = MasterKey.generate()
        await CheckpointKeys(store, master, ORIGIN, hsm=hsm).load()
        keys = CheckpointKeys(store, master, ORIGIN)
        await keys.load()
        assert len(verifiers(keys)) == 1
        with pytest.raises(DependencyUnavailable, match="COUPON_KEY_BACKEND=pkcs11"):
            sign_note(CHECKPOINT, *keys.active())
