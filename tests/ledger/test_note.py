"""Signed notes and cosignatures: known answers, one-change mutations and properties.

Provenance of the vectors: tests/vectors/README.md, section "C2SP signed notes".
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from coupon import codes
from coupon.codes import ErrorCode
from coupon.errors import MalformedLogData, UntrustedLogData
from coupon.ledger._note import (
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
    key_id,
    name_problem,
    parse_note,
    parse_vkey,
    sign_note,
    verify_note,
)

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent.parent / "vectors" / "notes.json").read_text(encoding="utf-8")
)
GO: dict[str, Any] = VECTORS["go_sumdb_note"]
SPEC: dict[str, Any] = VECTORS["c2sp_signed_note"]
COSIG: dict[str, Any] = VECTORS["transparency_dev_cosignature"]

TEXT: str = GO["text"]
PETER_LINE: str = GO["peter"]["signature_line"]
ENOCH_LINE: str = GO["enoch"]["signature_line"]
PETER = Ed25519Verifier.from_vkey(GO["peter"]["vkey"])
ENOCH = Ed25519Verifier.from_vkey(GO["enoch"]["vkey"])
EM = "\u2014"


def malformed(data: bytes | str) -> MalformedLogData:
    """Parse ``data``, expecting MalformedLogData with code LOG_NOTE."""
    with pytest.raises(MalformedLogData) as info:
        parse_note(data)
    assert info.value.code is codes.LOG_NOTE
    return info.value


def untrusted(note: bytes | str, *verifiers: Ed25519Verifier | CosignatureVerifier) -> None:
    """Verify ``note``, expecting UntrustedLogData with code LOG_UNTRUSTED."""
    with pytest.raises(UntrustedLogData) as info:
        verify_note(note, verifiers)
    assert info.value.code is codes.LOG_UNTRUSTED


def code_of(parse: Callable[[Any], object], data: object) -> ErrorCode | None:
    """Return the code of the MalformedLogData ``parse(data)`` raises, or None if it parses."""
    try:
        parse(data)
    except MalformedLogData as error:
        return error.code
    return None


class TestGoVectors:
    def test_peter_verifies(self) -> None:
        """The Peter Neumann note verifies with his vkey."""
        note, sigs = verify_note(GO["peter_note"], [PETER])
        assert note.text == TEXT
        assert [s.line() for s in sigs] == [PETER_LINE]

    def test_resign_peter(self) -> None:
        """Signing the text with Peter's skey reproduces the published signature byte for byte."""
        signer = Ed25519Signer.from_skey(GO["peter"]["skey"])
        assert sign_note(TEXT, signer).encode() == GO["peter_note"]

    def test_skey_and_vkey_round_trip(self) -> None:
        """Peter's skey re-encodes identically and yields his vkey."""
        signer = Ed25519Signer.from_skey(GO["peter"]["skey"])
        assert signer.skey() == GO["peter"]["skey"]
        assert signer.verifier() == PETER
        assert PETER.vkey() == GO["peter"]["vkey"]

    def test_both_signatures_verify(self) -> None:
        """The two-signature note of Go's example verifies with both keys, in order."""
        _, sigs = verify_note(GO["both_note"], [ENOCH, PETER])
        assert [s.line() for s in sigs] == [PETER_LINE, ENOCH_LINE]

    def test_enoch_is_the_zero_seed(self) -> None:
        """EnochRoot's key is Go's example key from an all-zero seed, and re-signs identically."""
        signer = Ed25519Signer("EnochRoot", Ed25519PrivateKey.from_private_bytes(bytes(32)))
        assert signer.verifier().vkey() == GO["enoch"]["vkey"]
        assert sign_note(TEXT, signer).signatures[0].line() == ENOCH_LINE

    def test_add_signature_keeps_existing(self) -> None:
        """Adding Enoch's signature to Peter's note gives Go's two-signature note."""
        enoch = Ed25519Signer("EnochRoot", Ed25519PrivateKey.from_private_bytes(bytes(32)))
        peter_note = parse_note(GO["peter_note"])
        both = sign_note(TEXT, enoch, existing=peter_note.signatures)
        assert both.encode() == GO["both_note"]


class TestSpecExample:
    def test_verifies(self) -> None:
        """The signed-note example verifies with its vkey."""
        note, sigs = verify_note(SPEC["note"], [Ed25519Verifier.from_vkey(SPEC["vkey"])])
        assert note.text == SPEC["text"]
        assert sigs[0].key_id == 0x530D903A

    def test_bytes_and_str_agree(self) -> None:
        """Parsing the UTF-8 bytes gives the same note as parsing the str."""
        assert parse_note(SPEC["note"].encode()) == parse_note(SPEC["note"])


class TestKeyId:
    def test_type_separates_keys(self) -> None:
        """One key and name under types 0x01 and 0x04 have different key IDs."""
        key = PETER.public_key
        assert key_id("PeterNeumann", SIG_ED25519, key) == 0xC74F20A3
        assert key_id("PeterNeumann", SIG_COSIGNATURE_V1, key) != 0xC74F20A3

    def test_type_is_a_byte(self) -> None:
        """A signature type outside 0..255 is a programming error."""
        with pytest.raises(ValueError, match="one byte"):
            key_id("a", 256, b"")


class TestVkeys:
    @pytest.mark.parametrize("case", COSIG["valid_vkeys"], ids=lambda c: c["name"])
    def test_valid(self, case: dict[str, Any]) -> None:
        """transparency-dev's good vkeys load as the verifier of their type and re-encode."""
        verifier = parse_vkey(case["vkey"])
        expected = CosignatureVerifier if case["type"] == SIG_COSIGNATURE_V1 else Ed25519Verifier
        assert type(verifier) is expected
        assert (verifier.name, f"{verifier.key_id:08x}") == (case["name"], case["key_id"])
        assert verifier.vkey() == case["vkey"]

    @pytest.mark.parametrize("case", COSIG["invalid_vkeys"], ids=lambda c: c["comment"])
    def test_invalid(self, case: dict[str, Any]) -> None:
        """transparency-dev's bad vkeys are malformed."""
        with pytest.raises(MalformedLogData) as info:
            parse_vkey(case["vkey"])
        assert info.value.code is codes.LOG_NOTE

    @pytest.mark.parametrize(
        "vkey",
        [
            "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T",
            "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TX",
            "PeterNeumann+c74f20a3+",
            "+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "",
        ],
        ids=[
            "wrong-id",
            "uppercase-id",
            "short-id",
            "unpadded",
            "noncanonical",
            "empty-key",
            "empty-name",
            "space",
            "empty",
        ],
    )
    def test_mutated(self, vkey: str) -> None:
        """One change to Peter's vkey makes it malformed."""
        with pytest.raises(MalformedLogData):
            parse_vkey(vkey)

    def test_wrong_type_for_class(self) -> None:
        """Each verifier class refuses vkeys of the other type."""
        with pytest.raises(MalformedLogData, match="type"):
            CosignatureVerifier.from_vkey(GO["peter"]["vkey"])
        with pytest.raises(MalformedLogData, match="type"):
            Ed25519Verifier.from_vkey(COSIG["valid_vkeys"][0]["vkey"])

    def test_wrong_key_length(self) -> None:
        """A type 0x01 vkey whose key is not 32 bytes is malformed."""
        raw = bytes([SIG_ED25519]) + bytes(31)
        vkey = f"n+{key_id('n', SIG_ED25519, bytes(31)):08x}+{base64.b64encode(raw).decode()}"
        with pytest.raises(MalformedLogData, match="32 bytes"):
            parse_vkey(vkey)


class TestSkeys:
    @pytest.mark.parametrize(
        "skey",
        [
            "PRIVATE+KEY+PeterNeumann+c74f20a4+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
            "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDF",
            "PRIVATE+KEY+PeterNeumann+c74f20a3",
            "PUBLIC+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
            "PRIVATE+KEY++c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
        ],
        ids=["wrong-id", "truncated", "no-key", "not-private", "empty-name"],
    )
    def test_mutated(self, skey: str) -> None:
        """One change to Peter's skey makes it malformed, and the reason does not quote it."""
        with pytest.raises(MalformedLogData) as info:
            Ed25519Signer.from_skey(skey)
        assert "AYEK" not in info.value.diagnostics()

    def test_cosigner_refuses_ed25519_skey(self) -> None:
        """A cosigner loads only type 0x04 key material."""
        with pytest.raises(MalformedLogData, match="type"):
            CosignatureSigner.from_skey(GO["peter"]["skey"])

    def test_cosigner_round_trip(self) -> None:
        """A cosigner's skey loads back to the same key, and its vkey to the same verifier."""
        cosigner = CosignatureSigner.generate("witness.example/w1")
        again = CosignatureSigner.from_skey(cosigner.skey())
        assert again.verifier() == cosigner.verifier()
        assert parse_vkey(cosigner.verifier().vkey()) == cosigner.verifier()

    def test_repr_hides_the_key(self) -> None:
        """repr() of a signer names the key but shows no key material."""
        signer = Ed25519Signer.from_skey(GO["peter"]["skey"])
        assert repr(signer) == "Ed25519Signer(PeterNeumann+c74f20a3)"


class TestCosignature:
    @pytest.mark.parametrize("case", COSIG["timestamps"], ids=["cosignature", "ed25519"])
    def test_timestamp(self, case: dict[str, Any]) -> None:
        """transparency-dev's cosignature has its timestamp; an Ed25519 signature has none."""
        verifier = CosignatureVerifier.from_vkey(COSIG["valid_vkeys"][0]["vkey"])
        blob = base64.b64decode(case["signature"])[4:]
        if case["timestamp"] is None:
            with pytest.raises(MalformedLogData) as info:
                verifier.timestamp(blob)
            assert info.value.code is codes.LOG_NOTE
        else:
            assert verifier.timestamp(blob) == case["timestamp"]

    def test_sign_and_verify(self) -> None:
        """A cosignature verifies, carries its time, and is not an Ed25519 signature."""
        cosigner = CosignatureSigner.generate("witness.example/w1")
        signature = cosigner.sign(b"body\n", timestamp=1679315147)
        assert len(signature) == 72
        assert cosigner.verifier().verify(b"body\n", signature)
        assert cosigner.verifier().timestamp(signature) == 1679315147
        assert not cosigner.verifier().verify(b"body!\n", signature)
        with_other_time = (1679315148).to_bytes(8, "big") + signature[8:]
        assert not cosigner.verifier().verify(b"body\n", with_other_time)
        plain = Ed25519Verifier(
            cosigner.name, key_id(cosigner.name, 1, cosigner.public_key), cosigner.public_key
        )
        assert not plain.verify(b"body\n", signature[8:])

    @pytest.mark.parametrize("timestamp", [-1, 2**63])
    def test_time_range(self, timestamp: int) -> None:
        """Cosigning outside [0, 2**63 - 1] is a programming error."""
        cosigner = CosignatureSigner.generate("w")
        with pytest.raises(ValueError, match="timestamp"):
            cosigner.sign(b"x\n", timestamp=timestamp)
        with pytest.raises(ValueError, match="timestamp"):
            cosigner.at(timestamp)

    def test_time_above_2_63_refused(self) -> None:
        """A cosignature whose time has the top bit set neither verifies nor has a timestamp."""
        cosigner = CosignatureSigner.generate("w")
        signature = b"\x80" + cosigner.sign(b"x\n", timestamp=0)[1:]
        assert not cosigner.verifier().verify(b"x\n", signature)
        with pytest.raises(MalformedLogData):
            cosigner.verifier().timestamp(signature)

    def test_cosigned_note(self) -> None:
        """A log signature plus a witness cosignature both verify in one note."""
        log, witness = (
            Ed25519Signer.generate("log.example"),
            CosignatureSigner.generate("w.example"),
        )
        note = sign_note("body\n", log, witness.at(1700000000))
        _, sigs = verify_note(note.encode(), [log.verifier(), witness.verifier()])
        assert [s.name for s in sigs] == ["log.example", "w.example"]
        assert witness.verifier().timestamp(sigs[1].signature) == 1700000000


class TestParseNote:
    def test_text_may_hold_blank_lines(self) -> None:
        """The text ends at the last blank line, so it may itself hold blank lines."""
        signer = Ed25519Signer.generate("k")
        text = "a\n\nb\n\n"
        note = parse_note(sign_note(text, signer).encode())
        assert note.text == text
        verify_note(note, [signer.verifier()])

    def test_blank_line_between_signatures_moves_the_split(self) -> None:
        """A blank line among the signatures makes the signatures before it part of the text."""
        note = parse_note(GO["peter_note"] + "\n" + ENOCH_LINE)
        assert note.text == TEXT + "\n" + PETER_LINE
        untrusted(GO["peter_note"] + "\n" + ENOCH_LINE, PETER)

    def test_sixty_four_signatures(self) -> None:
        """A note may carry MAX_SIGNATURES signature lines (the spec asks for at least 16)."""
        assert len(parse_note(TEXT + "\n" + PETER_LINE * MAX_SIGNATURES).signatures) == 64

    @pytest.mark.parametrize(
        "data",
        [
            TEXT + PETER_LINE,
            GO["peter_note"][:-1],
            TEXT + "\n",
            TEXT,
            "",
            "\n\n",
            TEXT.replace("\n", "\r\n") + "\n" + PETER_LINE,
            "tab\there\n\n" + PETER_LINE,
            "nul\x00\n\n" + PETER_LINE,
            "esc\x1b\n\n" + PETER_LINE,
            TEXT + "\n" + PETER_LINE.replace("=\n", "\n"),
            TEXT + "\n" + PETER_LINE.replace("AM=", "AN="),
            TEXT + "\n" + PETER_LINE.replace("x08go", "x08go "),
            TEXT + "\n" + PETER_LINE.replace("x08go/", "x08go_"),
            TEXT + "\n" + PETER_LINE.replace("PeterNeumann", ""),
            TEXT + "\n" + PETER_LINE.replace("PeterNeumann", "Peter+Neumann"),
            TEXT + "\n" + PETER_LINE.replace("PeterNeumann", "Peter\u00a0Neumann"),
            TEXT + "\n" + PETER_LINE.replace("PeterNeumann", "P" * 257),
            TEXT + "\n" + PETER_LINE.replace("PeterNeumann ", "PeterNeumann"),
            TEXT + "\n" + PETER_LINE.replace(EM, "-"),
            TEXT + "\n" + PETER_LINE.replace(EM + " ", EM),
            TEXT + "\n" + f"{EM} k {base64.b64encode(bytes(4)).decode()}\n",
            TEXT + "\n" + PETER_LINE * (MAX_SIGNATURES + 1),
            "a" * MAX_NOTE_SIZE + "\n\n" + PETER_LINE,
            "\u00e9" * (MAX_NOTE_SIZE // 2) + "\n\n" + PETER_LINE,
            "lone \ud800 surrogate\n\n" + PETER_LINE,
            b"bad \xff utf-8\n\n" + PETER_LINE.encode(),
            b"overlong \xc0\xaf\n\n" + PETER_LINE.encode(),
        ],
        ids=[
            "no-blank-line",
            "no-final-newline",
            "no-signatures",
            "text-only",
            "empty",
            "blank-only",
            "carriage-return",
            "tab",
            "nul",
            "escape",
            "unpadded-base64",
            "noncanonical-base64",
            "space-in-base64",
            "non-alphabet-base64",
            "empty-name",
            "plus-in-name",
            "nbsp-in-name",
            "long-name",
            "no-space-after-name",
            "hyphen-not-em-dash",
            "no-space-after-dash",
            "signature-4-bytes",
            "too-many-signatures",
            "oversized-ascii",
            "oversized-utf8",
            "lone-surrogate",
            "invalid-utf8",
            "overlong-utf8",
        ],
    )
    def test_malformed(self, data: bytes | str) -> None:
        """Each systematic breach of the format is MalformedLogData with code LOG_NOTE."""
        malformed(data)


class TestMutations:
    @pytest.mark.parametrize("index", range(68))
    def test_signature_bit_flip(self, index: int) -> None:
        """Flipping one bit of any byte of Peter's key ID or signature fails verification."""
        blob = bytearray(base64.b64decode(PETER_LINE.split(" ")[2]))
        blob[index] ^= 1 << (index % 8)
        line = f"{EM} PeterNeumann {base64.b64encode(blob).decode()}\n"
        untrusted(TEXT + "\n" + line, PETER)

    @pytest.mark.parametrize("index", [i for i, c in enumerate(TEXT) if c != "\n"])
    def test_text_character_change(self, index: int) -> None:
        """Changing one character of the text fails verification."""
        changed = TEXT[:index] + ("X" if TEXT[index] != "X" else "Y") + TEXT[index + 1 :]
        untrusted(changed + "\n" + PETER_LINE, PETER)


class TestVerifyNote:
    def test_unknown_keys_ignored(self) -> None:
        """Signatures from keys sharing only a name or only an ID with a known key are ignored."""
        other_id = PETER_LINE.replace("x08go", "x08gp")  # same name, another key ID
        other_name = PETER_LINE.replace("PeterNeumann", "PeterNeuman")  # same ID, another name
        note = TEXT + "\n" + other_id + other_name + ENOCH_LINE
        _, sigs = verify_note(note, [ENOCH])
        assert [s.name for s in sigs] == ["EnochRoot"]

    def test_bad_known_signature_rejects_the_note(self) -> None:
        """A known key's bad signature rejects the note even though another trusted key verifies."""
        bad_peter = PETER_LINE.replace("AM=", "AA=")
        untrusted(TEXT + "\n" + bad_peter + ENOCH_LINE, PETER, ENOCH)
        untrusted(TEXT + "\n" + ENOCH_LINE + bad_peter, PETER, ENOCH)

    def test_no_trusted_signature(self) -> None:
        """A note signed only by unknown keys, or checked against no key, is untrusted."""
        untrusted(GO["peter_note"], ENOCH)
        untrusted(GO["peter_note"])

    def test_short_known_signature_rejects_the_note(self) -> None:
        """A known key's signature of the wrong length fails like a bad signature."""
        short = (
            f"{EM} PeterNeumann {base64.b64encode(bytes.fromhex('c74f20a3') + bytes(3)).decode()}\n"
        )
        untrusted(TEXT + "\n" + short + ENOCH_LINE, PETER, ENOCH)

    def test_duplicate_signature_counted_once(self) -> None:
        """Two copies of one key's signature verify as one."""
        _, sigs = verify_note(TEXT + "\n" + PETER_LINE * 2, [PETER])
        assert len(sigs) == 1

    def test_ambiguous_verifiers(self) -> None:
        """Two different verifiers for one name and key ID are a programming error."""
        impostor = Ed25519Verifier.__new__(Ed25519Verifier)
        object.__setattr__(impostor, "name", "PeterNeumann")
        object.__setattr__(impostor, "key_id", PETER.key_id)
        object.__setattr__(impostor, "public_key", bytes(32))
        with pytest.raises(ValueError, match="two verifiers"):
            verify_note(GO["peter_note"], [PETER, impostor])
        verify_note(GO["peter_note"], [PETER, PETER])

    def test_malformed_note(self) -> None:
        """verify_note parses first: a malformed note is MalformedLogData, not untrusted."""
        with pytest.raises(MalformedLogData):
            verify_note(GO["peter_note"][:-1], [PETER])


class TestSignNote:
    def test_same_key_replaces_existing(self) -> None:
        """Re-signing with a key drops its existing signature (Go's note.Sign)."""
        signer = Ed25519Signer.from_skey(GO["peter"]["skey"])
        note = sign_note(TEXT, signer, existing=parse_note(GO["both_note"]).signatures)
        assert [s.name for s in note.signatures] == ["EnochRoot", "PeterNeumann"]

    @pytest.mark.parametrize("text", ["no newline", "tab\t\n", ""])
    def test_bad_text(self, text: str) -> None:
        """Signing a text that is not a valid note text is a programming error."""
        with pytest.raises(ValueError, match="text"):
            sign_note(text, Ed25519Signer.generate("k"))

    def test_signature_count(self) -> None:
        """Signing with no signer, or past MAX_SIGNATURES, is a programming error."""
        with pytest.raises(ValueError, match="signatures"):
            sign_note(TEXT)
        existing = [Signature(f"k{i}", i, b"s") for i in range(MAX_SIGNATURES)]
        with pytest.raises(ValueError, match="signatures"):
            sign_note(TEXT, Ed25519Signer.generate("k"), existing=existing)


class TestConstructors:
    @pytest.mark.parametrize("name", ["", "a b", "a+b", "a\u2003b", "x" * 257, "\ud800"])
    def test_bad_names(self, name: str) -> None:
        """A bad key name given to a constructor is a ValueError."""
        with pytest.raises(ValueError, match="name"):
            Ed25519Signer(name, Ed25519PrivateKey.generate())
        with pytest.raises(ValueError, match="name"):
            Signature(name, 1, b"s")

    def test_wrong_key_type(self) -> None:
        """A signer needs an Ed25519 private key."""
        with pytest.raises(TypeError):
            Ed25519Signer("k", b"seed")  # type: ignore[arg-type]

    def test_verifier_checks_its_fields(self) -> None:
        """A verifier's key ID must match its name and key, and the key be 32 bytes."""
        with pytest.raises(ValueError, match="key ID"):
            Ed25519Verifier("PeterNeumann", PETER.key_id ^ 1, PETER.public_key)
        with pytest.raises(ValueError, match="32 bytes"):
            Ed25519Verifier("PeterNeumann", PETER.key_id, PETER.public_key[:31])
        with pytest.raises(ValueError, match="name"):
            Ed25519Verifier("Peter+Neumann", PETER.key_id, PETER.public_key)

    def test_signature_and_note_fields(self) -> None:
        """Signatures need a uint32 ID and bytes; notes need a valid text."""
        with pytest.raises(ValueError, match="uint32"):
            Signature("k", 2**32, b"s")
        with pytest.raises(ValueError, match="uint32"):
            Signature("k", 1, b"")
        with pytest.raises(ValueError, match="newline"):
            Note("x", ())


NAMES = st.text(
    st.characters(exclude_categories=("Cs", "Cc", "Zs", "Zl", "Zp"), exclude_characters="+"),
    min_size=1,
    max_size=20,
).filter(lambda name: name_problem(name) is None)
TEXTS = st.text(
    st.characters(codec="utf-8", exclude_characters=[chr(i) for i in range(32) if i != 10]),
    max_size=200,
).map(lambda text: text + "\n")
SEEDS = st.binary(min_size=32, max_size=32)


class TestProperties:
    @given(text=TEXTS, name=NAMES, seed=SEEDS, cosign=st.booleans())
    def test_sign_parse_verify(self, text: str, name: str, seed: bytes, cosign: bool) -> None:
        """Any valid text signed under any valid name parses back and verifies."""
        key = Ed25519PrivateKey.from_private_bytes(seed)
        verifier: Ed25519Verifier | CosignatureVerifier
        if cosign:
            cosigner = CosignatureSigner(name, key)
            note, verifier = sign_note(text, cosigner.at(1)), cosigner.verifier()
        else:
            signer = Ed25519Signer(name, key)
            note, verifier = sign_note(text, signer), signer.verifier()
        parsed, sigs = verify_note(note.encode().encode("utf-8"), [parse_vkey(verifier.vkey())])
        assert parsed == note
        assert sigs == note.signatures

    @given(
        text=TEXTS,
        sigs=st.lists(
            st.builds(
                Signature, NAMES, st.integers(0, 2**32 - 1), st.binary(min_size=1, max_size=80)
            ),
            min_size=1,
            max_size=MAX_SIGNATURES,
        ),
    )
    def test_parse_encode(self, text: str, sigs: list[Signature]) -> None:
        """Parsing an encoded note gives the note back."""
        note = Note(text, tuple(sigs))
        assert parse_note(note.encode()) == note

    @given(data=st.one_of(st.binary(), st.text()))
    def test_arbitrary_input(self, data: bytes | str) -> None:
        """Arbitrary input parses or raises MalformedLogData, nothing else."""
        assert code_of(parse_note, data) in (None, codes.LOG_NOTE)

    @given(prefix=st.text(max_size=40), line=st.text(max_size=120))
    def test_arbitrary_signature_line(self, prefix: str, line: str) -> None:
        """A text followed by an arbitrary signature line parses or is MalformedLogData."""
        assert code_of(parse_note, f"{prefix}\n\n{EM} {line}\n") in (None, codes.LOG_NOTE)

    @given(vkey=st.text(max_size=80))
    def test_arbitrary_vkey(self, vkey: str) -> None:
        """An arbitrary vkey loads or raises MalformedLogData, nothing else."""
        assert code_of(parse_vkey, vkey) in (None, codes.LOG_NOTE)
