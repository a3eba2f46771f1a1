"""The log's checkpoint keys: Ed25519 note signers, sealed at rest, rotated with overlap.

During a rotation the old and the new key both sign every checkpoint until the old one
retires, so a verifier that trusts either keeps working while auditors move to the new one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from coupon import codes
from coupon.errors import DependencyUnavailable
from coupon.keys import MasterKey, SealingError, open_sealed, seal
from coupon.ledger import Ed25519Signer
from coupon.storage.ledger_sql import LedgerStore

from ._entries import b64url, unb64url

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

    def __init__(self, store: LedgerStore, master: MasterKey, origin: str) -> None:
        self._store = store
        self._master = master
        self.origin = origin
        self._signers: dict[str, Ed25519Signer] = {}
        self._info: list[KeyInfo] = []

    async def load(self) -> None:
        """Load the keys; create the first on an empty log."""
        rows = [r for r in await self._store.signing_keys() if r["name"] == self.origin]
        if not rows:
            await self._add(Ed25519PrivateKey.generate())
            rows = [r for r in await self._store.signing_keys() if r["name"] == self.origin]
        self._load_rows(rows)

    def _load_rows(self, rows: list[dict[str, Any]]) -> None:
        signers, info = {}, []
        for row in rows:
            try:
                seed = unb64url(
                    open_sealed(self._master, f"ledger:{row['key_id']}", row["sealed_private"])["d"]
                )
            except (SealingError, KeyError) as exc:
                raise DependencyUnavailable(codes.UNAVAILABLE_SIGNER, f"ledger key: {exc}") from exc
            signer = Ed25519Signer(self.origin, Ed25519PrivateKey.from_private_bytes(seed))
            signers[row["key_id"]] = signer
            info.append(
                KeyInfo(
                    signer.verifier().vkey(), row["key_id"], row["created_ms"], row["retire_ms"]
                )
            )
        self._signers, self._info = signers, info

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

    def active(self, now_ms: int | None = None) -> list[Ed25519Signer]:
        """The signers of the next checkpoint."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        return [self._signers[i.key_id] for i in self._info if i.active(now_ms)]

    async def rotate(self, *, overlap_ms: int) -> tuple[KeyInfo, list[KeyInfo]]:
        """Add a key; the keys signing now retire after ``overlap_ms`` (both sign till then)."""
        now_ms = int(time.time() * 1000)
        retiring = [i for i in self._info if i.active(now_ms)]
        key_id = await self._add(Ed25519PrivateKey.generate())
        for info in retiring:
            await self._store.retire_signing_key(info.key_id, now_ms + overlap_ms)
        await self.reload()
        new = next(i for i in self._info if i.key_id == key_id)
        return new, [next(i for i in self._info if i.key_id == r.key_id) for r in retiring]

    async def reload(self) -> None:
        """Pick up keys another process added or retired."""
        self._load_rows([r for r in await self._store.signing_keys() if r["name"] == self.origin])
