"""The Authority's keyring: the signing key, the published keys and their rotation.

The keyring keeps a snapshot of the stored keys in memory and signs only through the
:class:`~coupon.token.Signer` objects its :class:`~coupon.keys.KeyBackend` hands out, so an
HSM can hold the private keys instead of the store. The rotation rules are the pure
functions of :mod:`coupon.keys._plan`; this module applies their plans to the store.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, TypedDict

from coupon import codes
from coupon.errors import Conflict, DependencyUnavailable
from coupon.storage.base import KeyRecord
from coupon.token import KeySet, Signer, VerifyingKey

from . import _plan as plan
from ._sealing import KeyBackend, MasterKey, SealedKeys, SignerHealth

if TYPE_CHECKING:
    from coupon.storage.base import KeyState

__all__ = ["KeyEvent", "KeyInfo", "KeyStore", "Keyring"]


class KeyStore(Protocol):
    """The part of :class:`coupon.storage.base.Store` the keyring uses."""

    async def list_keys(self) -> list[KeyRecord]: ...
    async def add_key(self, record: KeyRecord) -> None: ...
    async def update_key(
        self, kid: str, *, state: KeyState, activated_at: int | None, retire_after: int | None
    ) -> None: ...


class KeyInfo(TypedDict):
    """One key as the admin API lists it."""

    kid: str
    alg: str
    state: KeyState
    created_at: int
    activated_at: int | None
    retire_after: int | None


@dataclass(frozen=True, slots=True)
class KeyEvent:
    """What a rotation or rollback did: the facts an audit event records."""

    action: Literal["rotate", "rollback"]
    actor: str
    at: int
    previous_kid: str
    signing_kid: str
    next_kid: str


_ORDER = {"current": 0, "next": 1, "retiring": 2, "retired": 3}


class Keyring:
    """The signing key and the published keys of one Authority, backed by the store.

    Build it with :meth:`open`. Every process holds its own keyring over the shared store;
    :meth:`reload` (periodically, and after a rotation event) makes them converge.
    """

    def __init__(
        self,
        store: KeyStore,
        backend: KeyBackend,
        *,
        alg: str,
        max_ttl: int,
        leeway: int,
        publish_lead: int = 0,
        grace: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._backend = backend
        self._alg = alg
        self._max_ttl = max_ttl
        self._leeway = leeway
        self._publish_lead = publish_lead
        self._grace = grace
        self._clock = clock
        self._lock = asyncio.Lock()  # one plan at a time from this process
        self._records: tuple[KeyRecord, ...] = ()
        self._publics: dict[str, VerifyingKey] = {}
        self._signers: dict[str, Signer] = {}
        self._signer: Signer | None = None
        self._signer_problem = "the keyring has not been loaded"
        self._keyset: tuple[tuple[str, ...], KeySet] | None = None

    @classmethod
    async def open(
        cls,
        store: KeyStore,
        keys: MasterKey | KeyBackend,
        *,
        alg: str,
        max_ttl: int,
        leeway: int,
        publish_lead: int = 0,
        grace: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> Keyring:
        """Load the keys from ``store``, creating the first two on an empty store.

        Args:
            store: the Authority's store (only its key methods are used).
            keys: the master key sealing private keys in the store, or another backend.
            alg: the algorithm of keys created from now on (``EdDSA`` or ``ES256``).
            max_ttl: the longest coupon lifetime, in seconds.
            leeway: verifiers' clock-skew tolerance, in seconds.
            publish_lead: seconds a next key must be published before it may sign.
            grace: extra seconds a demoted key stays published (the reload interval).
            clock: the time source.

        Raises:
            StorageError: the store cannot be read or written.
        """
        backend = SealedKeys(keys) if isinstance(keys, MasterKey) else keys
        keyring = cls(
            store,
            backend,
            alg=alg,
            max_ttl=max_ttl,
            leeway=leeway,
            publish_lead=publish_lead,
            grace=grace,
            clock=clock,
        )
        await keyring.reload()
        return keyring

    # -- reading ---------------------------------------------------------------------------------

    @property
    def signer(self) -> Signer:
        """The current key's signer.

        Raises:
            DependencyUnavailable: ``CPN-DEP-004``: there is no usable current key (none
                stored, its private key cannot be unsealed, or its HSM is down): fail closed.
        """
        if self._signer is None:
            raise DependencyUnavailable(codes.UNAVAILABLE_SIGNER, self._signer_problem)
        if problem := _health(self._signer):  # an HSM outage
            raise DependencyUnavailable(codes.UNAVAILABLE_SIGNER, problem)
        return self._signer

    def keyset(self) -> KeySet:
        """The keys a verifier trusts now: current (its signer, if usable), next, retiring.

        Raises:
            DependencyUnavailable: no key is published.
        """
        keys = self._published_keys()
        cache_key = tuple(k.kid for k in keys)
        if self._keyset is None or self._keyset[0] != cache_key:
            first: list[Signer | VerifyingKey] = []
            if self._signer is not None and cache_key and cache_key[0] == self._signer.kid:
                first, keys = [self._signer], keys[1:]
            self._keyset = (cache_key, KeySet([*first, *keys]))
        return self._keyset[1]

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The JWKS document: the published public keys, standard members only."""
        return {"keys": [key.jwk() for key in self._published_keys(allow_empty=True)]}

    def describe(self) -> list[KeyInfo]:
        """Every stored key and its state, for the admin API (current first)."""
        records = sorted(self._records, key=lambda r: (_ORDER[r.state], -r.created_at, r.kid))
        return [
            KeyInfo(
                kid=r.kid,
                alg=r.alg,
                state=r.state,
                created_at=r.created_at,
                activated_at=r.activated_at,
                retire_after=r.retire_after,
            )
            for r in records
        ]

    def _published_keys(self, *, allow_empty: bool = False) -> list[VerifyingKey]:
        records = plan.published(self._records, self._now())
        keys = [self._publics[r.kid] for r in records if r.kid in self._publics]
        if not keys and not allow_empty:
            raise DependencyUnavailable(codes.UNAVAILABLE_SIGNER, "no key is published")
        return keys

    # -- changing --------------------------------------------------------------------------------

    async def reload(self) -> None:
        """Re-read the store, repairing inconsistent key states left by races or crashes.

        Raises:
            StorageError: the store cannot be read; the previous snapshot stays in use.
        """
        async with self._lock:
            await self._refresh()

    async def rotate(self, actor: str) -> KeyEvent:
        """Make the next key sign, demote the current key to retiring, create a new next key.

        Raises:
            Conflict: the next key has not been published for ``publish_lead`` seconds.
            DependencyUnavailable: the next key cannot sign (nothing is changed).
            StorageError: the store failed.
        """
        async with self._lock:
            records = await self._refresh()
            now = self._now()
            ops = plan.rotate(
                records,
                now,
                alg=self._alg,
                max_ttl=self._max_ttl,
                leeway=self._leeway,
                publish_lead=self._publish_lead,
                grace=self._grace,
            )
            return await self._change("rotate", actor, now, records, ops)

    async def rollback(self, actor: str) -> KeyEvent:
        """Undo the last rotation while the previous key is still published.

        Raises:
            Conflict: no retiring key is still published.
            DependencyUnavailable: the previous key cannot sign (nothing is changed).
            StorageError: the store failed.
        """
        async with self._lock:
            records = await self._refresh()
            now = self._now()
            ops = plan.rollback(
                records, now, max_ttl=self._max_ttl, leeway=self._leeway, grace=self._grace
            )
            return await self._change("rollback", actor, now, records, ops)

    async def expire(self) -> list[str]:
        """Retire the keys every coupon of which has expired; return their kids."""
        async with self._lock:
            records = await self._refresh()
            ops = plan.expire(records, self._now())
            if ops:
                await self._apply(ops)
                await self._refresh()
            return [op.kid for op in ops if isinstance(op, plan.SetState)]

    async def _change(
        self,
        action: Literal["rotate", "rollback"],
        actor: str,
        now: int,
        records: Sequence[KeyRecord],
        ops: list[plan.Operation],
    ) -> KeyEvent:
        # Check that the key the plan promotes can sign before anything is written, so a
        # broken seal never leaves the Authority without a signer.
        by_kid = {r.kid: r for r in records}
        promoted = next(
            op.kid for op in ops if isinstance(op, plan.SetState) and op.state == "current"
        )
        loaded = self._load_signer(by_kid[promoted])
        problem = loaded if isinstance(loaded, str) else _health(loaded)
        if problem:
            raise DependencyUnavailable(codes.UNAVAILABLE_SIGNER, problem)
        previous = plan.signing(records).kid
        await self._apply(ops)
        after = await self._refresh()
        nxt = [r.kid for r in after if r.state == "next"]
        return KeyEvent(
            action=action,
            actor=actor,
            at=now,
            previous_kid=previous,
            signing_kid=plan.signing(after).kid,
            next_kid=nxt[0] if nxt else "",
        )

    async def _refresh(self) -> list[KeyRecord]:
        records = await self._store.list_keys()
        ops = plan.repair(
            records,
            self._now(),
            alg=self._alg,
            max_ttl=self._max_ttl,
            leeway=self._leeway,
            grace=self._grace,
        )
        if ops:
            await self._apply(ops)
            records = await self._store.list_keys()
        self._install(records)
        return records

    async def _apply(self, ops: Sequence[plan.Operation]) -> None:
        for op in ops:
            if isinstance(op, plan.SetState):
                await self._store.update_key(
                    op.kid,
                    state=op.state,
                    activated_at=op.activated_at,
                    retire_after=op.retire_after,
                )
                continue
            signer, sealed = self._backend.generate(op.alg)
            record = KeyRecord(
                kid=signer.kid,
                alg=signer.alg,
                state=op.state,
                public_jwk=signer.public.jwk(),
                sealed_private=sealed,
                created_at=op.created_at,
                activated_at=op.activated_at,
            )
            try:
                await self._store.add_key(record)
            except Conflict:
                continue  # another process stored this kid first; the next read sees it
            self._signers[record.kid] = signer

    def _install(self, records: Sequence[KeyRecord]) -> None:
        publics: dict[str, VerifyingKey] = {}
        for record in records:
            if record.state != "retired":
                public = self._publics.get(record.kid) or _public(record)
                if public is not None:
                    publics[record.kid] = public
        self._records, self._publics = tuple(records), publics
        # Unseal the next key too, so that a rotation switches without unsealing on the way.
        wanted = {r.kid for r in records if r.state in ("current", "next")}
        self._signers = {kid: s for kid, s in self._signers.items() if kid in wanted}
        signer: Signer | None = None
        problem = "no current key is stored"
        for record in records:
            if record.state in ("current", "next"):
                loaded = self._load_signer(record)
                if record.state == "current":
                    signer, problem = (None, loaded) if isinstance(loaded, str) else (loaded, "")
        current = [r for r in records if r.state == "current"]
        if len(current) > 1:  # a race another process is repairing: sign with neither
            signer, problem = None, "several keys are current; waiting for the repair"
        self._signer, self._signer_problem = signer, problem
        self._keyset = None

    def _load_signer(self, record: KeyRecord) -> Signer | str:
        """The signer for ``record``, or the reason it cannot sign."""
        cached = self._signers.get(record.kid)
        if cached is not None:
            return cached
        public = self._publics.get(record.kid)
        if public is None:
            return f"key {record.kid!r} has an unusable public JWK in the store"
        try:
            signer = self._backend.load(record)
        except Exception as exc:  # any backend failure (seal, HSM) means: cannot sign
            return f"key {record.kid!r} cannot sign: {type(exc).__name__}: {exc}"
        if signer.kid != record.kid or signer.public.jwk() != public.jwk():
            return f"key {record.kid!r}: the private key does not match the published key"
        self._signers[record.kid] = signer
        return signer

    def _now(self) -> int:
        return int(self._clock())

    def __repr__(self) -> str:
        kid = self._signer.kid if self._signer is not None else None
        return f"Keyring(signing={kid!r}, keys={len(self._records)})"


def _health(signer: Signer) -> str | None:
    """Why a device-held signer cannot sign now (its HSM is down), or None."""
    return signer.problem() if isinstance(signer, SignerHealth) else None


def _public(record: KeyRecord) -> VerifyingKey | None:
    try:
        public = VerifyingKey.from_jwk({**record.public_jwk, "kid": record.kid})
    except Exception:  # a damaged row must not stop the other keys from loading
        return None
    return public if public.alg == record.alg else None
