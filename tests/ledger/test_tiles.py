"""C2SP tlog-tiles: paths, widths, bundles, the tile builder and proofs read from tiles."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coupon import codes
from coupon.errors import MalformedLogData
from coupon.ledger import (
    ENTRIES,
    RightBorder,
    TileBuilder,
    TileRef,
    consistency_plan,
    encode_bundle,
    hash_leaf,
    inclusion_plan,
    parse_bundle,
    parse_tile_path,
    root_from_tiles,
    tile_width,
    verify_consistency,
    verify_inclusion,
)

from .merkle_reference import consistency_proof, mth, path


def build(size: int, *, seed: int = 0) -> tuple[list[bytes], dict[tuple[int, int], bytes]]:
    """Leaf hashes and the tiles of a tree of ``size``, appended in random batches."""
    rng = random.Random(seed)
    hashes = [hash_leaf(i.to_bytes(8, "big")) for i in range(size)]
    builder = TileBuilder()
    tiles: dict[tuple[int, int], bytes] = {}
    done = 0
    while done < size:
        count = min(size - done, rng.randint(1, 700))
        for key, content in builder.append(hashes[done : done + count]).items():
            old = tiles.get(key, b"")
            assert content.startswith(old), "a tile only ever grows"
            tiles[key] = content
        done += count
    return hashes, tiles


class TestPaths:
    """Tile paths as c2sp.org/tlog-tiles spells them."""

    @pytest.mark.parametrize(
        ("ref", "path"),
        [
            (TileRef(0, 1234067), "tile/0/x001/x234/067"),
            (TileRef(0, 0), "tile/0/000"),
            (TileRef(2, 5, 17), "tile/2/005.p/17"),
            (TileRef(ENTRIES, 1000, 1), "tile/entries/x001/000.p/1"),
            (TileRef(63, 999), "tile/63/999"),
        ],
    )
    def test_round_trip(self, ref: TileRef, path: str) -> None:
        """The spec's example path, partial tiles and entry bundles, both ways."""
        assert ref.path() == path
        assert parse_tile_path(path) == ref

    @pytest.mark.parametrize(
        "path",
        [
            "tile/0/x000/001",  # leading zero element
            "tile/0/01",
            "tile/00/001",
            "tile/64/001",
            "tile/0/001.p/256",
            "tile/0/001.p/0",
            "tile/0/001.p/012",
            "tile/0/001/",
            "tile/x/001",
            "tile/entries/001.p/",
            "tile/0/1234",
            "tile/0/" + "x000/" * 40 + "001",
            "",
        ],
    )
    def test_refuses(self, path: str) -> None:
        """Anything but the one canonical path is malformed."""
        with pytest.raises(MalformedLogData) as caught:
            parse_tile_path(path)
        assert caught.value.code is codes.LOG_TILE

    @settings(max_examples=200)
    @given(st.text(max_size=60))
    def test_fuzz(self, text: str) -> None:
        """Arbitrary text either parses to a tile that prints the same, or is malformed."""
        try:
            ref = parse_tile_path(text)
        except MalformedLogData:
            return
        assert ref.path() == text

    def test_spec_example_widths(self) -> None:
        """A tree of 70,000: 273 full level-0 tiles and one of 112, 1 + 17 at level 1, 1 at 2."""
        assert [tile_width(0, i, 70_000) for i in (0, 272, 273, 274)] == [256, 256, 112, 0]
        assert [tile_width(1, i, 70_000) for i in (0, 1, 2)] == [256, 17, 0]
        assert [tile_width(2, i, 70_000) for i in (0, 1)] == [1, 0]
        assert tile_width(1, 0, 256) == 1


class TestBundles:
    """Entry bundles: uint16 length prefixes."""

    def test_round_trip(self) -> None:
        """Entries of any length up to 65535 survive."""
        entries = [b"", b"a", b"x" * 300, b"\x00" * 65535]
        assert parse_bundle(encode_bundle(entries), count=4) == entries

    @pytest.mark.parametrize("data", [b"\x00", b"\x00\x05abc", b"\x00\x01a\x00"])
    def test_truncated(self, data: bytes) -> None:
        """A bundle cut short is malformed."""
        with pytest.raises(MalformedLogData):
            parse_bundle(data)

    def test_count(self) -> None:
        """The wrong number of entries is malformed; an oversized entry is misuse."""
        with pytest.raises(MalformedLogData):
            parse_bundle(encode_bundle([b"a"]), count=2)
        with pytest.raises(ValueError, match="bundle"):
            encode_bundle([b"x" * 65536])


class TestProofsFromTiles:
    """Proofs computed from tiles equal the RFC's, at any size the tiles have seen."""

    @settings(max_examples=40, deadline=None)
    @given(st.integers(1, 1500), st.data())
    def test_small_trees(self, size: int, data: st.DataObject) -> None:
        """Inclusion and consistency proofs match PATH and PROOF; roots match MTH."""
        hashes, tiles = build(size, seed=size)
        assert root_from_tiles(size, tiles) == mth(hashes)
        index = data.draw(st.integers(0, size - 1))
        nodes, plan = inclusion_plan(index, size)
        assert nodes.rehash(plan.hashes(tiles)) == path(index, hashes)
        interiors: dict[bytes, list[list[bytes]]] = {}
        assert nodes.rehash(plan.hashes(tiles, interiors=interiors)) == path(index, hashes)
        assert nodes.rehash(plan.hashes(tiles, interiors=interiors)) == path(index, hashes)
        if size > 1:
            old = data.draw(st.integers(1, size - 1))
            nodes, plan = consistency_plan(old, size)
            assert nodes.rehash(plan.hashes(tiles)) == consistency_proof(old, hashes)

    def test_three_levels(self) -> None:
        """A tree past 65,536 leaves (level-2 tiles): proofs between many sizes verify."""
        size = 70_123
        hashes, tiles = build(size, seed=7)
        border = RightBorder()
        roots = {}
        checkpoints = [1, 255, 256, 257, 65_535, 65_536, 65_537, 70_000, size]
        for n in range(1, size + 1):
            border.append(hashes[n - 1])
            if n in checkpoints:
                roots[n] = border.root()
        assert root_from_tiles(size, tiles) == roots[size]
        rng = random.Random(1)
        interiors: dict[bytes, list[list[bytes]]] = {}  # shared: tiles cut at many widths
        for old in checkpoints:
            for new in checkpoints:
                if old > new:
                    continue
                # Tiles as a client sees them at `new`: each cut to its width then.
                nodes, plan = consistency_plan(old, new)
                view = {ref.key: tiles[ref.key][: ref.width * 32] for ref in plan.tiles()}
                verify_consistency(
                    old, new, nodes.rehash(plan.hashes(view)), roots[old], roots[new]
                )
            for index in (0, old - 1, rng.randrange(old)):
                nodes, plan = inclusion_plan(index, old)
                view = {ref.key: tiles[ref.key][: ref.width * 32] for ref in plan.tiles()}
                proof = nodes.rehash(plan.hashes(view, interiors=interiors))
                verify_inclusion(index, old, hashes[index], proof, roots[old])

    def test_missing_tile(self) -> None:
        """A plan whose tile is absent or too short fails with a tile error."""
        _, tiles = build(600)
        nodes, plan = inclusion_plan(10, 600)
        with pytest.raises(MalformedLogData) as caught:
            plan.hashes({})
        assert caught.value.code is codes.LOG_TILE
        short = {key: value[:32] for key, value in tiles.items()}
        with pytest.raises(MalformedLogData):
            plan.hashes(short)
        assert len(nodes.ids) >= 1

    def test_builder_restart(self) -> None:
        """A builder restored from the right-edge tiles carries on as if never stopped."""
        hashes, tiles = build(1000)
        first = TileBuilder()
        first.append(hashes[:700])
        edges = {level: first.edge(level) for level in range(3) if first.edge(level)}
        second = TileBuilder(700, edges)
        changed = second.append(hashes[700:])
        assert all(
            tiles[key].startswith(value) or value.startswith(tiles[key])
            for key, value in changed.items()
        )
        assert changed[0, 3] == tiles[0, 3]
        with pytest.raises(ValueError, match="edge tile"):
            TileBuilder(700, {0: b"\x00" * 32})
