"""Checkpoint bodies: the C2SP example, systematic malformations, signed opening, properties.

Provenance of the vector: tests/vectors/README.md, section "C2SP signed notes".
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coupon import codes
from coupon.codes import ErrorCode
from coupon.errors import MalformedLogData, UntrustedLogData
from coupon.ledger._checkpoint import MAX_TREE_SIZE, Checkpoint, open_checkpoint, parse_checkpoint
from coupon.ledger._note import CosignatureSigner, Ed25519Signer, name_problem, sign_note

EXAMPLE: dict[str, Any] = json.loads(
    (Path(__file__).parent.parent / "vectors" / "notes.json").read_text(encoding="utf-8")
)["c2sp_checkpoint"]
ROOT: str = EXAMPLE["root_hash_base64"]
ORIGIN: str = EXAMPLE["origin"]


def malformed(text: str | bytes) -> None:
    """Parse ``text``, expecting MalformedLogData with code LOG_CHECKPOINT."""
    with pytest.raises(MalformedLogData) as info:
        parse_checkpoint(text)
    assert info.value.code is codes.LOG_CHECKPOINT


def code_of(text: str | bytes) -> ErrorCode | None:
    """Return the code of the MalformedLogData parsing ``text`` raises, or None if it parses."""
    try:
        parse_checkpoint(text)
    except MalformedLogData as error:
        return error.code
    return None


class TestExample:
    def test_parses(self) -> None:
        """The C2SP example body parses to its origin, size and root hash."""
        checkpoint = parse_checkpoint(EXAMPLE["text"])
        assert checkpoint == Checkpoint(ORIGIN, EXAMPLE["size"], base64.b64decode(ROOT))

    def test_reserialises_identically(self) -> None:
        """The example re-serialises byte for byte, from str or from bytes."""
        assert parse_checkpoint(EXAMPLE["text"]).text() == EXAMPLE["text"]
        assert parse_checkpoint(EXAMPLE["text"].encode()).text() == EXAMPLE["text"]


class TestParseCheckpoint:
    @pytest.mark.parametrize("size", ["0", "1", "10", str(MAX_TREE_SIZE)])
    def test_sizes(self, size: str) -> None:
        """Sizes from 0 to 2**63 - 1 in plain decimal are accepted."""
        assert parse_checkpoint(f"o\n{size}\n{ROOT}\n").size == int(size)

    def test_extensions(self) -> None:
        """Lines after the root hash are kept, in order, as extensions."""
        text = f"o\n1\n{ROOT}\next one\n\u00e9xt two\n"
        checkpoint = parse_checkpoint(text)
        assert checkpoint.extensions == ("ext one", "\u00e9xt two")
        assert checkpoint.text() == text

    @pytest.mark.parametrize(
        "size",
        [
            "+1",
            "-1",
            " 1",
            "1 ",
            "1_0",
            "01",
            "00",
            "0x10",
            "1e3",
            "\u0663",
            "\uff11",
            "",
            str(MAX_TREE_SIZE + 1),
            "9" * 20,
            "9" * 5000,
        ],
    )
    def test_bad_size(self, size: str) -> None:
        """Anything but ASCII decimal without sign or leading zeros below 2**63 is refused."""
        malformed(f"o\n{size}\n{ROOT}\n")

    @pytest.mark.parametrize(
        "root",
        [
            ROOT.rstrip("="),
            ROOT.replace("I=", "J="),
            ROOT[:-4] + "====",
            base64.b64encode(bytes(31)).decode(),
            base64.b64encode(bytes(33)).decode(),
            base64.urlsafe_b64encode(b"\xff" * 32).decode(),
            " " + ROOT,
            "",
        ],
        ids=["unpadded", "noncanonical", "overpadded", "31", "33", "urlsafe", "space", "empty"],
    )
    def test_bad_root(self, root: str) -> None:
        """The root hash must be canonical standard base64 of 32 bytes."""
        malformed(f"o\n1\n{root}\n")

    @pytest.mark.parametrize("origin", ["", "a b", "a+b", "a\u3000b", "o" * 257])
    def test_bad_origin(self, origin: str) -> None:
        """The origin must be non-empty, without Unicode spaces or '+', at most 256 bytes."""
        malformed(f"{origin}\n1\n{ROOT}\n")

    @pytest.mark.parametrize(
        "text",
        [
            "",
            "o\n",
            f"o\n1\n{ROOT}",
            f"o\n1\n{ROOT}\n\n",
            f"o\n1\n{ROOT}\n\next\n",
            f"o\r\n1\n{ROOT}\n",
            f"o\n1\n{ROOT}\nex\tt\n",
            f"o\n1\n{ROOT}\nlone \ud800\n",
            b"o\n1\n" + ROOT.encode() + b"\n\xff\n",
            "x" * (1 << 20) + f"\n1\n{ROOT}\n",
        ],
        ids=[
            "empty",
            "one-line",
            "no-final-newline",
            "trailing-blank",
            "empty-extension",
            "carriage-return",
            "tab",
            "surrogate",
            "invalid-utf8",
            "oversized",
        ],
    )
    def test_bad_shape(self, text: str | bytes) -> None:
        """Fewer than three lines, empty lines, control characters or bad UTF-8 are refused."""
        malformed(text)


class TestCheckpoint:
    @pytest.mark.parametrize(
        ("origin", "size", "root", "extensions"),
        [
            ("", 0, bytes(32), ()),
            ("o", -1, bytes(32), ()),
            ("o", 2**63, bytes(32), ()),
            ("o", 0, bytes(31), ()),
            ("o", 0, bytes(32), ("",)),
            ("o", 0, bytes(32), ("a\nb",)),
        ],
        ids=["origin", "negative", "too-big", "short-root", "empty-ext", "newline-ext"],
    )
    def test_misuse(self, origin: str, size: int, root: bytes, extensions: tuple[str, ...]) -> None:
        """Building an invalid checkpoint is a programming error."""
        with pytest.raises(ValueError, match=r"origin|size|root|extension"):
            Checkpoint(origin, size, root, extensions)


class TestOpenCheckpoint:
    LOG = Ed25519Signer.generate("example.com/behind-the-sofa")
    WITNESS = CosignatureSigner.generate("witness.example.com/w1")

    def test_signed_and_cosigned(self) -> None:
        """A checkpoint signed by the log and cosigned by a witness opens with both keys."""
        note = sign_note(EXAMPLE["text"], self.LOG, self.WITNESS.at(1679315147)).encode()
        checkpoint, parsed, sigs = open_checkpoint(
            note, [self.LOG.verifier(), self.WITNESS.verifier()], origin=ORIGIN
        )
        assert checkpoint.size == EXAMPLE["size"]
        assert parsed.text == EXAMPLE["text"]
        assert len(sigs) == 2

    def test_other_origin(self) -> None:
        """A checkpoint for another origin than expected is untrusted."""
        note = sign_note(EXAMPLE["text"], self.LOG).encode()
        with pytest.raises(UntrustedLogData) as info:
            open_checkpoint(note, [self.LOG.verifier()], origin="example.com/other")
        assert info.value.code is codes.LOG_UNTRUSTED

    def test_untrusted(self) -> None:
        """A checkpoint signed only by an unknown key is untrusted."""
        note = sign_note(EXAMPLE["text"], Ed25519Signer.generate(ORIGIN)).encode()
        with pytest.raises(UntrustedLogData):
            open_checkpoint(note, [self.LOG.verifier()])

    def test_signed_garbage(self) -> None:
        """A trusted signature over a text that is no checkpoint is MalformedLogData."""
        note = sign_note("not\na checkpoint\n", self.LOG).encode()
        with pytest.raises(MalformedLogData) as info:
            open_checkpoint(note, [self.LOG.verifier()])
        assert info.value.code is codes.LOG_CHECKPOINT


ORIGINS = st.text(
    st.characters(exclude_categories=("Cs", "Cc", "Zs", "Zl", "Zp"), exclude_characters="+"),
    min_size=1,
    max_size=30,
).filter(lambda origin: name_problem(origin) is None)
EXTENSIONS = st.text(
    st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=30
).filter(lambda line: "\n" not in line)


class TestProperties:
    @given(
        origin=ORIGINS,
        size=st.integers(0, MAX_TREE_SIZE),
        root=st.binary(min_size=32, max_size=32),
        extensions=st.lists(EXTENSIONS, max_size=4).map(tuple),
    )
    def test_round_trip(
        self, origin: str, size: int, root: bytes, extensions: tuple[str, ...]
    ) -> None:
        """Any checkpoint's text parses back to it, and re-serialises identically."""
        checkpoint = Checkpoint(origin, size, root, extensions)
        assert parse_checkpoint(checkpoint.text()) == checkpoint
        assert parse_checkpoint(checkpoint.text().encode()).text() == checkpoint.text()

    @given(data=st.one_of(st.text(), st.binary()))
    def test_arbitrary_input(self, data: str | bytes) -> None:
        """Arbitrary input parses or raises MalformedLogData, nothing else."""
        assert code_of(data) in (None, codes.LOG_CHECKPOINT)

    @given(size=st.text(max_size=25), root=st.text(max_size=50))
    def test_arbitrary_fields(self, size: str, root: str) -> None:
        """Arbitrary size and root lines parse or raise MalformedLogData, nothing else."""
        assert code_of(f"o\n{size}\n{root}\n") in (None, codes.LOG_CHECKPOINT)
