"""Private keys sealed at rest: the master key and AES-256-GCM envelopes.

A sealed blob is ``version (1 byte) || nonce (12 bytes) || ciphertext || tag (16 bytes)``.
The associated data is the version byte followed by the key's ``kid``, so a blob copied onto
another key's row, or re-labelled with another version, fails to open.

Problems here are the operator's (a missing, unreadable or wrong master key, a damaged row),
not a client's: they raise :class:`SealingError`, not a ``CouponError``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import stat
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from coupon.errors import CouponError
from coupon.token import Signer, SigningKey
from coupon.token.hazmat import b64url_decode, b64url_encode

if TYPE_CHECKING:
    from coupon.settings import Settings
    from coupon.storage.base import KeyRecord

__all__ = [
    "MASTER_KEY_FILE",
    "KeyBackend",
    "MasterKey",
    "SealedKeys",
    "SealingError",
    "SignerHealth",
    "open_sealed",
    "seal",
]

#: The file under ``data_dir`` that holds the master key when no setting provides it.
MASTER_KEY_FILE: Final = "master.key"

_VERSION: Final = b"\x01"
_NONCE_SIZE: Final = 12
_TAG_SIZE: Final = 16
_KEY_SIZE: Final = 32


class SealingError(Exception):
    """A master key or a sealed private key cannot be used.

    Raised for a master key that is missing, malformed or readable by others, and for a
    sealed blob that is truncated, of an unknown version, tampered with, moved to another
    ``kid`` or sealed under another master key.
    """


class MasterKey:
    """The 256-bit key that seals every private signing key at rest."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) != _KEY_SIZE:
            raise ValueError(f"a master key is {_KEY_SIZE} bytes, not {len(key)}")
        self._key = bytes(key)

    @classmethod
    def generate(cls) -> MasterKey:
        """A fresh random master key."""
        return cls(secrets.token_bytes(_KEY_SIZE))

    @classmethod
    def from_text(cls, text: str) -> MasterKey:
        """Load the base64url text form (what ``COUPON_MASTER_KEY`` and the key file hold).

        Raises:
            SealingError: the text is not base64url of exactly 32 bytes.
        """
        try:
            raw = b64url_decode(text.strip())
        except CouponError:
            raise SealingError("master key is not unpadded base64url") from None
        if len(raw) != _KEY_SIZE:
            raise SealingError(f"master key must be {_KEY_SIZE} bytes, got {len(raw)}")
        return cls(raw)

    @classmethod
    def load_or_create(cls, settings: Settings) -> MasterKey:
        """The master key from ``settings.master_key``, else from ``data_dir/master.key``.

        The file is created (mode 0600) on first use. An existing file that group or others
        may access is refused: the master key must be readable by the service user only.

        Raises:
            SealingError: the setting or the file is malformed, or the file's mode is too open.
        """
        if settings.master_key is not None:
            return cls.from_text(settings.master_key.get_secret_value())
        return _load_or_create_file(Path(settings.data_dir) / MASTER_KEY_FILE)

    def to_text(self) -> str:
        """The base64url text form, for backups and ``COUPON_MASTER_KEY``."""
        return b64url_encode(self._key)

    @property
    def fingerprint(self) -> str:
        """A short, non-secret name for this key, to tell backups apart in logs."""
        digest = hashlib.sha256(b"coupon master key fingerprint\x00" + self._key).digest()
        return b64url_encode(digest[:9])

    def derive(self, label: str, length: int = 32) -> bytes:
        """A purpose-bound secret (HKDF-SHA256 with ``label`` as info), the same in every
        process that shares this master key: audit signing, DPoP nonces."""
        return HKDF(
            algorithm=hashes.SHA256(), length=length, salt=None, info=label.encode()
        ).derive(self._key)

    def _aead(self) -> AESGCM:
        return AESGCM(self._key)

    def __repr__(self) -> str:
        return f"MasterKey(fingerprint={self.fingerprint!r})"


def _load_or_create_file(path: Path) -> MasterKey:
    try:
        return _read_file(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    master = MasterKey.generate()
    # Write a private temporary file, then link it into place: the link is atomic and, unlike
    # os.replace, never overwrites. Two processes starting at once must not each seal keys
    # under a different master key; the loser of the race reads the winner's file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(master.to_text() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return _read_file(path)
    finally:
        os.unlink(tmp)
    _fsync_dir(path.parent)
    return master


def _read_file(path: Path) -> MasterKey:
    with path.open("r", encoding="ascii") as handle:
        mode = os.fstat(handle.fileno()).st_mode
        if os.name == "posix" and mode & 0o077:
            raise SealingError(
                f"{path} has mode {stat.filemode(mode)}: a master key must not be accessible "
                f"to group or others; run 'chmod 600 {path}'"
            )
        try:
            text = handle.read()
        except UnicodeDecodeError:
            raise SealingError(f"{path} does not hold a base64url master key") from None
    try:
        return MasterKey.from_text(text)
    except SealingError as exc:
        raise SealingError(f"{path}: {exc}") from None


def _fsync_dir(directory: Path) -> None:
    # Make the new directory entry durable; not every platform can open a directory.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _aad(kid: str) -> bytes:
    return _VERSION + kid.encode("utf-8")


def seal(master: MasterKey, kid: str, private_jwk: dict[str, Any]) -> bytes:
    """Encrypt ``private_jwk`` for storage under ``kid``.

    Args:
        master: the master key.
        kid: the key id the blob belongs to; opening it under another ``kid`` fails.
        private_jwk: the private JWK (with ``d``).

    Returns:
        The sealed blob: version byte, random 96-bit nonce, ciphertext and tag.
    """
    plaintext = json.dumps(private_jwk, separators=(",", ":"), sort_keys=True).encode()
    nonce = secrets.token_bytes(_NONCE_SIZE)
    return _VERSION + nonce + master._aead().encrypt(nonce, plaintext, _aad(kid))


def open_sealed(master: MasterKey, kid: str, blob: bytes) -> dict[str, Any]:
    """Decrypt a blob made by :func:`seal` for ``kid``.

    Raises:
        SealingError: the blob is truncated, of an unknown version, was altered, belongs to
            another ``kid`` or was sealed under another master key.
    """
    if len(blob) < 1 + _NONCE_SIZE + _TAG_SIZE:
        raise SealingError(f"sealed key {kid!r} is truncated ({len(blob)} bytes)")
    if blob[:1] != _VERSION:
        raise SealingError(f"sealed key {kid!r} has unknown format version {blob[0]}")
    nonce, ciphertext = blob[1 : 1 + _NONCE_SIZE], blob[1 + _NONCE_SIZE :]
    try:
        plaintext = master._aead().decrypt(nonce, ciphertext, _aad(kid))
    except InvalidTag:
        raise SealingError(
            f"sealed key {kid!r} does not open: altered, moved from another kid, "
            f"or sealed under another master key (this one is {master.fingerprint})"
        ) from None
    jwk: dict[str, Any] = json.loads(plaintext)  # authenticated: it is what seal() wrote
    return jwk


class KeyBackend(Protocol):
    """Where private signing keys live: sealed in the store, or in an HSM.

    The keyring signs only through the :class:`~coupon.token.Signer` objects this returns,
    so a PKCS#11 backend can keep the private keys inside the device.
    """

    def generate(self, alg: str) -> tuple[Signer, bytes | None]:
        """Create a key; return its signer and the sealed private key to store (or None)."""
        ...

    def load(self, record: KeyRecord) -> Signer:
        """The signer for a stored key; raise if it cannot sign."""
        ...


@runtime_checkable
class SignerHealth(Protocol):
    """A signer whose key is in a device that can be unavailable (an HSM).

    The keyring asks it before handing the signer out, so an outage answers ``CPN-DEP-004``
    at once and readiness reports it.
    """

    def problem(self) -> str | None:
        """Why it cannot sign now, or None; never a device round trip."""
        ...


class SealedKeys:
    """The default backend: keys in memory, sealed under a :class:`MasterKey` in the store."""

    __slots__ = ("_master",)

    def __init__(self, master: MasterKey) -> None:
        self._master = master

    def generate(self, alg: str) -> tuple[Signer, bytes | None]:
        key = SigningKey.generate(alg)
        return key, seal(self._master, key.kid, key.private_jwk())

    def load(self, record: KeyRecord) -> Signer:
        if record.sealed_private is None:
            raise SealingError(f"key {record.kid!r} has no sealed private key in the store")
        if record.sealed_private.startswith(b"pkcs11:"):
            raise SealingError(
                f"key {record.kid!r} is held in an HSM ({record.sealed_private.decode()}): "
                "set COUPON_KEY_BACKEND=pkcs11"
            )
        jwk = open_sealed(self._master, record.kid, record.sealed_private)
        return SigningKey.from_jwk(jwk)

    def __repr__(self) -> str:
        return f"SealedKeys({self._master!r})"
