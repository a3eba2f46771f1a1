"""The log's checkpoint keys: Ed25519 note signers, sealed at rest, rotated with overlap.

During a rotation the old and the new key both sign every checkpoint until the old one
retires, so a verifier that trusts either keeps working while auditors move to the new one.

With an HSM (``COUPON_KEY_BACKEND=pkcs11``) new keys are generated in the token and the row
keeps an RFC 7512 reference instead of a sealed seed; such a key signs only in the token, and
a sealed key is not used to sign while the HSM backend is on (no software fallback).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from coupon import codes
from coupon.errors import DependencyUnavailable
from coupon.keys import (
    MasterKey,
    Pkcs11NoteSigner,
    SealingError,
    generate_in_token,
    open_sealed,
    parse_reference,
    public_raw,
    reference,
    seal,
)
from coupon.ledger import SIG_ED25519, Ed25519Signer, Ed25519Verifier, Signer, key_id
from coupon.storage.ledger_sql import LedgerStore
from coupon.token import VerifyingKey

from ._entries import b64url, unb64url

if TYPE_CHECKING:
    from coupon.keys import Pkcs11Token

__all__ = ["CheckpointKeys", "KeyInfo"]


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """One checkpoint key as the key endpoint shows it."""

    vkey: str
    key_id: str
    created_ms: int
    retire_ms: int | None

    def active(self, now_ms: int) -> bool:
        """Whether it still signs."""
        return self.retire_ms is None or now_ms < self.retire_ms


class CheckpointKeys:
    """The signers of the log's checkpoints."""

    def __init__(
        self,
        store: LedgerStore,
        master: MasterKey,
        origin: str,
        *,
        hsm: Pkcs11Token | None = None,
    ) -> None:
        self._store = store
        self._master = master
        self.origin = origin
        self._hsm = hsm
        self._signers: dict[str, Signer] = {}
        self._info: list[KeyInfo] = []

    async def load(self) -> None:
        """Load the keys; create the first on an empty log."""
        rows = [r for r in await self._store.signing_keys() if r["name"] == self.origin]
        if not rows:
            await self._add_new()
            rows = [r for r in await self._store.signing_keys() if r["name"] == self.origin]
        self._load_rows(rows)

    def _load_rows(self, rows: list[dict[str, Any]]) -> None:
        signers, info = {}, []
        for row in rows:
            signer = self._signer(row)
            signers[row["key_id"]] = signer
            vkey = Ed25519Verifier(signer.name, signer.key_id, row["public_key"]).vkey()
            info.append(KeyInfo(vkey, row["key_id"], row["created_ms"], row["retire_ms"]))
        self._signers, self._info = signers, info

    def _signer(self, row: dict[str, Any]) -> Signer:
        ref = parse_reference(row["sealed_private"])
        if ref is not None:  # in an HSM: the key is looked up when it first signs
            if self._hsm is None or ref[0] != self._hsm.label:
                return _Refused(
                    self.origin,
                    row["public_key"],
                    f"ledger key {row['key_id']} is held in HSM token {ref[0]!r}: "
                    "set COUPON_KEY_BACKEND=pkcs11 and that token's label",
                )
            return Pkcs11NoteSigner(self._hsm, ref[1], self.origin, row["public_key"])
        if self._hsm is not None:
            return _Refused(
                self.origin,
                row["public_key"],
                f"ledger key {row['key_id']} is sealed in the store: "
                "with the HSM backend only keys in the token sign",
            )
        try:
            seed = unb64url(
                open_sealed(self._master, f"ledger:{row['key_id']}", row["sealed_private"])["d"]
            )
        except (SealingError, KeyError) as exc:
            raise DependencyUnavailable(codes.UNAVAILABLE_SIGNER, f"ledger key: {exc}") from exc
        return Ed25519Signer(self.origin, Ed25519PrivateKey.from_private_bytes(seed))

    async def _add_new(self) -> str:
        """A new key: generated in the HSM when there is one, else sealed in the store."""
        if self._hsm is None:
            return await self._add(Ed25519PrivateKey.generate())
        origin = self.origin

        def name(public: VerifyingKey) -> str:
            return f"ledger:{key_id(origin, SIG_ED25519, public_raw(public)):08x}"

        hsm = self._hsm
        verifying, object_id = hsm.call(
            "generate",
            lambda session: generate_in_token(session, "EdDSA", name, label_prefix="ledger"),
        )
        raw = public_raw(verifying)
        kid = f"{key_id(origin, SIG_ED25519, raw):08x}"
        await self._store.add_signing_key(
            {
                "key_id": kid,
                "name": origin,
                "public_key": raw,
                "sealed_private": reference(hsm.label, object_id),
                "created_ms": int(time.time() * 1000),
                "retire_ms": None,
            }
        )
        return kid

    async def _add(self, private: Ed25519PrivateKey) -> str:
        signer = Ed25519Signer(self.origin, private)
        key_id = f"{signer.key_id:08x}"
        seed = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        await self._store.add_signing_key(
            {
                "key_id": key_id,
                "name": self.origin,
                "public_key": signer.verifier().public_key,
                "sealed_private": seal(self._master, f"ledger:{key_id}", {"d": b64url(seed)}),
                "created_ms": int(time.time() * 1000),
                "retire_ms": None,
            }
        )
        return key_id

    def describe(self) -> list[KeyInfo]:
        """Every key, oldest first."""
        return list(self._info)

    def active(self, now_ms: int | None = None) -> list[Signer]:
        """The signers of the next checkpoint."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        return [self._signers[i.key_id] for i in self._info if i.active(now_ms)]

    async def rotate(self, *, overlap_ms: int) -> tuple[KeyInfo, list[KeyInfo]]:
        """Add a key; the keys signing now retire after ``overlap_ms`` (both sign till then)."""
        now_ms = int(time.time() * 1000)
        retiring = [i for i in self._info if i.active(now_ms)]
        new_id = await self._add_new()
        for info in retiring:
            await self._store.retire_signing_key(info.key_id, now_ms + overlap_ms)
        await self.reload()
        new = next(i for i in self._info if i.key_id == new_id)
        return new, [next(i for i in self._info if i.key_id == r.key_id) for r in retiring]

    async def reload(self) -> None:
        """Pick up keys another process added or retired."""
        self._load_rows([r for r in await self._store.signing_keys() if r["name"] == self.origin])


class _Refused:
    """A key this process must not sign with (held elsewhere): signing fails closed."""

    def __init__(self, name: str, public_key: bytes, reason: str) -> None:
        self.name = name
        self.key_id = key_id(name, SIG_ED25519, public_key)
        self._reason = reason

    def sign(self, text: bytes) -> bytes:
        raise DependencyUnavailable(codes.UNAVAILABLE_SIGNER, self._reason)
