"""C2SP signed notes with Ed25519 signatures and tlog-cosignature v1 (Ed25519) cosignatures.

Specifications: https://c2sp.org/signed-note and https://c2sp.org/tlog-cosignature. Key
strings follow golang.org/x/mod/sumdb/note: a vkey is ``<name>+<hex id>+<base64(type || key)>``
and an skey is ``PRIVATE+KEY+<name>+<hex id>+<base64(type || seed)>``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol, Self

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from coupon import codes
from coupon.errors import MalformedLogData, UntrustedLogData

SIG_ED25519: Final = 0x01
SIG_COSIGNATURE_V1: Final = 0x04
MAX_NOTE_SIZE: Final = 1 << 20
MAX_SIGNATURES: Final = 64  # the spec asks verifiers to accept at least 16
MAX_NAME_SIZE: Final = 256  # bytes of UTF-8

_DASH: Final = "\u2014 "
_CONTROL: Final = re.compile("[\x00-\x09\x0b-\x1f]")
_HEX_ID: Final = re.compile("[0-9a-f]{8}")
_COSIG_HEADER: Final = b"cosignature/v1\ntime %d\n"
_MAX_TIMESTAMP: Final = (1 << 63) - 1


def _bad(reason: str) -> MalformedLogData:
    return MalformedLogData(codes.LOG_NOTE, reason)


def name_problem(name: str) -> str | None:
    """Return why ``name`` is not a valid key name (or checkpoint origin), or None if it is."""
    if not name:
        return "empty name"
    if "+" in name or any(c.isspace() for c in name):
        return "name contains a space or '+'"
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return "name is not valid Unicode"
    if size > MAX_NAME_SIZE:
        return f"name longer than {MAX_NAME_SIZE} bytes"
    return None


def text_problem(text: str) -> str | None:
    """Return why ``text`` is not a valid note text, or None if it is."""
    if not text.endswith("\n"):
        return "text does not end with a newline"
    if _CONTROL.search(text):
        return "control character in text"
    return None


def b64decode_canonical(data: str) -> bytes | None:
    """Decode standard, padded base64 that re-encodes to the same string; None if it does not."""
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):  # ValueError: non-ASCII str
        return None
    # b64decode accepts non-zero trailing bits, so "AB==" and "AA==" would name the same bytes.
    return raw if base64.b64encode(raw).decode("ascii") == data else None


def key_id(name: str, sig_type: int, public_key: bytes) -> int:
    """Compute a key ID: the first 4 bytes of SHA-256(name || 0x0A || type || key), big-endian."""
    if not 0 <= sig_type <= 0xFF:
        raise ValueError("signature type must be one byte")
    data = name.encode("utf-8") + b"\n" + bytes([sig_type]) + public_key
    return int.from_bytes(hashlib.sha256(data).digest()[:4], "big")


@dataclass(frozen=True, slots=True)
class Signature:
    """One signature line of a note: key name, key ID and the signature bytes after the ID."""

    name: str
    key_id: int
    signature: bytes

    def __post_init__(self) -> None:
        if problem := name_problem(self.name):
            raise ValueError(problem)
        if not 0 <= self.key_id <= 0xFFFFFFFF or not self.signature:
            raise ValueError("key ID must be a uint32 and the signature non-empty")

    def line(self) -> str:
        """Return the signature line, from the em dash to the final newline."""
        blob = self.key_id.to_bytes(4, "big") + self.signature
        return f"{_DASH}{self.name} {base64.b64encode(blob).decode('ascii')}\n"


@dataclass(frozen=True, slots=True)
class Note:
    """A note text (ending in a newline) and its signatures."""

    text: str
    signatures: tuple[Signature, ...]

    def __post_init__(self) -> None:
        if problem := text_problem(self.text):
            raise ValueError(problem)

    def encode(self) -> str:
        """Return the signed note: the text, a blank line, then the signature lines."""
        return self.text + "\n" + "".join(sig.line() for sig in self.signatures)


def parse_note(data: bytes | str) -> Note:
    """Parse a signed note strictly; signatures are not verified.

    Raises:
        MalformedLogData: (``LOG_NOTE``) the note breaks the signed-note format or our bounds.
    """
    if len(data) > MAX_NOTE_SIZE:  # a str's characters are each at least one byte
        raise _bad("note too large")
    try:
        msg = data.decode("utf-8") if isinstance(data, bytes) else data
        if len(msg.encode("utf-8")) > MAX_NOTE_SIZE:
            raise _bad("note too large")
    except UnicodeError:  # bad bytes, or lone surrogates in a str
        raise _bad("note is not valid UTF-8") from None
    if _CONTROL.search(msg):
        raise _bad("control character in note")
    split = msg.rfind("\n\n")  # the LAST blank line: the text may contain blank lines
    if split < 0:
        raise _bad("no blank line before the signatures")
    text, block = msg[: split + 1], msg[split + 2 :]
    if not block:
        raise _bad("no signature lines")
    if not block.endswith("\n"):
        raise _bad("note does not end with a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise _bad(f"more than {MAX_SIGNATURES} signatures")
    return Note(text, tuple(_parse_line(line) for line in lines))


def _parse_line(line: str) -> Signature:
    if not line.startswith(_DASH):
        raise _bad("signature line does not start with an em dash and a space")
    name, sep, b64 = line[len(_DASH) :].partition(" ")
    if not sep:
        raise _bad("signature line has no space after the key name")
    if problem := name_problem(name):
        raise _bad(f"signature line: {problem}")
    blob = b64decode_canonical(b64)
    if blob is None:
        raise _bad("signature is not canonical base64")
    if len(blob) < 5:
        raise _bad("signature shorter than a key ID and one byte")
    return Signature(name, int.from_bytes(blob[:4], "big"), blob[4:])


class Verifier(Protocol):
    """Checks the signatures of one key (a name and key ID)."""

    @property
    def name(self) -> str: ...
    @property
    def key_id(self) -> int: ...
    def verify(self, text: bytes, signature: bytes) -> bool:
        """Return whether ``signature`` (the bytes after the key ID) signs ``text``."""


class Signer(Protocol):
    """Signs note texts with one key (a name and key ID)."""

    @property
    def name(self) -> str: ...
    @property
    def key_id(self) -> int: ...
    def sign(self, text: bytes) -> bytes:
        """Return the signature of ``text`` (without the key ID)."""


def _split_vkey(vkey: str) -> tuple[str, int, int, bytes]:
    """Parse ``name+hexid+base64(type || key)`` into (name, key ID, type, key), checking the ID."""
    parts = vkey.split("+", 2)  # maxsplit: the base64 may contain '+', the name may not
    if len(parts) != 3:
        raise _bad("vkey is not name+id+key")
    name, hex_id, b64 = parts
    if problem := name_problem(name):
        raise _bad(f"vkey: {problem}")
    raw = b64decode_canonical(b64)
    if not _HEX_ID.fullmatch(hex_id) or not raw:
        raise _bad("vkey key ID is not 8 lowercase hex digits or key is not base64")
    if key_id(name, raw[0], raw[1:]) != int(hex_id, 16):
        raise _bad("vkey key ID does not match the key")
    return name, int(hex_id, 16), raw[0], raw[1:]


def _ed25519_ok(public_key: bytes, signature: bytes, message: bytes) -> bool:
    if len(signature) != 64:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except InvalidSignature:
        return False
    return True


def _check_time(timestamp: int) -> int:
    if not 0 <= timestamp <= _MAX_TIMESTAMP:
        raise ValueError("timestamp must be in [0, 2**63 - 1]")
    return timestamp


@dataclass(frozen=True, slots=True)
class _Ed25519Public:
    name: str
    key_id: int
    public_key: bytes

    TYPE = SIG_ED25519  # a class constant, not a field (no annotation)

    def __post_init__(self) -> None:
        if problem := name_problem(self.name):
            raise ValueError(problem)
        if len(self.public_key) != 32:
            raise ValueError("an Ed25519 public key is 32 bytes")
        if key_id(self.name, self.TYPE, self.public_key) != self.key_id:
            raise ValueError("key ID does not match the name and key")

    @classmethod
    def from_vkey(cls, vkey: str) -> Self:
        """Load a vkey of this class's signature type.

        Raises:
            MalformedLogData: (``LOG_NOTE``) malformed vkey, wrong type or key ID mismatch.
        """
        name, kid, sig_type, key = _split_vkey(vkey)
        if sig_type != cls.TYPE:
            raise _bad(f"vkey signature type {sig_type:#04x}, expected {cls.TYPE:#04x}")
        if len(key) != 32:
            raise _bad("Ed25519 vkey is not 32 bytes")
        return cls(name, kid, key)

    def vkey(self) -> str:
        """Return the verifier key string ``<name>+<hex id>+<base64(type || key)>``."""
        b64 = base64.b64encode(bytes([self.TYPE]) + self.public_key).decode("ascii")
        return f"{self.name}+{self.key_id:08x}+{b64}"


@dataclass(frozen=True, slots=True)
class Ed25519Verifier(_Ed25519Public):
    """Verifies Ed25519 note signatures (type 0x01) of one key."""

    def verify(self, text: bytes, signature: bytes) -> bool:
        """Return whether ``signature`` is this key's Ed25519 signature of ``text``."""
        return _ed25519_ok(self.public_key, signature, text)


@dataclass(frozen=True, slots=True)
class CosignatureVerifier(_Ed25519Public):
    """Verifies tlog-cosignature v1 Ed25519 cosignatures (type 0x04) of one witness."""

    TYPE = SIG_COSIGNATURE_V1

    def verify(self, text: bytes, signature: bytes) -> bool:
        """Return whether ``signature`` (timestamp || Ed25519 signature) cosigns ``text``."""
        if len(signature) != 72 or signature[0] & 0x80:  # the time must be below 2**63
            return False
        message = _COSIG_HEADER % int.from_bytes(signature[:8], "big") + text
        return _ed25519_ok(self.public_key, signature[8:], message)

    def timestamp(self, signature: bytes) -> int:
        """Return the POSIX time of a cosignature (the bytes after the key ID), unverified.

        Raises:
            MalformedLogData: (``LOG_NOTE``) not 72 bytes, or the time exceeds 2**63 - 1.
        """
        if len(signature) != 72 or signature[0] & 0x80:
            raise _bad("not a v1 cosignature: 72 bytes with a time below 2**63")
        return int.from_bytes(signature[:8], "big")


def parse_vkey(vkey: str) -> Ed25519Verifier | CosignatureVerifier:
    """Load a vkey of type 0x01 or 0x04 as the matching verifier.

    Raises:
        MalformedLogData: (``LOG_NOTE``) malformed vkey, other type or key ID mismatch.
    """
    cosig = _split_vkey(vkey)[2] == SIG_COSIGNATURE_V1
    return (CosignatureVerifier if cosig else Ed25519Verifier).from_vkey(vkey)


class _Ed25519Private:
    """An Ed25519 private key with a name; the key never appears in repr()."""

    __slots__ = ("_key", "key_id", "name", "public_key")
    TYPE = SIG_ED25519

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        if problem := name_problem(name):
            raise ValueError(problem)
        if not isinstance(private_key, Ed25519PrivateKey):
            raise TypeError("private_key must be an Ed25519PrivateKey")
        self._key = private_key
        self.name: str = name
        self.public_key: bytes = private_key.public_key().public_bytes_raw()
        self.key_id: int = key_id(name, self.TYPE, self.public_key)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name}+{self.key_id:08x})"

    @classmethod
    def from_skey(cls, skey: str) -> Self:
        """Load an skey (Go's ``PRIVATE+KEY+<name>+<hex id>+<base64(type || seed)>``).

        Raises:
            MalformedLogData: (``LOG_NOTE``) malformed skey, wrong type or key ID mismatch.
        """
        # No reason quotes the skey: it is a secret.
        parts = skey.split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise _bad("skey is not PRIVATE+KEY+name+id+key")
        name, hex_id, raw = parts[2], parts[3], b64decode_canonical(parts[4])
        if name_problem(name) or not _HEX_ID.fullmatch(hex_id) or raw is None or len(raw) != 33:
            raise _bad("malformed skey")
        if raw[0] != cls.TYPE:
            raise _bad(f"skey signature type {raw[0]:#04x}, expected {cls.TYPE:#04x}")
        signer = cls(name, Ed25519PrivateKey.from_private_bytes(raw[1:]))
        if signer.key_id != int(hex_id, 16):
            raise _bad("skey key ID does not match the key")
        return signer

    @classmethod
    def generate(cls, name: str) -> Self:
        """Return a signer with a new random key."""
        return cls(name, Ed25519PrivateKey.generate())

    def skey(self) -> str:
        """Return the private key string ``PRIVATE+KEY+<name>+<hex id>+<base64(type || seed)>``."""
        b64 = base64.b64encode(bytes([self.TYPE]) + self._key.private_bytes_raw()).decode("ascii")
        return f"PRIVATE+KEY+{self.name}+{self.key_id:08x}+{b64}"


class Ed25519Signer(_Ed25519Private):
    """Signs notes with Ed25519 (type 0x01)."""

    __slots__ = ()

    def sign(self, text: bytes) -> bytes:
        """Return the 64-byte Ed25519 signature of ``text``."""
        return self._key.sign(text)

    def verifier(self) -> Ed25519Verifier:
        """Return the matching verifier."""
        return Ed25519Verifier(self.name, self.key_id, self.public_key)


class CosignatureSigner(_Ed25519Private):
    """Cosigns checkpoints with tlog-cosignature v1 Ed25519 (type 0x04)."""

    __slots__ = ()
    TYPE = SIG_COSIGNATURE_V1

    def sign(self, text: bytes, *, timestamp: int) -> bytes:
        """Return the 72-byte cosignature (timestamp || Ed25519 signature) of ``text``."""
        signed = self._key.sign(_COSIG_HEADER % _check_time(timestamp) + text)
        return timestamp.to_bytes(8, "big") + signed

    def at(self, timestamp: int) -> Signer:
        """Return a Signer for ``sign_note`` that cosigns at ``timestamp`` (POSIX seconds)."""
        return _CosignerAt(self, _check_time(timestamp))

    def verifier(self) -> CosignatureVerifier:
        """Return the matching verifier."""
        return CosignatureVerifier(self.name, self.key_id, self.public_key)


@dataclass(frozen=True, slots=True)
class _CosignerAt:
    cosigner: CosignatureSigner
    timestamp: int

    @property
    def name(self) -> str:
        return self.cosigner.name

    @property
    def key_id(self) -> int:
        return self.cosigner.key_id

    def sign(self, text: bytes) -> bytes:
        return self.cosigner.sign(text, timestamp=self.timestamp)


def sign_note(text: str, *signers: Signer, existing: Sequence[Signature] = ()) -> Note:
    """Sign ``text`` with each signer, after the ``existing`` signatures.

    As in Go's ``note.Sign``, an existing signature by the same key as a signer is dropped.

    Raises:
        ValueError: the text is not a valid note text, or no or too many signatures result.
    """
    if problem := text_problem(text):
        raise ValueError(problem)
    mine = {(s.name, s.key_id) for s in signers}
    kept = [sig for sig in existing if (sig.name, sig.key_id) not in mine]
    data = text.encode("utf-8")
    sigs = (*kept, *(Signature(s.name, s.key_id, s.sign(data)) for s in signers))
    if not 0 < len(sigs) <= MAX_SIGNATURES:
        raise ValueError(f"a note needs 1 to {MAX_SIGNATURES} signatures")
    return Note(text, sigs)


def verify_note(
    note: Note | bytes | str, verifiers: Sequence[Verifier]
) -> tuple[Note, tuple[Signature, ...]]:
    """Parse and verify a note, returning it with the signatures that verified (one per key).

    Signatures whose (name, key ID) match no verifier are ignored.

    Raises:
        MalformedLogData: (``LOG_NOTE``) the note does not parse.
        UntrustedLogData: (``LOG_UNTRUSTED``) a known key's signature fails (the whole note is
            refused, even if another key verifies), or no known key signed.
        ValueError: two different verifiers share a name and key ID.
    """
    known: dict[tuple[str, int], Verifier] = {}
    for v in verifiers:
        if known.setdefault((v.name, v.key_id), v) != v:
            raise ValueError(f"two verifiers for {v.name}+{v.key_id:08x}")
    if not isinstance(note, Note):
        note = parse_note(note)
    text = note.text.encode("utf-8")
    verified: dict[tuple[str, int], Signature] = {}
    for sig in note.signatures:
        verifier = known.get((sig.name, sig.key_id))
        if verifier is None:
            continue
        if not verifier.verify(text, sig.signature):
            reason = f"signature by {sig.name}+{sig.key_id:08x} does not verify"
            raise UntrustedLogData(codes.LOG_UNTRUSTED, reason)
        verified.setdefault((sig.name, sig.key_id), sig)
    if not verified:
        raise UntrustedLogData(codes.LOG_UNTRUSTED, "no signature by a trusted key")
    return note, tuple(verified.values())
