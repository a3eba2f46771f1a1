"""C2SP tlog-checkpoint note bodies (https://c2sp.org/tlog-checkpoint)."""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from coupon import codes
from coupon.errors import MalformedLogData, UntrustedLogData
from coupon.ledger._note import (
    MAX_NOTE_SIZE,
    Note,
    Signature,
    Verifier,
    b64decode_canonical,
    name_problem,
    text_problem,
    verify_note,
)

MAX_TREE_SIZE: Final = (1 << 63) - 1
# An explicit ASCII class: int() would also take "+1", " 1", "1_0" and non-ASCII digits.
_SIZE: Final = re.compile("0|[1-9][0-9]{0,18}")


def _bad(reason: str) -> MalformedLogData:
    return MalformedLogData(codes.LOG_CHECKPOINT, reason)


def _extension_ok(line: str) -> bool:
    if not line or "\n" in line or text_problem(line + "\n"):
        return False
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A log's signed view: its origin, tree size and root hash, and opaque extension lines."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if problem := name_problem(self.origin):
            raise ValueError(f"origin: {problem}")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise ValueError("tree size must be in [0, 2**63 - 1]")
        if len(self.root_hash) != 32:
            raise ValueError("root hash must be 32 bytes")
        if not all(map(_extension_ok, self.extensions)):
            raise ValueError("extension lines must be non-empty, valid text, one line each")

    def text(self) -> str:
        """Return the note text: origin, size, base64 root hash and extensions, one per line."""
        root = base64.b64encode(self.root_hash).decode("ascii")
        return "".join(
            f"{line}\n" for line in (self.origin, str(self.size), root, *self.extensions)
        )


def parse_checkpoint(text: str | bytes) -> Checkpoint:
    """Parse a checkpoint note text strictly.

    Raises:
        MalformedLogData: (``LOG_CHECKPOINT``) the text is not a well-formed checkpoint.
    """
    if len(text) > MAX_NOTE_SIZE:
        raise _bad("checkpoint too large")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise _bad("checkpoint is not valid UTF-8") from None
    if problem := text_problem(text):
        raise _bad(problem)
    lines = text[:-1].split("\n")
    if len(lines) < 3 or not all(lines):
        raise _bad("a checkpoint is at least three non-empty lines")
    origin, size, root, *extensions = lines
    if problem := name_problem(origin):  # includes lone surrogates in a str
        raise _bad(f"origin: {problem}")
    if not _SIZE.fullmatch(size) or int(size) > MAX_TREE_SIZE:
        raise _bad("tree size is not a decimal in [0, 2**63 - 1] without leading zeros")
    root_hash = b64decode_canonical(root)
    if root_hash is None or len(root_hash) != 32:
        raise _bad("root hash is not canonical base64 of 32 bytes")
    if not all(map(_extension_ok, extensions)):  # only lone surrogates in a str remain
        raise _bad("extension line is not valid Unicode")
    return Checkpoint(origin, int(size), root_hash, tuple(extensions))


def open_checkpoint(
    note: bytes | str, verifiers: Sequence[Verifier], *, origin: str | None = None
) -> tuple[Checkpoint, Note, tuple[Signature, ...]]:
    """Verify a signed checkpoint, then parse its text.

    Args:
        note: the signed note.
        verifiers: the trusted keys (the log's key, witnesses' cosigner keys).
        origin: if given, the origin the checkpoint must name.

    Returns:
        The checkpoint, the note and the signatures that verified.

    Raises:
        MalformedLogData: the note (``LOG_NOTE``) or its text (``LOG_CHECKPOINT``) is malformed.
        UntrustedLogData: (``LOG_UNTRUSTED``) no trusted signature, a bad signature by a known
            key, or another origin than expected.
    """
    parsed, verified = verify_note(note, verifiers)
    checkpoint = parse_checkpoint(parsed.text)
    if origin is not None and checkpoint.origin != origin:
        reason = f"checkpoint origin {checkpoint.origin!r}, expected {origin!r}"
        raise UntrustedLogData(codes.LOG_UNTRUSTED, reason)
    return checkpoint, parsed, verified
