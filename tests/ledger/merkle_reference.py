"""A naive recursive Merkle tree straight from RFC 9162 §2.1, to check the fast code against.

MTH, PATH and SUBPROOF exactly as the RFC writes them: slow, obviously right, test-only.
"""

from __future__ import annotations

from collections.abc import Sequence

from coupon.ledger import EMPTY_ROOT, hash_children


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def mth(hashes: Sequence[bytes]) -> bytes:
    """MTH over leaf hashes."""
    if not hashes:
        return EMPTY_ROOT
    if len(hashes) == 1:
        return hashes[0]
    k = _split(len(hashes))
    return hash_children(mth(hashes[:k]), mth(hashes[k:]))


def path(m: int, hashes: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]): the inclusion proof of leaf m."""
    if len(hashes) == 1:
        return []
    k = _split(len(hashes))
    if m < k:
        return [*path(m, hashes[:k]), mth(hashes[k:])]
    return [*path(m - k, hashes[k:]), mth(hashes[:k])]


def subproof(m: int, hashes: Sequence[bytes], complete: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b)."""
    n = len(hashes)
    if m == n:
        return [] if complete else [mth(hashes)]
    k = _split(n)
    if m <= k:
        return [*subproof(m, hashes[:k], complete), mth(hashes[k:])]
    return [*subproof(m - k, hashes[k:], False), mth(hashes[:k])]


def consistency_proof(m: int, hashes: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]): the consistency proof from size m (0 < m < n)."""
    return subproof(m, hashes, True)
