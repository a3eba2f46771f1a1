"""Checking inclusion and consistency proofs (RFC 9162 §2.1.3.2 and §2.1.4.2).

Functions over ints and bytes (transparency-dev/merkle ``proof/verify.go``). A proof either
verifies or raises: :class:`ProofMismatch` carries the expected and the calculated hash.
"""

from __future__ import annotations

from collections.abc import Sequence

from coupon import codes
from coupon.errors import MalformedLogData, ProofMismatch

from ._hashing import HASH_SIZE, hash_children

__all__ = ["root_from_inclusion_proof", "verify_consistency", "verify_inclusion"]


def _malformed(reason: str) -> MalformedLogData:
    return MalformedLogData(codes.LOG_PROOF_FORMAT, reason)


def _check_hashes(proof: Sequence[bytes], *named: tuple[str, bytes]) -> None:
    for name, value in named:
        if len(value) != HASH_SIZE:
            raise _malformed(f"{name} is {len(value)} bytes, not {HASH_SIZE}")
    for i, h in enumerate(proof):
        if len(h) != HASH_SIZE:
            raise _malformed(f"proof[{i}] is {len(h)} bytes, not {HASH_SIZE}")


def _decompose_inclusion(index: int, size: int) -> tuple[int, int]:
    inner = (index ^ (size - 1)).bit_length()
    border = (index >> inner).bit_count()
    return inner, border


def _chain_inner(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    for i, h in enumerate(proof):
        seed = hash_children(seed, h) if (index >> i) & 1 == 0 else hash_children(h, seed)
    return seed


def _chain_inner_right(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    for i, h in enumerate(proof):
        if (index >> i) & 1:
            seed = hash_children(h, seed)
    return seed


def _chain_border_right(seed: bytes, proof: Sequence[bytes]) -> bytes:
    for h in proof:
        seed = hash_children(h, seed)
    return seed


def _match(expected: bytes, calculated: bytes, what: str) -> None:
    if expected != calculated:
        raise ProofMismatch(
            codes.LOG_PROOF,
            f"{what}: calculated {calculated.hex()[:16]}..., expected {expected.hex()[:16]}...",
            expected=expected,
            calculated=calculated,
        )


def root_from_inclusion_proof(
    index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes]
) -> bytes:
    """The root that ``proof`` leads to from leaf ``index`` in a tree of ``size`` leaves.

    Raises:
        MalformedLogData: ``CPN-LOG-003`` when the index, the sizes or the proof's length
            cannot be right.
    """
    if not 0 <= index < size:
        raise _malformed(f"index {index} is outside a tree of size {size}")
    _check_hashes(proof, ("leaf hash", leaf_hash))
    inner, border = _decompose_inclusion(index, size)
    if len(proof) != inner + border:
        raise _malformed(f"inclusion proof has {len(proof)} hashes, needs {inner + border}")
    return _chain_border_right(_chain_inner(leaf_hash, proof[:inner], index), proof[inner:])


def verify_inclusion(
    index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` with ``root``.

    Raises:
        MalformedLogData: ``CPN-LOG-003`` for a proof of the wrong shape.
        ProofMismatch: ``CPN-LOG-008`` when it leads to another root.
    """
    if len(root) != HASH_SIZE:
        raise _malformed(f"root is {len(root)} bytes, not {HASH_SIZE}")
    _match(root, root_from_inclusion_proof(index, size, leaf_hash, proof), "inclusion proof")


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Check that the tree of ``size2`` with ``root2`` extends the one of ``size1``/``root1``.

    Raises:
        MalformedLogData: ``CPN-LOG-003`` for impossible sizes or a proof of the wrong shape.
        ProofMismatch: ``CPN-LOG-008`` when either root is not reached.
    """
    _check_hashes(proof, ("root1", root1), ("root2", root2))
    if not 0 <= size1 <= size2:
        raise _malformed(f"size2 {size2} is smaller than size1 {size1}")
    if size1 == size2:
        if proof:
            raise _malformed("sizes are equal but the proof is not empty")
        _match(root1, root2, "equal sizes")
        return
    if size1 == 0:
        if proof:
            raise _malformed("any tree extends the empty tree: the proof must be empty")
        return
    if not proof:
        raise _malformed("empty consistency proof")
    inner, border = _decompose_inclusion(size1 - 1, size2)
    shift = (size1 & -size1).bit_length() - 1
    inner -= shift
    # The proof starts with the root of the subtree of size 2**shift, unless size1 is that
    # very power of two, whose root is root1.
    if size1 == 1 << shift:
        seed, start = root1, 0
    else:
        seed, start = proof[0], 1
    if len(proof) != start + inner + border:
        raise _malformed(
            f"consistency proof has {len(proof)} hashes, needs {start + inner + border}"
        )
    rest = proof[start:]
    mask = (size1 - 1) >> shift
    hash1 = _chain_border_right(_chain_inner_right(seed, rest[:inner], mask), rest[inner:])
    _match(root1, hash1, "consistency proof (old root)")
    hash2 = _chain_border_right(_chain_inner(seed, rest[:inner], mask), rest[inner:])
    _match(root2, hash2, "consistency proof (new root)")
