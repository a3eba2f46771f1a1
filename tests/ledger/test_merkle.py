"""RFC 9162 hashing, proofs and their verification: known answers, mutations, a reference."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coupon import codes
from coupon.errors import InvalidRequest, MalformedLogData, ProofMismatch
from coupon.ledger import (
    EMPTY_ROOT,
    NodeID,
    RightBorder,
    consistency,
    hash_children,
    hash_leaf,
    inclusion,
    range_nodes,
    root_from_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)

from .merkle_reference import consistency_proof, mth, path

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent.parent / "vectors" / "rfc6962.json").read_text()
)
LEAVES = [bytes.fromhex(x) for x in VECTORS["leaves"]]
HASHES = [hash_leaf(x) for x in LEAVES]
ROOTS = [bytes.fromhex(x) for x in VECTORS["roots"]]
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


def leaf_hashes(n: int) -> list[bytes]:
    """Distinct leaf hashes for a tree of ``n`` leaves."""
    return [hash_leaf(i.to_bytes(8, "big")) for i in range(n)]


def proof_from_tree(nodes_ids: tuple[NodeID, ...], hashes: list[bytes]) -> list[bytes]:
    """The hashes of the given nodes, computed naively from the leaves."""
    return [mth(hashes[node.coverage()[0] : node.coverage()[1]]) for node in nodes_ids]


def served_inclusion(index: int, size: int, hashes: list[bytes]) -> list[bytes]:
    """An inclusion proof built the way the Ledger builds it (node ids, then rehash)."""
    nodes = inclusion(index, size)
    return nodes.rehash(proof_from_tree(nodes.ids, hashes[:size]))


def served_consistency(size1: int, size2: int, hashes: list[bytes]) -> list[bytes]:
    """A consistency proof built the way the Ledger builds it."""
    nodes = consistency(size1, size2)
    return nodes.rehash(proof_from_tree(nodes.ids, hashes[:size2]))


class TestKnownAnswers:
    """The RFC 6962 reference data."""

    def test_empty_root(self) -> None:
        """The empty tree's root is SHA-256 of nothing."""
        assert EMPTY_ROOT.hex() == VECTORS["empty_root"]
        assert RightBorder().root() == EMPTY_ROOT

    @pytest.mark.parametrize("size", range(1, 9))
    def test_roots(self, size: int) -> None:
        """Appending the reference leaves gives the reference root at every size."""
        border = RightBorder()
        border.extend(HASHES[:size])
        assert border.root() == ROOTS[size - 1]
        assert mth(HASHES[:size]) == ROOTS[size - 1]

    @pytest.mark.parametrize(
        "case", VECTORS["inclusion"], ids=lambda c: f"{c['index']}-{c['size']}"
    )
    def test_inclusion_vectors(self, case: dict[str, Any]) -> None:
        """Our inclusion proofs are the reference proofs, and they verify."""
        expected = [bytes.fromhex(h) for h in case["proof"]]
        index, size = case["index"], case["size"]
        assert served_inclusion(index, size, HASHES) == expected
        verify_inclusion(index, size, HASHES[index], expected, ROOTS[size - 1])

    @pytest.mark.parametrize(
        "case", VECTORS["consistency"], ids=lambda c: f"{c['size1']}-{c['size2']}"
    )
    def test_consistency_vectors(self, case: dict[str, Any]) -> None:
        """Our consistency proofs are the reference proofs, and they verify."""
        expected = [bytes.fromhex(h) for h in case["proof"]]
        size1, size2 = case["size1"], case["size2"]
        assert served_consistency(size1, size2, HASHES) == expected
        verify_consistency(size1, size2, expected, ROOTS[size1 - 1], ROOTS[size2 - 1])


def accepts(check: Callable[[], None]) -> bool:
    """Whether a verification passes; a refusal must be a ledger error, nothing else."""
    try:
        check()
    except (ProofMismatch, MalformedLogData):
        return False
    return True


def inclusion_mutations(
    index: int, size: int, proof: list[bytes], root: bytes, leaf: bytes
) -> list[tuple[str, int, int, bytes, list[bytes], bytes]]:
    """One change per field (transparency-dev/merkle corruptInclusionProof)."""
    probes = [
        ("index-1", index - 1, size, leaf, proof, root),
        ("index+1", index + 1, size, leaf, proof, root),
        ("index^2", index ^ 2, size, leaf, proof, root),
        ("size*2", index, size * 2, leaf, proof, root),
        ("size/2", index, size // 2, leaf, proof, root),
        ("wrong leaf", index, size, SOME_HASH, proof, root),
        ("empty root", index, size, leaf, proof, EMPTY_ROOT),
        ("random root", index, size, leaf, proof, SOME_HASH),
        ("trailing root", index, size, leaf, [*proof, root], root),
        ("preceding root", index, size, leaf, [root, *proof], root),
        ("trailing garbage", index, size, leaf, [*proof, b""], root),
    ]
    for i in range(len(proof)):
        wrong = list(proof)
        wrong[i] = bytes([wrong[i][0] ^ 8]) + wrong[i][1:]
        probes.append((f"proof[{i}] bit 3", index, size, leaf, wrong, root))
    if proof:
        probes.append(("removed", index, size, leaf, proof[:-1], root))
    if len(proof) > 1:
        probes.append(("inserted", index, size, leaf, [proof[0], SOME_HASH, *proof[1:]], root))
    return probes


class TestMutations:
    """Every one-field change of a good proof is refused."""

    @pytest.mark.parametrize(
        "case", VECTORS["inclusion"], ids=lambda c: f"{c['index']}-{c['size']}"
    )
    def test_inclusion(self, case: dict[str, Any]) -> None:
        """Wrong index, size, leaf, root, or any bit of the proof: refused."""
        index, size = case["index"], case["size"]
        proof = [bytes.fromhex(h) for h in case["proof"]]
        probes = inclusion_mutations(index, size, proof, ROOTS[size - 1], HASHES[index])
        accepted = [
            name
            for name, i, n, leaf, p, root in probes
            if accepts(partial(verify_inclusion, i, n, leaf, p, root))
        ]
        assert accepted == []

    @pytest.mark.parametrize(
        "case", VECTORS["consistency"][1:], ids=lambda c: f"{c['size1']}-{c['size2']}"
    )
    def test_consistency(self, case: dict[str, Any]) -> None:
        """Wrong sizes, roots, or any bit of the proof: refused."""
        size1, size2 = case["size1"], case["size2"]
        proof = [bytes.fromhex(h) for h in case["proof"]]
        root1, root2 = ROOTS[size1 - 1], ROOTS[size2 - 1]
        probes: list[tuple[str, int, int, list[bytes], bytes, bytes]] = [
            ("size1-1", size1 - 1, size2, proof, root1, root2),
            ("size1+1", size1 + 1, size2, proof, root1, root2),
            ("size1^2", size1 ^ 2, size2, proof, root1, root2),
            ("size2*2", size1, size2 * 2, proof, root1, root2),
            ("size2/2", size1, size2 // 2, proof, root1, root2),
            ("swapped roots", size1, size2, proof, root2, root1),
            ("wrong root1", size1, size2, proof, SOME_HASH, root2),
            ("wrong root2", size1, size2, proof, root1, SOME_HASH),
            ("empty proof", size1, size2, [], root1, root2),
            ("trailing root", size1, size2, [*proof, root1], root1, root2),
            ("preceding root", size1, size2, [root2, *proof], root1, root2),
            ("preceding proof[0]", size1, size2, [proof[0], *proof], root1, root2),
            ("truncated", size1, size2, proof[:-1], root1, root2),
        ]
        for i in range(len(proof)):
            wrong = list(proof)
            wrong[i] = bytes([wrong[i][0] ^ 16]) + wrong[i][1:]
            probes.append((f"proof[{i}] bit 4", size1, size2, wrong, root1, root2))
        accepted = [
            name
            for name, s1, s2, p, r1, r2 in probes
            if accepts(partial(verify_consistency, s1, s2, p, r1, r2))
        ]
        assert accepted == []


class TestEdges:
    """Sizes 0 and 1, bad arguments, what errors carry."""

    def test_single_leaf(self) -> None:
        """In a tree of one leaf the root is the leaf hash and the proof is empty."""
        h = hash_leaf(b"data")
        verify_inclusion(0, 1, h, [], h)
        with pytest.raises(ProofMismatch) as caught:
            verify_inclusion(0, 1, h, [], SOME_HASH)
        assert caught.value.expected == SOME_HASH
        assert caught.value.calculated == h
        assert caught.value.code is codes.LOG_PROOF

    @pytest.mark.parametrize(("index", "size"), [(0, 0), (1, 0), (2, 1), (-1, 4)])
    def test_index_out_of_range(self, index: int, size: int) -> None:
        """An index outside the tree is malformed, not a crash."""
        with pytest.raises(MalformedLogData):
            root_from_inclusion_proof(index, size, SOME_HASH, [])
        with pytest.raises(InvalidRequest) as caught:
            inclusion(index, size)
        assert caught.value.code is codes.LOG_RANGE

    def test_always_consistent(self) -> None:
        """Every tree extends the empty tree; equal sizes need equal roots and no proof."""
        verify_consistency(0, 5, [], EMPTY_ROOT, SOME_HASH)
        verify_consistency(3, 3, [], SOME_HASH, SOME_HASH)
        with pytest.raises(ProofMismatch):
            verify_consistency(3, 3, [], SOME_HASH, EMPTY_ROOT)
        with pytest.raises(MalformedLogData):
            verify_consistency(0, 5, [SOME_HASH], EMPTY_ROOT, SOME_HASH)
        with pytest.raises(MalformedLogData):
            verify_consistency(5, 4, [SOME_HASH], SOME_HASH, SOME_HASH)
        with pytest.raises(InvalidRequest):
            consistency(5, 4)

    def test_short_hashes(self) -> None:
        """A hash that is not 32 bytes is malformed."""
        with pytest.raises(MalformedLogData):
            verify_inclusion(0, 2, b"short", [SOME_HASH], SOME_HASH)
        with pytest.raises(MalformedLogData):
            verify_inclusion(0, 2, SOME_HASH, [SOME_HASH], b"")

    def test_rehash_needs_every_hash(self) -> None:
        """Folding a proof from the wrong number of node hashes is a programming error."""
        with pytest.raises(ValueError, match="hashes for"):
            inclusion(3, 8).rehash([SOME_HASH])

    def test_border_shape(self) -> None:
        """A border must have one hash per set bit of its size."""
        with pytest.raises(ValueError, match="border"):
            RightBorder(3, [SOME_HASH])

    def test_node_relations(self) -> None:
        """Parent, sibling and coverage of node ids."""
        node = NodeID(2, 5)
        assert node.coverage() == (20, 24)
        assert node.parent() == NodeID(3, 2)
        assert node.sibling() == NodeID(2, 4)
        assert range_nodes(0, 13) == [NodeID(3, 0), NodeID(2, 2), NodeID(0, 12)]
        assert range_nodes(3, 8) == [NodeID(0, 3), NodeID(2, 1)]


class TestAgainstReference:
    """The fast code agrees with the RFC's recursive definitions."""

    @settings(max_examples=150, deadline=None)
    @given(st.integers(1, 600).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 1))))
    def test_inclusion(self, case: tuple[int, int]) -> None:
        """PATH(m, D[n]) equals our proof, and it verifies against MTH."""
        size, index = case
        hashes = leaf_hashes(size)
        proof = served_inclusion(index, size, hashes)
        assert proof == path(index, hashes)
        verify_inclusion(index, size, hashes[index], proof, mth(hashes))

    @settings(max_examples=150, deadline=None)
    @given(st.integers(2, 600).flatmap(lambda n: st.tuples(st.integers(1, n - 1), st.just(n))))
    def test_consistency(self, case: tuple[int, int]) -> None:
        """PROOF(m, D[n]) equals our proof, and it verifies between the two MTHs."""
        size1, size2 = case
        hashes = leaf_hashes(size2)
        proof = served_consistency(size1, size2, hashes)
        assert proof == consistency_proof(size1, hashes)
        verify_consistency(size1, size2, proof, mth(hashes[:size1]), mth(hashes))

    @settings(max_examples=60, deadline=None)
    @given(st.lists(st.integers(1, 40), min_size=1, max_size=12))
    def test_border_appends(self, batches: list[int]) -> None:
        """The right border's root equals MTH after every batch of appends."""
        border = RightBorder()
        hashes: list[bytes] = []
        for count in batches:
            new = [hash_leaf(len(hashes).to_bytes(8, "big") + bytes([i])) for i in range(count)]
            border.extend(new)
            hashes.extend(new)
            assert border.root() == mth(hashes)
            assert border.copy().hashes() == border.hashes()
            assert hash_children(b"a", b"b") != hash_children(b"b", b"a")
