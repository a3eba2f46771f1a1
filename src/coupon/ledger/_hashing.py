"""RFC 9162 (RFC 6962) Merkle tree hashing: SHA-256 with domain-separating prefixes.

A leaf hashes as ``SHA-256(0x00 || data)`` and an interior node as
``SHA-256(0x01 || left || right)``, so a leaf can never pass for a node (second preimages).
"""

from __future__ import annotations

import hashlib
from typing import Final

__all__ = ["EMPTY_ROOT", "HASH_SIZE", "hash_children", "hash_leaf"]

HASH_SIZE: Final = 32
#: The root of the empty tree: the hash of the empty string (RFC 9162 §2.1.1).
EMPTY_ROOT: Final = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256


def hash_leaf(data: bytes) -> bytes:
    """The leaf hash of ``data``: ``SHA-256(0x00 || data)``."""
    return _sha256(b"\x00" + data).digest()


def hash_children(left: bytes, right: bytes) -> bytes:
    """The hash of an interior node: ``SHA-256(0x01 || left || right)``."""
    return _sha256(b"\x01" + left + right).digest()
