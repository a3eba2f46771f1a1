"""Replay the fuzz corpus and a few hundred mutations through the fuzz target, without atheris.

The per-input function of ``fuzz/fuzz_token.py`` raises only on a finding (any exception
that is not a ``CouponError``), so each case here simply calls it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.fuzz.harness_support import FUZZ_DIR, load_harness, mutants

from coupon.token.hazmat import b64url_decode, b64url_encode

CORPUS = FUZZ_DIR / "corpus"
MUTATIONS = 300
JSON_MUTATIONS = 200


fuzz_token = load_harness("fuzz_token")
check_input: Callable[[bytes], None] = fuzz_token.check_input
CORPUS_FILES = sorted(p for p in CORPUS.iterdir() if p.is_file()) if CORPUS.is_dir() else []


def _mutants() -> Iterator[bytes]:
    return mutants(
        CORPUS_FILES, fuzz_token.DICTIONARY, seed=20_240_601, count=MUTATIONS, random_max=64
    )


def _link_input(**changes: Any) -> bytes:
    """A ``#link`` input: the corpus chain's link with some header/claims members replaced."""
    link = fuzz_token.CHAIN_TOKEN.split("~")[1]
    header_b64, claims_b64, _ = link.split(".")
    header = json.loads(b64url_decode(header_b64))
    claims = json.loads(b64url_decode(claims_b64))
    header.update(changes.pop("header", {}))
    claims.update(changes)
    data: bytes = fuzz_token.structured(
        b"#link\n", json.dumps(header).encode(), json.dumps(claims).encode()
    )
    return data


class TestCorpus:
    """The committed seed corpus."""

    def test_corpus_is_present(self) -> None:
        """The seed corpus exists and holds coupons, chains and proofs."""
        names = {p.name for p in CORPUS_FILES}
        assert {"seed-raw-root-x5t", "seed-raw-chain-dpop", "seed-link", "seed-dpop"} <= names

    def test_corpus_matches_generator(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """fuzz/make_corpus.py still writes exactly the committed seeds (it is deterministic)."""
        monkeypatch.syspath_prepend(str(FUZZ_DIR))
        make_corpus = load_harness("make_corpus")
        for name, data in make_corpus.seeds().items():
            assert (CORPUS / name).read_bytes() == data, name

    @pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: p.name)
    def test_replay(self, path: Path) -> None:
        """Each corpus input goes through every parser without a finding."""
        check_input(path.read_bytes())


class TestMutations:
    """Seeded random mutations of the corpus, a short deterministic stand-in for a fuzz run."""

    def test_mutants(self) -> None:
        """A few hundred byte-mutated and random inputs raise nothing but CouponError."""
        for data in _mutants():
            try:
                check_input(data)
            except Exception as exc:  # report the input that failed, for replay
                raise AssertionError(f"finding for input {data!r}") from exc

    def test_json_mutants(self) -> None:
        """JSON-aware mutations of the signed-structure seeds raise nothing but CouponError."""
        seeds = [p.read_bytes() for p in CORPUS_FILES if p.read_bytes().startswith(b"#")]
        assert seeds
        for seed in range(JSON_MUTATIONS):
            data = fuzz_token.mutate_json(seeds[seed % len(seeds)], seed)
            assert data is not None
            try:
                check_input(data)
            except Exception as exc:
                raise AssertionError(f"finding for input {data!r}") from exc

    def test_oversized_input_is_skipped(self) -> None:
        """Inputs past the harness's size cap are ignored rather than parsed."""
        check_input(b"A" * (fuzz_token.MAX_INPUT + 1))


class TestFindings:
    """Findings of the fuzz runs (docs/fuzzing.md), kept as regression cases.

    A finding the library has not fixed yet is ``xfail``; with ``xfail_strict`` it turns into
    a failure the day it is fixed, and then the marker goes.
    """

    def test_link_rsa_jwk_with_exponent_above_modulus(self) -> None:
        """F1: a chain link whose jwk is RSA with e >= n is denied with a CouponError."""
        n = (1 << 2047) + 1
        e = (1 << 2049) + 1
        jwk = {
            "kty": "RSA",
            "alg": "RS256",
            "n": b64url_encode(n.to_bytes(256, "big")),
            "e": b64url_encode(e.to_bytes(257, "big")),
        }
        check_input(_link_input(header={"jwk": jwk}))

    def test_link_non_ascii_certificate_thumbprint(self) -> None:
        """F2: a chain link bound to a non-ASCII x5t#S256 is denied with a CouponError."""
        check_input(_link_input(cnf={"x5t#S256": "é" * 43}))

    def test_link_surrogate_certificate_thumbprint(self) -> None:
        """F3: a chain link bound to an x5t#S256 holding a lone surrogate is denied."""
        check_input(_link_input(cnf={"x5t#S256": "X" * 42 + "\ud800"}))
