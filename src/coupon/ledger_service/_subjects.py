"""Per-subject keys for personal data: encrypt on the way in, erase to forget.

A subject is named in the log only by a keyed reference (HMAC-SHA256 under a key derived
from the master key), so the log does not say who it is about, yet an auditor with the
name can find the entries. Each subject has a random AES-256-GCM key, sealed at rest;
deleting it (erasure, or retention) makes that subject's data unreadable for good, while
the entries, their signatures and every proof stay valid.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections import OrderedDict
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from coupon import codes
from coupon.errors import MalformedLogData, NotFound
from coupon.keys import MasterKey, open_sealed, seal

from ._entries import b64url, unb64url

__all__ = ["SubjectKeyStore", "SubjectVault"]


class SubjectKeyStore(Protocol):
    async def subject_key(self, subject_ref: str) -> bytes | None: ...
    async def add_subject_key(self, subject_ref: str, sealed: bytes, at_ms: int) -> bytes: ...
    async def erase_subject_key(self, subject_ref: str) -> bool: ...


class SubjectVault:
    """Subject references, and the keys that encrypt each subject's personal data."""

    def __init__(self, store: SubjectKeyStore, master: MasterKey, *, cache_size: int = 4096):
        self._store = store
        self._master = master
        self._index_key = master.derive("coupon/ledger-subject-index/v1")
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._cache_size = cache_size

    def ref(self, subject: str) -> str:
        """The subject's reference in the log (stable, and meaningless without the key)."""
        digest = hmac.new(self._index_key, subject.encode(), hashlib.sha256).digest()
        return digest[:16].hex()

    def _remember(self, ref: str, key: bytes) -> None:
        self._cache[ref] = key
        self._cache.move_to_end(ref)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    async def _key(self, ref: str, *, create: bool) -> bytes | None:
        key = self._cache.get(ref)
        if key is not None:
            return key
        sealed = await self._store.subject_key(ref)
        if sealed is None and create:
            fresh = seal(self._master, f"subject:{ref}", {"k": b64url(os.urandom(32))})
            sealed = await self._store.add_subject_key(ref, fresh, int(time.time() * 1000))
        if sealed is None:
            return None
        key = unb64url(open_sealed(self._master, f"subject:{ref}", sealed)["k"])
        self._remember(ref, key)
        return key

    async def encrypt(self, subject: str, plaintext: bytes, *, event_id: str) -> dict[str, str]:
        """``{"ref", "ct"}`` for an entry: the data under the subject's key (created once)."""
        ref = self.ref(subject)
        key = await self._key(ref, create=True)
        assert key is not None
        nonce = os.urandom(12)
        ciphertext = AESGCM(key).encrypt(nonce, plaintext, event_id.encode())
        return {"ref": ref, "ct": b64url(nonce + ciphertext)}

    async def decrypt(self, ref: str, blob: bytes, *, event_id: str) -> bytes:
        """The personal data of an entry.

        Raises:
            NotFound: ``CPN-LOG-012`` when the subject's key was erased.
            MalformedLogData: when the ciphertext was altered.
        """
        key = await self._key(ref, create=False)
        if key is None:
            raise NotFound(codes.LOG_ERASED, "the subject's data was erased")
        try:
            return AESGCM(key).decrypt(blob[:12], blob[12:], event_id.encode())
        except (InvalidTag, ValueError) as exc:
            raise MalformedLogData(codes.LOG_ENTRY, "personal data does not decrypt") from exc

    async def erase(self, subject_ref: str) -> bool:
        """Destroy the subject's key; True when one existed."""
        self._cache.pop(subject_ref, None)
        return await self._store.erase_subject_key(subject_ref)
