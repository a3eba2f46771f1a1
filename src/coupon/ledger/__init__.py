"""The Ledger's pure core: RFC 9162 Merkle trees, C2SP checkpoints, notes and tiles.

No I/O and no clock: functions over ints and bytes (transparency-dev/merkle's shape).

- :mod:`._hashing`: leaf and node hashes;
- :mod:`._compact`: node ids, compact ranges, the right border of a growing tree;
- :mod:`._proof`: which nodes an inclusion or consistency proof needs;
- :mod:`._verify`: checking those proofs;
- :mod:`._tiles`: tlog-tiles paths, bundles, and proofs computed from tiles;
- :mod:`._note`: C2SP signed notes and tlog-cosignature v1;
- :mod:`._checkpoint`: C2SP tlog-checkpoint bodies.

The data model is on ``docs/ledger.md``.
"""

from ._checkpoint import MAX_TREE_SIZE, Checkpoint, open_checkpoint, parse_checkpoint
from ._compact import NodeID, RightBorder, decompose, range_nodes, range_size, root_of
from ._event import AUDIT_CONTEXT
from ._hashing import EMPTY_ROOT, HASH_SIZE, hash_children, hash_leaf
from ._note import (
    MAX_NOTE_SIZE,
    MAX_SIGNATURES,
    SIG_COSIGNATURE_V1,
    SIG_ED25519,
    CosignatureSigner,
    CosignatureVerifier,
    Ed25519Signer,
    Ed25519Verifier,
    Note,
    Signature,
    Signer,
    Verifier,
    key_id,
    parse_note,
    parse_vkey,
    sign_note,
    verify_note,
)
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
    tile_levels,
    tile_width,
)
from ._verify import root_from_inclusion_proof, verify_consistency, verify_inclusion

__all__ = [
    "AUDIT_CONTEXT",
    "EMPTY_ROOT",
    "ENTRIES",
    "HASH_SIZE",
    "MAX_ENTRY_SIZE",
    "MAX_NOTE_SIZE",
    "MAX_SIGNATURES",
    "MAX_TREE_SIZE",
    "SIG_COSIGNATURE_V1",
    "SIG_ED25519",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "Checkpoint",
    "CosignatureSigner",
    "CosignatureVerifier",
    "Ed25519Signer",
    "Ed25519Verifier",
    "NodeID",
    "Nodes",
    "Note",
    "RightBorder",
    "Signature",
    "Signer",
    "TileBuilder",
    "TilePlan",
    "TileRef",
    "Verifier",
    "consistency",
    "consistency_plan",
    "decompose",
    "encode_bundle",
    "hash_children",
    "hash_leaf",
    "inclusion",
    "inclusion_plan",
    "key_id",
    "open_checkpoint",
    "parse_bundle",
    "parse_checkpoint",
    "parse_note",
    "parse_tile_path",
    "parse_vkey",
    "range_nodes",
    "range_size",
    "root_from_inclusion_proof",
    "root_from_tiles",
    "root_of",
    "root_plan",
    "sign_note",
    "subtree_root",
    "tile_levels",
    "tile_width",
    "verify_consistency",
    "verify_inclusion",
    "verify_note",
]
