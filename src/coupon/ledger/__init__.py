"""The Ledger's pure core: RFC 9162 Merkle trees, C2SP checkpoints, notes and tiles.

No I/O and no clock: functions over ints and bytes (transparency-dev/merkle's shape).

- :mod:`._hashing`: leaf and node hashes;
- :mod:`._compact`: node ids, compact ranges, the right border of a growing tree;
- :mod:`._proof`: which nodes an inclusion or consistency proof needs;
- :mod:`._verify`: checking those proofs;
- :mod:`._tiles`: tlog-tiles paths, bundles, and proofs computed from tiles.

The data model is on ``docs/ledger.md``.
"""

from ._compact import NodeID, RightBorder, decompose, range_nodes, range_size, root_of
from ._hashing import EMPTY_ROOT, HASH_SIZE, hash_children, hash_leaf
from ._proof import Nodes, consistency, inclusion
from ._tiles import (
    ENTRIES,
    MAX_ENTRY_SIZE,
    TILE_HEIGHT,
    TILE_WIDTH,
    TileBuilder,
    TilePlan,
    TileRef,
    consistency_plan,
    encode_bundle,
    inclusion_plan,
    parse_bundle,
    parse_tile_path,
    root_from_tiles,
    root_plan,
    subtree_root,
    tile_width,
)
from ._verify import root_from_inclusion_proof, verify_consistency, verify_inclusion

__all__ = [
    "EMPTY_ROOT",
    "ENTRIES",
    "HASH_SIZE",
    "MAX_ENTRY_SIZE",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "NodeID",
    "Nodes",
    "RightBorder",
    "TileBuilder",
    "TilePlan",
    "TileRef",
    "consistency",
    "consistency_plan",
    "decompose",
    "encode_bundle",
    "hash_children",
    "hash_leaf",
    "inclusion",
    "inclusion_plan",
    "parse_bundle",
    "parse_tile_path",
    "range_nodes",
    "range_size",
    "root_from_inclusion_proof",
    "root_from_tiles",
    "root_of",
    "root_plan",
    "subtree_root",
    "tile_width",
    "verify_consistency",
    "verify_inclusion",
]
