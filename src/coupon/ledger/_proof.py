"""Which nodes an inclusion or a consistency proof needs (RFC 9162 §2.1.3-2.1.4).

Integers only: storage fetches the hashes of the nodes named here, and
:meth:`Nodes.rehash` turns them into the proof. This is transparency-dev/merkle's
``proof/proof.go``: a proof in a tree that is not perfect may need one *ephemeral* node, the
root of the incomplete subtree at the right edge, computed from the nodes that cover it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from coupon import codes
from coupon.errors import InvalidRequest

from ._compact import NodeID, range_nodes, range_size
from ._hashing import hash_children

__all__ = ["Nodes", "consistency", "inclusion"]

_ROOT = NodeID(0, 0)


@dataclass(frozen=True, slots=True)
class Nodes:
    """The nodes to fetch for a proof, and how to fold them into it.

    ``ids[begin:end]`` (when non-empty) cover the ephemeral node ``ephem``: they are hashed
    together, lowest level first, into one proof element.
    """

    ids: tuple[NodeID, ...]
    begin: int = 0
    end: int = 0
    ephem: NodeID = _ROOT

    def rehash(self, hashes: Sequence[bytes]) -> list[bytes]:
        """The proof from the hashes of ``ids`` (same order)."""
        if len(hashes) != len(self.ids):
            raise ValueError(f"got {len(hashes)} hashes for {len(self.ids)} nodes")
        proof: list[bytes] = []
        i = 0
        while i < len(hashes):
            h = hashes[i]
            if self.begin <= i < self.end:
                i += 1
                while i < self.end:
                    h = hash_children(hashes[i], h)
                    i += 1
                i -= 1
            proof.append(h)
            i += 1
        return proof

    def _skip_first(self) -> Nodes:
        if self.begin < self.end:
            return Nodes(self.ids[1:], self.begin - 1, self.end - 1, self.ephem)
        return Nodes(self.ids[1:], self.begin, self.end, self.ephem)


def inclusion(index: int, size: int) -> Nodes:
    """The nodes of the inclusion proof of leaf ``index`` in the tree of ``size`` leaves.

    Raises:
        InvalidRequest: ``CPN-LOG-011`` unless ``0 <= index < size``.
    """
    if not 0 <= index < size:
        raise InvalidRequest(codes.LOG_RANGE, f"index {index} is outside a tree of size {size}")
    return _nodes(index, 0, size)._skip_first()


def consistency(size1: int, size2: int) -> Nodes:
    """The nodes of the consistency proof from tree size ``size1`` to ``size2``.

    Raises:
        InvalidRequest: ``CPN-LOG-011`` unless ``0 <= size1 <= size2``.
    """
    if not 0 <= size1 <= size2:
        raise InvalidRequest(codes.LOG_RANGE, f"no consistency proof from {size1} to {size2}")
    if size1 in (0, size2):
        return Nodes(())
    # The root of the biggest perfect subtree that ends at size1, then its inclusion proof
    # in the tree of size2. When size1 is a power of two, that node is the old root, which
    # the verifier knows already.
    level = (size1 & -size1).bit_length() - 1
    index = (size1 - 1) >> level
    nodes = _nodes(index, level, size2)
    return nodes._skip_first() if index == 0 else nodes


def _nodes(index: int, level: int, size: int) -> Nodes:
    """The nodes proving that node ``(level, index)`` is in the tree of ``size`` leaves."""
    # The fork is where the path to (level, index) leaves the path to leaf `size`; its
    # sibling is the ephemeral node over the incomplete right part of the tree.
    inner = (index ^ (size >> level)).bit_length() - 1
    fork = NodeID(level + inner, index >> inner)
    begin, end = fork.coverage()
    left = range_size(0, begin)
    right = range_size(end, size)

    node = NodeID(level, index)
    ids = [node]
    while node.level < fork.level:
        ids.append(node.sibling())
        node = node.parent()
    len1 = len(ids)
    # The right border (the ephemeral node's children) lowest level first, then the nodes
    # that cover everything left of the fork, lowest level first.
    ids.extend(reversed(range_nodes(end, size)))
    len2 = len(ids)
    ids.extend(reversed(range_nodes(0, begin)))
    assert len(ids) == len2 + left
    assert len2 - len1 == right
    if len1 >= len2:
        len1 = len2 = 0
    return Nodes(tuple(ids), len1, len2, fork.sibling())
