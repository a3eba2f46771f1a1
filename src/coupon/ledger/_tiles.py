"""C2SP tlog-tiles: tile paths, tile contents, entry bundles, and proofs computed from tiles.

A tile at level ``L`` holds up to 256 consecutive hashes of tree level ``8 * L``; the nodes
in between are recomputed by hashing (c2sp.org/tlog-tiles). Every node a proof needs lies in
one tile, so a proof is: name the nodes (:mod:`._proof`), name their tiles
(:meth:`TilePlan.tiles`), let the caller fetch those, and hash (:meth:`TilePlan.hashes`).
The same code serves proofs from the database and checks a log from a static mirror.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Final

from coupon import codes
from coupon.errors import MalformedLogData

from ._compact import NodeID, range_nodes, root_of
from ._hashing import HASH_SIZE, hash_children
from ._proof import Nodes, consistency, inclusion

__all__ = [
    "ENTRIES",
    "MAX_ENTRY_SIZE",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "TileBuilder",
    "TilePlan",
    "TileRef",
    "consistency_plan",
    "encode_bundle",
    "inclusion_plan",
    "parse_bundle",
    "parse_tile_path",
    "root_from_tiles",
    "root_plan",
    "subtree_root",
    "tile_levels",
    "tile_width",
]

TILE_HEIGHT: Final = 8
TILE_WIDTH: Final = 1 << TILE_HEIGHT
TILE_BYTES: Final = TILE_WIDTH * HASH_SIZE
#: The level number of entry bundles (``tile/entries/...``) in a :class:`TileRef`.
ENTRIES: Final = -1
#: Entry bundles prefix each entry with a big-endian uint16 length.
MAX_ENTRY_SIZE: Final = 0xFFFF
_MAX_LEVEL: Final = 63
_PATH = re.compile(
    r"tile/(entries|0|[1-9][0-9]?)/((?:x[0-9]{3}/)*[0-9]{3})(?:\.p/([1-9][0-9]{0,2}))?"
)


def _bad_tile(reason: str) -> MalformedLogData:
    return MalformedLogData(codes.LOG_TILE, reason)


@dataclass(frozen=True, slots=True)
class TileRef:
    """A tile (``level >= 0``) or an entry bundle (``level == ENTRIES``) of ``width`` items."""

    level: int
    index: int
    width: int = TILE_WIDTH

    @property
    def key(self) -> tuple[int, int]:
        """``(level, index)``: the same tile at any width."""
        return self.level, self.index

    def path(self) -> str:
        """The tile's path below the log's prefix, e.g. ``tile/0/x001/x234/067.p/12``."""
        digits = f"{self.index:03d}"
        digits = "0" * (-len(digits) % 3) + digits
        parts = [digits[i : i + 3] for i in range(0, len(digits), 3)]
        number = "/".join([*(f"x{p}" for p in parts[:-1]), parts[-1]])
        level = "entries" if self.level == ENTRIES else str(self.level)
        suffix = "" if self.width == TILE_WIDTH else f".p/{self.width}"
        return f"tile/{level}/{number}{suffix}"


def parse_tile_path(path: str) -> TileRef:
    """The tile a path names; only the canonical spelling is accepted.

    Raises:
        MalformedLogData: ``CPN-LOG-004``.
    """
    match = _PATH.fullmatch(path) if len(path) <= 128 else None
    if match is None:
        raise _bad_tile("not a tile path")
    level = ENTRIES if match.group(1) == "entries" else int(match.group(1))
    width = int(match.group(3)) if match.group(3) else TILE_WIDTH
    ref = TileRef(level, int(match.group(2).replace("x", "").replace("/", "")), width)
    partial_max = TILE_WIDTH - 1  # a ".p/W" tile holds 1..255 items
    if level > _MAX_LEVEL or (match.group(3) is not None and width > partial_max):
        raise _bad_tile("tile level or width out of range")
    if ref.path() != path:  # "x000/001", "010.p/010": one tile, one path
        raise _bad_tile("tile path is not canonical")
    return ref


def tile_width(level: int, index: int, size: int) -> int:
    """How many items tile ``(level, index)`` holds in the tree of ``size`` leaves (0..256)."""
    row = size >> (TILE_HEIGHT * max(level, 0))
    return max(0, min(TILE_WIDTH, row - index * TILE_WIDTH))


def subtree_root(hashes: Sequence[bytes]) -> bytes:
    """The root over a power-of-two count of hashes of one level."""
    level = list(hashes)
    while len(level) > 1:
        level = [hash_children(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def tile_levels(tile: bytes) -> list[list[bytes]]:
    """Every level of the subtrees inside a tile: level ``k`` holds the roots of its complete
    runs of ``2**k`` hashes (a partial tile has fewer, and no root over its incomplete end)."""
    levels = [_split(tile, 0, len(tile) // HASH_SIZE)]
    while len(levels[-1]) > 1:
        below = levels[-1]
        levels.append([hash_children(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)])
    return levels


def _split(tile: bytes, start: int, count: int) -> list[bytes]:
    return [
        tile[i : i + HASH_SIZE]
        for i in range(start * HASH_SIZE, (start + count) * HASH_SIZE, HASH_SIZE)
    ]


def _locate(node: NodeID) -> tuple[int, int, int, int]:
    """``(tile level, tile index, first hash, hash count)`` of the hashes under ``node``."""
    tile_level, height = divmod(node.level, TILE_HEIGHT)
    first = node.index << height
    return tile_level, first >> TILE_HEIGHT, first & (TILE_WIDTH - 1), 1 << height


@dataclass(frozen=True, slots=True)
class TilePlan:
    """The tiles that hold a set of nodes, and how to hash them out of those tiles."""

    ids: tuple[NodeID, ...]
    size: int

    def tiles(self) -> list[TileRef]:
        """Each tile needed once, with its width in the tree of ``size``."""
        seen: dict[tuple[int, int], TileRef] = {}
        for node in self.ids:
            level, index, _, _ = _locate(node)
            if (level, index) not in seen:
                seen[level, index] = TileRef(level, index, tile_width(level, index, self.size))
        return list(seen.values())

    def hashes(
        self,
        tiles: Mapping[tuple[int, int], bytes],
        *,
        interiors: MutableMapping[bytes, list[list[bytes]]] | None = None,
    ) -> list[bytes]:
        """The node hashes, in the order of ``ids``, from tiles keyed by ``(level, index)``.

        A tile may be longer than the plan needs (a later, wider version of it).

        Args:
            tiles: the tiles of :meth:`tiles`.
            interiors: a cache of every tile's inner levels, keyed by the tile's bytes (the
                bytes decide the hashes, so no entry can go stale); the upper tiles, which
                every proof reads, are then hashed once instead of once per proof.

        Raises:
            MalformedLogData: ``CPN-LOG-004`` when a tile is missing or too short.
        """
        out = []
        for node in self.ids:
            level, index, first, count = _locate(node)
            tile = tiles.get((level, index))
            if tile is None or len(tile) < (first + count) * HASH_SIZE or len(tile) % HASH_SIZE:
                raise _bad_tile(f"tile {level}/{index} is missing or too short for node {node}")
            if count == 1:
                out.append(tile[first * HASH_SIZE : (first + 1) * HASH_SIZE])
            elif interiors is None:
                out.append(subtree_root(_split(tile, first, count)))
            else:
                inner = interiors.get(tile)
                if inner is None:
                    inner = interiors[tile] = tile_levels(tile)
                out.append(inner[count.bit_length() - 1][first // count])
        return out


def inclusion_plan(index: int, size: int) -> tuple[Nodes, TilePlan]:
    """The proof nodes and tiles for leaf ``index`` in the tree of ``size``."""
    nodes = inclusion(index, size)
    return nodes, TilePlan(nodes.ids, size)


def consistency_plan(size1: int, size2: int) -> tuple[Nodes, TilePlan]:
    """The proof nodes and tiles for the consistency proof from ``size1`` to ``size2``."""
    nodes = consistency(size1, size2)
    return nodes, TilePlan(nodes.ids, size2)


def root_plan(size: int) -> TilePlan:
    """The tiles holding the right border of the tree of ``size``; hash with :func:`root_of`."""
    return TilePlan(tuple(range_nodes(0, size)), size)


def root_from_tiles(size: int, tiles: Mapping[tuple[int, int], bytes]) -> bytes:
    """The root of the tree of ``size`` from its tiles."""
    return root_of(root_plan(size).hashes(tiles))


def encode_bundle(entries: Iterable[bytes]) -> bytes:
    """An entry bundle: each entry as a big-endian uint16 length and its bytes."""
    out = bytearray()
    for entry in entries:
        if len(entry) > MAX_ENTRY_SIZE:
            raise ValueError(f"an entry of {len(entry)} bytes does not fit a bundle")
        out += len(entry).to_bytes(2, "big") + entry
    return bytes(out)


def parse_bundle(data: bytes, *, count: int | None = None) -> list[bytes]:
    """The entries of a bundle; with ``count``, exactly that many.

    Raises:
        MalformedLogData: ``CPN-LOG-004`` for a truncated bundle or the wrong count.
    """
    entries: list[bytes] = []
    pos = 0
    while pos < len(data):
        if pos + 2 > len(data) or len(entries) >= TILE_WIDTH:
            raise _bad_tile("entry bundle is truncated or too long")
        length = int.from_bytes(data[pos : pos + 2], "big")
        pos += 2
        if pos + length > len(data):
            raise _bad_tile("entry bundle is truncated")
        entries.append(data[pos : pos + length])
        pos += length
    if count is not None and len(entries) != count:
        raise _bad_tile(f"entry bundle has {len(entries)} entries, expected {count}")
    return entries


class TileBuilder:
    """The right-edge tiles of a growing tree: appending leaf hashes says which tiles changed.

    A tile only ever grows: each changed tile's new content extends what was stored before,
    so storage can refuse any other update.
    """

    def __init__(self, size: int = 0, edges: Mapping[int, bytes] | None = None) -> None:
        self.size = size
        self._edges: dict[int, bytearray] = {}
        for level, tile in (edges or {}).items():
            width = tile_width(level, size >> (TILE_HEIGHT * level) >> TILE_HEIGHT, size)
            if len(tile) != width * HASH_SIZE:
                raise ValueError(f"edge tile at level {level} must hold {width} hashes")
            self._edges[level] = bytearray(tile)

    def edge(self, level: int) -> bytes:
        """The partial tile at the right edge of ``level`` (empty when the level ends full)."""
        return bytes(self._edges.get(level, b""))

    def append(self, leaf_hashes: Sequence[bytes]) -> dict[tuple[int, int], bytes]:
        """Add leaves; returns the full new content of every tile that changed."""
        changed: dict[tuple[int, int], bytes] = {}
        touched: set[int] = set()
        for leaf_hash in leaf_hashes:
            level, value, count = 0, leaf_hash, self.size
            while True:
                edge = self._edges.setdefault(level, bytearray())
                edge += value
                touched.add(level)
                if len(edge) < TILE_BYTES:
                    break
                index = (count >> (TILE_HEIGHT * level)) >> TILE_HEIGHT
                changed[level, index] = bytes(edge)
                value = subtree_root(_split(bytes(edge), 0, TILE_WIDTH))
                edge.clear()
                level += 1
            self.size += 1
        for level in touched:
            edge = self._edges[level]
            if edge:
                index = (self.size >> (TILE_HEIGHT * level)) >> TILE_HEIGHT
                changed[level, index] = bytes(edge)
        return changed
