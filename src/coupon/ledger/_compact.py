"""Node ids and compact ranges of a log Merkle tree, over integers only.

A node is ``(level, index)``: level 0 holds the leaves, and node ``(l, i)`` is the root of
the perfect subtree over leaves ``[i * 2**l, (i + 1) * 2**l)``. A *compact range* is the
smallest list of such nodes that exactly covers a range of leaves; the tree of size ``n`` is
the compact range ``[0, n)``, whose nodes are the perfect subtrees named by the bits of
``n`` (transparency-dev/merkle ``compact``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ._hashing import EMPTY_ROOT, hash_children

__all__ = ["NodeID", "RightBorder", "decompose", "range_nodes", "range_size", "root_of"]


@dataclass(frozen=True, slots=True)
class NodeID:
    """The root of the perfect subtree over ``[index << level, (index + 1) << level)``."""

    level: int
    index: int

    def coverage(self) -> tuple[int, int]:
        """The leaf range ``[begin, end)`` under this node."""
        return self.index << self.level, (self.index + 1) << self.level

    def parent(self) -> NodeID:
        """The node one level up."""
        return NodeID(self.level + 1, self.index >> 1)

    def sibling(self) -> NodeID:
        """The other child of this node's parent."""
        return NodeID(self.level, self.index ^ 1)


def decompose(begin: int, end: int) -> tuple[int, int]:
    """Bit masks of the node levels on the left and right borders of ``[begin, end)``."""
    if begin == 0:
        return 0, end
    xbegin = begin - 1
    # Only the nodes strictly below the point where the paths to leaves begin-1 and end
    # diverge are in the range.
    mask = (1 << ((xbegin ^ end).bit_length() - 1)) - 1
    return ~xbegin & mask, end & mask


def range_nodes(begin: int, end: int) -> list[NodeID]:
    """The nodes of the compact range ``[begin, end)``, left to right."""
    left, right = decompose(begin, end)
    nodes: list[NodeID] = []
    pos = begin
    while left:  # left border: lower levels first
        level = (left & -left).bit_length() - 1
        nodes.append(NodeID(level, pos >> level))
        pos += 1 << level
        left ^= 1 << level
    while right:  # right border: upper levels first
        level = right.bit_length() - 1
        nodes.append(NodeID(level, pos >> level))
        pos += 1 << level
        right ^= 1 << level
    return nodes


def range_size(begin: int, end: int) -> int:
    """How many nodes the compact range ``[begin, end)`` has."""
    left, right = decompose(begin, end)
    return left.bit_count() + right.bit_count()


def root_of(hashes: Sequence[bytes]) -> bytes:
    """The root over the hashes of a compact range ``[0, n)`` (left to right)."""
    if not hashes:
        return EMPTY_ROOT
    root = hashes[-1]
    for left in reversed(hashes[:-1]):
        root = hash_children(left, root)
    return root


class RightBorder:
    """The compact range ``[0, size)``: appends in amortised O(1), the root in O(log n).

    It holds one hash per set bit of ``size``: the roots of the perfect subtrees the tree
    of that size decomposes into, highest level first.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if size < 0 or len(hashes) != size.bit_count():
            raise ValueError(f"a tree of size {size} has {size.bit_count()} border nodes")
        self._size = size
        self._hashes = list(hashes)

    @property
    def size(self) -> int:
        """The number of leaves."""
        return self._size

    def hashes(self) -> list[bytes]:
        """The border hashes, highest level first (the order of ``range_nodes(0, size)``)."""
        return list(self._hashes)

    def append(self, leaf_hash: bytes) -> None:
        """Add one leaf hash at the right edge."""
        hashes = self._hashes
        hashes.append(leaf_hash)
        # Each trailing one bit of the old size is a perfect subtree that now has a sibling.
        size = self._size
        while size & 1:
            right = hashes.pop()
            hashes[-1] = hash_children(hashes[-1], right)
            size >>= 1
        self._size += 1

    def extend(self, leaf_hashes: Sequence[bytes]) -> None:
        """Add several leaf hashes in order."""
        for leaf_hash in leaf_hashes:
            self.append(leaf_hash)

    def root(self) -> bytes:
        """The tree's root hash (``EMPTY_ROOT`` for size 0)."""
        return root_of(self._hashes)

    def copy(self) -> RightBorder:
        """An independent copy (appends to it leave this one as it is)."""
        return RightBorder(self._size, self._hashes)
