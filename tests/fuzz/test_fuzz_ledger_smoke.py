"""The Ledger fuzz harness (fuzz/fuzz_ledger.py) in plain pytest: corpus replay and mutants.

A short deterministic stand-in for an atheris run (docs/fuzzing.md): the committed seeds,
a few thousand seeded byte mutations of them, and hypothesis-generated inputs, each through
``check_input``, which raises only on a finding (anything but a ``CouponError``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.fuzz.harness_support import FUZZ_DIR, load_harness, mutants

CORPUS = FUZZ_DIR / "corpus_ledger"
MUTATIONS = 3000


fuzz_ledger = load_harness("fuzz_ledger")
check_input: Callable[[bytes], None] = fuzz_ledger.check_input
CORPUS_FILES = sorted(p for p in CORPUS.iterdir() if p.is_file()) if CORPUS.is_dir() else []


def _check(data: bytes) -> None:
    try:
        check_input(data)
    except Exception as exc:  # report the input that failed, for replay
        raise AssertionError(f"finding for input {data!r}") from exc


def _mutants() -> Iterator[bytes]:
    return mutants(
        CORPUS_FILES, fuzz_ledger.DICTIONARY, seed=20_261_124, count=MUTATIONS, random_max=96
    )


class TestCorpus:
    """The committed seed corpus."""

    def test_corpus_is_present(self) -> None:
        """The seed corpus holds a signed note, a checkpoint, tile paths, a bundle and proofs."""
        names = {p.name for p in CORPUS_FILES}
        assert {
            "seed-note",
            "seed-checkpoint",
            "seed-tile-0",
            "seed-tile-partial",
            "seed-tile-entries",
            "seed-bundle",
            "seed-struct-proof-inclusion",
            "seed-struct-proof-consistency",
        } <= names

    def test_corpus_matches_generator(self) -> None:
        """``fuzz_ledger.py --make-corpus`` still writes exactly the committed seeds."""
        seeds = fuzz_ledger.seeds()
        assert set(seeds) == {p.name for p in CORPUS_FILES}
        for name, data in seeds.items():
            assert (CORPUS / name).read_bytes() == data, name

    @pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: p.name)
    def test_replay(self, path: Path) -> None:
        """Each corpus input goes through every parser without a finding."""
        _check(path.read_bytes())


class TestMutations:
    """Seeded random mutations and generated inputs."""

    def test_mutants(self) -> None:
        """A few thousand byte-mutated and random inputs raise nothing but CouponError."""
        for data in _mutants():
            _check(data)

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        prefix=st.sampled_from([b"", *fuzz_ledger.PREFIXES]),
        body=st.binary(max_size=400),
    )
    def test_generated(self, prefix: bytes, body: bytes) -> None:
        """Hypothesis inputs, raw and behind each structured prefix."""
        _check(prefix + body)

    @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
    @given(text=st.text(max_size=300))
    def test_generated_text(self, text: str) -> None:
        """Arbitrary Unicode text (notes, tile paths, vkeys are text) as UTF-8."""
        _check(text.encode("utf-8", "surrogatepass"))
        _check(b"#note\n" + text.encode("utf-8", "surrogatepass"))

    def test_oversized_input_is_skipped(self) -> None:
        """Inputs past the harness's size cap are ignored rather than parsed."""
        check_input(b"A" * (fuzz_ledger.MAX_INPUT + 1))


class TestFindings:
    """Findings of the Ledger fuzz runs (docs/fuzzing.md), kept as regression cases.

    A finding the library has not fixed yet is ``xfail``; with ``xfail_strict`` it turns into
    a failure the day it is fixed, and then the marker goes.
    """

    def test_event_with_lone_surrogate_escape(self) -> None:
        """L1: an event whose JSON holds a ``\\ud800`` escape is refused with a CouponError."""
        event = (CORPUS / "seed-event").read_bytes().replace(b'"authority"', b'"\\ud800"')
        assert b"\\ud800" in event
        check_input(event)

    def test_event_with_lone_surrogate_in_a_key(self) -> None:
        """L1 (second form): a lone-surrogate escape in a member *name* is refused too."""
        event = (CORPUS / "seed-event").read_bytes().replace(b'"lineage"', b'"line\\ud800age"')
        assert b"\\ud800" in event
        check_input(event)
