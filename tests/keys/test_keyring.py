"""The keyring (``coupon.keys._keyring``) over a real SQLite store and a small fake."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from coupon import codes
from coupon.errors import Conflict, DependencyUnavailable
from coupon.keys import Keyring, KeyStore, MasterKey, SealedKeys
from coupon.storage.base import KeyRecord, KeyState
from coupon.storage.sql import SqlStore
from coupon.token import KeySet, Signer, SigningKey

MAX_TTL, LEEWAY = 3600, 30
T0 = 1_700_000_000
STANDARD_MEMBERS = {"kty", "crv", "x", "y", "kid", "alg", "use"}


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = float(T0)

    def __call__(self) -> float:
        return self.now


class FakeKeyStore:
    """Only the key methods of the Store, in memory; lets a test damage rows.

    Each call yields to the event loop first, so concurrent keyrings interleave as they
    would over a database.
    """

    def __init__(self) -> None:
        self.rows: dict[str, KeyRecord] = {}

    async def list_keys(self) -> list[KeyRecord]:
        await asyncio.sleep(0)
        return sorted(self.rows.values(), key=lambda r: r.created_at)

    async def add_key(self, record: KeyRecord) -> None:
        await asyncio.sleep(0)
        if record.kid in self.rows:
            raise Conflict(codes.CONFLICT, f"key {record.kid} already exists")
        self.rows[record.kid] = record

    async def update_key(
        self, kid: str, *, state: KeyState, activated_at: int | None, retire_after: int | None
    ) -> None:
        await asyncio.sleep(0)
        self.rows[kid] = dataclasses.replace(
            self.rows[kid], state=state, activated_at=activated_at, retire_after=retire_after
        )


@pytest_asyncio.fixture(params=["sqlite", "fake"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[KeyStore]:
    if request.param == "fake":
        yield FakeKeyStore()
        return
    sql = await SqlStore.connect(f"sqlite+aiosqlite:///{tmp_path}/a.db")
    await sql.migrate()
    yield sql
    await sql.close()


@pytest.fixture
def master() -> MasterKey:
    return MasterKey.generate()


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def open_keyring(
    store: KeyStore, keys: MasterKey | SealedKeys | ListBackend, clock: Clock, **kw: int
) -> Keyring:
    return await Keyring.open(
        store, keys, alg="EdDSA", max_ttl=MAX_TTL, leeway=LEEWAY, clock=clock, **kw
    )


def signs_for(keyset: KeySet, signer: Signer) -> bool:
    """Whether ``keyset`` verifies what ``signer`` signs."""
    public = keyset.get(signer.kid)
    return public is not None and public.verify(signer.sign(b"coupon"), b"coupon")


class ListBackend:
    """An HSM stand-in: hands out keys from a list; nothing private reaches the store."""

    def __init__(self, keys: list[SigningKey]) -> None:
        self.keys = {k.kid: k for k in keys}
        self.order: Iterator[SigningKey] = iter(keys)

    def generate(self, alg: str) -> tuple[Signer, bytes | None]:
        return next(self.order), None

    def load(self, record: KeyRecord) -> Signer:
        return self.keys[record.kid]


class TestOpen:
    @pytest.mark.asyncio
    async def test_bootstraps_an_empty_store(
        self, store: KeyStore, master: MasterKey, clock: Clock
    ) -> None:
        """The first start stores a current and a next key and signs with the current one."""
        keyring = await open_keyring(store, master, clock)
        states = {k["state"]: k for k in keyring.describe()}
        assert set(states) == {"current", "next"}
        assert keyring.signer.kid == states["current"]["kid"]
        assert states["current"]["activated_at"] == T0
        assert signs_for(keyring.keyset(), keyring.signer)
        assert keyring.keyset().signer is keyring.signer

    @pytest.mark.asyncio
    async def test_private_keys_are_sealed(
        self, store: KeyStore, master: MasterKey, clock: Clock
    ) -> None:
        """What the store holds of a private key is a sealed blob, never the scalar."""
        keyring = await open_keyring(store, master, clock)
        for record in await store.list_keys():
            assert record.sealed_private is not None
            assert b'"d"' not in record.sealed_private
            assert "d" not in record.public_jwk
            assert SealedKeys(master).load(record).kid == record.kid
        assert keyring.signer.kid in {r.kid for r in await store.list_keys()}

    @pytest.mark.asyncio
    async def test_second_start_keeps_the_keys(
        self, store: KeyStore, master: MasterKey, clock: Clock
    ) -> None:
        """A restart (or a second process) signs with the same stored key."""
        first = await open_keyring(store, master, clock)
        second = await open_keyring(store, master, clock)
        assert second.describe() == first.describe()
        assert signs_for(first.keyset(), second.signer)

    @pytest.mark.asyncio
    async def test_simultaneous_starts_converge(
        self, store: KeyStore, master: MasterKey, clock: Clock
    ) -> None:
        """Two processes bootstrapping one empty store end with one current and one next key."""
        a, b = await asyncio.gather(
            open_keyring(store, master, clock), open_keyring(store, master, clock)
        )
        await a.reload()
        await b.reload()
        assert a.signer.kid == b.signer.kid
        if isinstance(store, FakeKeyStore):  # deterministic interleaving: both bootstrapped
            assert len(a.describe()) == 4
        states = [k["state"] for k in a.describe()]
        assert states.count("current") == 1
        assert states.count("next") == 1
        for key in a.describe():  # every key either process may have signed with stays listed
            assert key["state"] != "retired"

    @pytest.mark.asyncio
    async def test_conflicting_add_is_another_process_write(
        self, store: KeyStore, clock: Clock
    ) -> None:
        """A Conflict from add_key (the same kid written by a racing process) is not an error."""
        keys = [SigningKey.generate(kid=f"hsm-{i}") for i in range(2)]
        a, b = await asyncio.gather(
            open_keyring(store, ListBackend(keys), clock),
            open_keyring(store, ListBackend(keys), clock),
        )
        assert a.signer.kid == b.signer.kid == "hsm-0"
        assert [k["kid"] for k in a.describe()] == ["hsm-0", "hsm-1"]


class TestPublication:
    @pytest.mark.asyncio
    async def test_jwks_has_standard_members_only(
        self, store: KeyStore, master: MasterKey, clock: Clock
    ) -> None:
        """The JWKS lists current then next, with no state or other private members."""
        keyring = await open_keyring(store, master, clock)
        jwks = keyring.jwks()
        assert [k["kid"] for k in jwks["keys"]] == [k["kid"] for k in keyring.describe()]
        for jwk in jwks["keys"]:
            assert set(jwk) <= STANDARD_MEMBERS
            assert jwk["use"] == "sig"
        assert len(KeySet.from_jwks(jwks)) == 2

    @pytest.mark.asyncio
    async def test_retiring_key_stays_until_its_coupons_expire(
        self, store: KeyStore, master: MasterKey, clock: Clock
    ) -> None:
        """After a rotation the old key verifies until max_ttl + leeway, then expire drops it."""
        keyring = await open_keyring(store, master, clock)
        old = keyring.signer
        await keyring.rotate("admin")
        assert [k["kid"] for k in keyring.jwks()["keys"]][2] == old.kid
        clock.now += MAX_TTL + LEEWAY - 1
        assert signs_for(keyring.keyset(), old)
        assert await keyring.expire() == []
        clock.now += 1
        assert old.kid not in {k["kid"] for k in keyring.jwks()["keys"]}
        assert keyring.keyset().get(old.kid) is None
        assert await keyring.expire() == [old.kid]
        assert {k["kid"]: k["state"] for k in keyring.describe()}[old.kid] == "retired"


class TestRotate:
    @pytest.mark.asyncio
    async def test_next_key_signs(self, store: KeyStore, master: MasterKey, clock: Clock) -> None:
        """Rotation makes the published next key sign and reports what changed."""
        keyring = await open_keyring(store, master, clock)
        before = {k["state"]: k["kid"] for k in keyring.describe()}
        clock.now += 60
        event = await keyring.rotate("alice")
        assert (event.action, event.actor, event.at) == ("rotate", "alice", T0 + 60)
        assert event.previous_kid == before["current"]
        assert event.signing_kid == before["next"] == keyring.signer.kid
        assert event.next_kid not in before.values()
        assert [k["state"] for k in keyring.describe()] == ["current", "next", "retiring"]

    @pytest.mark.asyncio
    async def test_other_process_converges_on_reload(
        self, store: KeyStore, master: MasterKey, clock: Clock
    ) -> None:
        """A rotation in one process reaches another at its next reload."""
        a = await open_keyring(store, master, clock)
        b = await open_keyring(store, master, clock)
        old = b.signer
        await a.rotate("admin")
        assert b.signer.kid == old.kid
        await b.reload()
        assert b.signer.kid == a.signer.kid
        assert signs_for(b.keyset(), old)

    @pytest.mark.asyncio
    async def test_refused_before_publish_lead(
        self, store: KeyStore, master: MasterKey, clock: Clock
    ) -> None:
        """A next key younger than publish_lead may not sign yet; nothing changes."""
        keyring = await open_keyring(store, master, clock, publish_lead=300)
        before = keyring.describe()
        clock.now += 299
        with pytest.raises(Conflict, match=f"rotation is possible at {T0 + 300}"):
            await keyring.rotate("admin")
        assert keyring.describe() == before
        clock.now += 1
        await keyring.rotate("admin")

    @pytest.mark.asyncio
    async def test_rollback(self, store: KeyStore, master: MasterKey, clock: Clock) -> None:
        """A rollback brings the previous key back while it is still published."""
        keyring = await open_keyring(store, master, clock)
        first = keyring.signer.kid
        with pytest.raises(Conflict, match="nothing to roll back"):
            await keyring.rollback("admin")
        rotated = await keyring.rotate("admin")
        event = await keyring.rollback("bob")
        assert (event.action, event.actor) == ("rollback", "bob")
        assert (event.previous_kid, event.signing_kid) == (rotated.signing_kid, first)
        assert event.next_kid == rotated.signing_kid
        assert keyring.signer.kid == first


class TestFailClosed:
    @pytest.mark.asyncio
    async def test_wrong_master_key(self, store: KeyStore, master: MasterKey, clock: Clock) -> None:
        """Under another master key nothing signs, but the published keys still verify."""
        await open_keyring(store, master, clock)
        keyring = await open_keyring(store, MasterKey.generate(), clock)
        with pytest.raises(DependencyUnavailable) as info:
            _ = keyring.signer
        assert info.value.code is codes.UNAVAILABLE_SIGNER
        assert "SealingError" in info.value.reason
        assert len(keyring.jwks()["keys"]) == 2
        assert keyring.keyset().get(keyring.describe()[0]["kid"]) is not None

    @pytest.mark.asyncio
    async def test_rotation_to_an_unusable_key_changes_nothing(
        self, master: MasterKey, clock: Clock
    ) -> None:
        """If the next key cannot be unsealed, rotation is refused before any write."""
        store = FakeKeyStore()
        keyring = await open_keyring(store, master, clock)
        nxt = next(r for r in store.rows.values() if r.state == "next")
        store.rows[nxt.kid] = dataclasses.replace(nxt, sealed_private=b"\x01" + bytes(40))
        other = await open_keyring(store, master, clock)
        before = other.describe()
        with pytest.raises(DependencyUnavailable, match=nxt.kid):
            await other.rotate("admin")
        assert other.describe() == before
        assert other.signer.kid == keyring.signer.kid

    @pytest.mark.asyncio
    async def test_blob_moved_to_another_kid(self, master: MasterKey, clock: Clock) -> None:
        """A sealed private key copied onto another key's row does not sign."""
        store = FakeKeyStore()
        await open_keyring(store, master, clock)
        current, nxt = sorted(store.rows.values(), key=lambda r: r.state)
        store.rows[current.kid] = dataclasses.replace(current, sealed_private=nxt.sealed_private)
        keyring = await open_keyring(store, master, clock)
        with pytest.raises(DependencyUnavailable, match="moved from another kid"):
            _ = keyring.signer

    @pytest.mark.asyncio
    async def test_private_key_not_matching_public(self, master: MasterKey, clock: Clock) -> None:
        """A row whose public JWK is not the sealed key's is not used to sign."""
        store = FakeKeyStore()
        await open_keyring(store, master, clock)
        current = next(r for r in store.rows.values() if r.state == "current")
        stranger = SigningKey.generate(kid=current.kid).public.jwk()
        store.rows[current.kid] = dataclasses.replace(current, public_jwk=stranger)
        keyring = await open_keyring(store, master, clock)
        with pytest.raises(DependencyUnavailable, match="does not match"):
            _ = keyring.signer

    @pytest.mark.asyncio
    async def test_damaged_public_jwk(self, master: MasterKey, clock: Clock) -> None:
        """A row with an unusable public JWK is neither published nor used to sign."""
        store = FakeKeyStore()
        await open_keyring(store, master, clock)
        current = next(r for r in store.rows.values() if r.state == "current")
        store.rows[current.kid] = dataclasses.replace(current, public_jwk={"kty": "RSA"})
        keyring = await open_keyring(store, master, clock)
        with pytest.raises(DependencyUnavailable, match="unusable public JWK"):
            _ = keyring.signer
        assert current.kid not in {k["kid"] for k in keyring.jwks()["keys"]}

    @pytest.mark.asyncio
    async def test_nothing_published(self, master: MasterKey, clock: Clock) -> None:
        """With no usable public key the JWKS is empty and a verifier gets no key set."""
        store = FakeKeyStore()
        await open_keyring(store, master, clock)
        for kid, row in store.rows.items():
            store.rows[kid] = dataclasses.replace(row, public_jwk={})
        keyring = await open_keyring(store, master, clock)
        assert keyring.jwks() == {"keys": []}
        with pytest.raises(DependencyUnavailable, match="no key is published"):
            keyring.keyset()

    @pytest.mark.asyncio
    async def test_two_current_keys_are_repaired(self, master: MasterKey, clock: Clock) -> None:
        """Two current keys are repaired on load; the demoted one stays published."""
        store = FakeKeyStore()
        await open_keyring(store, master, clock)
        nxt = next(r for r in store.rows.values() if r.state == "next")
        await store.update_key(nxt.kid, state="current", activated_at=T0 + 1, retire_after=None)
        clock.now += 2
        keyring = await open_keyring(store, master, clock)
        assert keyring.signer.kid == nxt.kid
        states = sorted(k["state"] for k in keyring.describe())
        assert states == ["current", "next", "retiring"]


class TestSignerSeam:
    @pytest.mark.asyncio
    async def test_backend_keeps_private_keys(self, store: KeyStore, clock: Clock) -> None:
        """With another backend (an HSM) the store holds no private key and signing works."""
        keys = [SigningKey.generate(kid=f"hsm-{i}") for i in range(3)]
        keyring = await open_keyring(store, ListBackend(keys), clock)
        assert keyring.signer is keys[0]
        assert all(r.sealed_private is None for r in await store.list_keys())
        await keyring.rotate("admin")
        assert keyring.signer is keys[1]
        assert signs_for(keyring.keyset(), keys[0])

    @pytest.mark.asyncio
    async def test_repr(self, store: KeyStore, master: MasterKey, clock: Clock) -> None:
        """The repr names the signing kid and never key material."""
        keyring = await open_keyring(store, master, clock)
        assert repr(keyring) == f"Keyring(signing={keyring.signer.kid!r}, keys=2)"
