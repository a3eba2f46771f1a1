"""Atheris fuzz target for the Ledger's parsers and proof verifiers.

Contract under test (docs/fuzzing.md): whatever bytes an auditor, a witness client or a
mirror receives, the Ledger's readers either succeed or raise a
:class:`coupon.errors.CouponError`. Anything else (``ValueError``, ``IndexError``,
``UnicodeError``, ``OverflowError``...) is a finding.

Inputs are dispatched on a prefix, so that a corpus file stays readable:

* anything else ("raw"): the bytes, and their text (UTF-8, undecodable bytes kept as lone
  surrogates), go through ``parse_note`` (bytes and str), ``verify_note`` and
  ``open_checkpoint`` with fixed verifiers (the log key and a witness cosigner key),
  ``parse_checkpoint``, ``parse_vkey``, ``parse_tile_path``, ``parse_bundle``,
  ``parse_event`` (+ ``event_columns``, what ``Ledger.append`` does next), ``parse_leaf``,
  the witness's request parser and ``Witness.add_checkpoint`` (when
  ``coupon.ledger_service._witness`` exists), and ``verify_inclusion`` /
  ``verify_consistency`` with the first 16 bytes as two signed 64-bit sizes and the rest as
  32-byte chunks (hashes, roots, proof).
* ``#note\\n`` + note text: the harness *signs* the text with the log key and the witness
  key, so the mutations reach ``parse_checkpoint`` behind ``open_checkpoint``'s signature
  check and the witness's checks behind ``verify_note``.
* ``#proof\\n`` + 3 bytes + proof bytes: byte 0 picks inclusion (even) or consistency (odd),
  bytes 1-2 the index/sizes, checked against the real roots of a fixed 64-leaf tree; the
  rest is the proof, split into 32-byte chunks. Corpus seeds are valid proofs, so bit flips
  hit the last comparisons.
* ``#witness\\n`` + ``old N\\n<proof lines>\\n`` + checkpoint text: the harness signs the text
  with the log key and posts the body to a fresh witness already at size 16 of the fixed
  tree, so the consistency path is reachable.

Run (see docs/fuzzing.md)::

    .venv/bin/python fuzz/fuzz_ledger.py --make-corpus fuzz/corpus_ledger
    .venv/bin/python fuzz/fuzz_ledger.py -max_total_time=120 /tmp/scratch fuzz/corpus_ledger
    .venv/bin/python fuzz/fuzz_ledger.py --replay CRASH_FILE_OR_DIR

:func:`check_input` is the per-input function; it does not need atheris, so
``tests/fuzz/test_fuzz_ledger_smoke.py`` replays the corpus through it in plain pytest.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Final

import rfc8785
from cryptography.hazmat.primitives.asymmetric import ed25519

from coupon.errors import CouponError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: find fuzz/
from fuzz._harness import fuzz, replay

from coupon.ledger import (
    Checkpoint,
    CosignatureSigner,
    Ed25519Signer,
    RightBorder,
    TileBuilder,
    TileRef,
    Verifier,
    consistency_plan,
    encode_bundle,
    hash_leaf,
    inclusion_plan,
    open_checkpoint,
    parse_bundle,
    parse_checkpoint,
    parse_note,
    parse_tile_path,
    parse_vkey,
    sign_note,
    verify_consistency,
    verify_inclusion,
    verify_note,
)
from coupon.ledger_service._entries import (
    Submission,
    build_leaf,
    event_columns,
    parse_event,
    parse_leaf,
)

witness_module: ModuleType | None
try:  # written concurrently with this harness: fuzz it when it is there
    from coupon.ledger_service import _witness as witness_module
except ImportError:  # pragma: no cover
    witness_module = None

__all__ = [
    "DICTIONARY",
    "LEAVES",
    "LOG_SIGNER",
    "MAX_INPUT",
    "NOW",
    "ORIGIN",
    "PREFIXES",
    "ROOTS",
    "VERIFIERS",
    "WITNESS_SIGNER",
    "check_input",
    "main",
    "make_corpus",
    "replay",
    "seeds",
]

#: The fixed clock of the witness and of cosignatures, so every input replays the same way.
NOW: Final = 1_700_000_000
ORIGIN: Final = "fuzz.example/ledger"
WITNESS_NAME: Final = "fuzz.example/witness"
MAX_INPUT: Final = 65_536
PREFIXES: Final = (b"#note\n", b"#proof\n", b"#witness\n")
WITNESS_SIZE: Final = 16  # the size the fuzzed witness has cosigned before each input


def _seed(label: str) -> ed25519.Ed25519PrivateKey:
    raw = hashlib.sha256(f"coupon-fuzz-ledger:{label}".encode()).digest()
    return ed25519.Ed25519PrivateKey.from_private_bytes(raw)


LOG_SIGNER: Final = Ed25519Signer(ORIGIN, _seed("log"))
WITNESS_SIGNER: Final = CosignatureSigner(WITNESS_NAME, _seed("witness"))
VERIFIERS: Final[tuple[Verifier, ...]] = (LOG_SIGNER.verifier(), WITNESS_SIGNER.verifier())

#: A fixed tree of 64 leaves; ROOTS[n] is the root of its first n leaves.
LEAVES: Final = tuple(hash_leaf(bytes([i])) for i in range(64))


def _roots() -> tuple[bytes, ...]:
    border = RightBorder()
    out = [border.root()]
    for leaf in LEAVES:
        border.append(leaf)
        out.append(border.root())
    return tuple(out)


ROOTS: Final = _roots()
_TILES: Final = TileBuilder().append(LEAVES)  # one level-0 tile of 64 hashes


def _true_inclusion(index: int, size: int) -> list[bytes]:
    nodes, plan = inclusion_plan(index, size)
    return nodes.rehash(plan.hashes(_TILES))


def _true_consistency(size1: int, size2: int) -> list[bytes]:
    nodes, plan = consistency_plan(size1, size2)
    return nodes.rehash(plan.hashes(_TILES)) if nodes.ids else []


def _checkpoint_text(size: int, extensions: tuple[str, ...] = ()) -> str:
    return Checkpoint(ORIGIN, size, ROOTS[size], extensions).text()


def _signed(text: str) -> str:
    return sign_note(text, LOG_SIGNER, WITNESS_SIGNER.at(NOW)).encode()


_WITNESSED_NOTE: Final = _signed(_checkpoint_text(WITNESS_SIZE))


def _guard(call: Callable[[], object]) -> None:
    """Run ``call``; a CouponError is an accepted answer, anything else propagates."""
    with contextlib.suppress(CouponError):
        call()


def _chunks(data: bytes) -> list[bytes]:
    return [data[i : i + 32] for i in range(0, len(data), 32)]


# -- the witness -----------------------------------------------------------------------------


def _witness() -> Any:
    """A fresh witness (in-memory state) that has cosigned size WITNESS_SIZE of the tree."""
    assert witness_module is not None
    state = witness_module.WitnessState(":memory:")
    seen = witness_module.WitnessedCheckpoint(WITNESS_SIZE, ROOTS[WITNESS_SIZE], _WITNESSED_NOTE)
    state.update(ORIGIN, lambda _latest: seen)
    cosigner = CosignatureSigner(WITNESS_NAME, _seed("witness"))
    return witness_module.Witness(
        cosigner, {ORIGIN: [LOG_SIGNER.verifier()]}, state, clock=lambda: float(NOW)
    )


def _check_witness(body: bytes) -> None:
    if witness_module is None:
        return
    parse_body = getattr(witness_module, "_parse_body", None)
    if parse_body is not None:
        _guard(lambda: parse_body(body))
    witness = _witness()
    try:
        _guard(lambda: witness.add_checkpoint(body))
    finally:
        witness._state.close()


# -- raw inputs ------------------------------------------------------------------------------


def _check_proof_bytes(data: bytes) -> None:
    """Sizes from the first 16 bytes (signed), then 32-byte chunks: two hashes and a proof."""
    a = int.from_bytes(data[:8], "big", signed=True)
    b = int.from_bytes(data[8:16], "big", signed=True)
    chunks = _chunks(data[16:]) or [b""]
    first = chunks[0]
    second = chunks[1] if len(chunks) > 1 else first
    proof = chunks[2:]
    _guard(lambda: verify_inclusion(a, b, first, proof, second))
    _guard(lambda: verify_consistency(a, b, proof, first, second))


def _check_raw(data: bytes) -> None:
    text = data.decode("utf-8", "surrogateescape")
    _guard(lambda: parse_note(data))
    _guard(lambda: parse_note(text))
    _guard(lambda: verify_note(data, VERIFIERS))
    _guard(lambda: open_checkpoint(data, VERIFIERS, origin=ORIGIN))
    _guard(lambda: open_checkpoint(text, VERIFIERS))
    _guard(lambda: parse_checkpoint(data))
    _guard(lambda: parse_checkpoint(text))
    _guard(lambda: parse_vkey(text))
    _guard(lambda: parse_tile_path(text))
    _guard(lambda: parse_bundle(data))
    _guard(lambda: parse_bundle(data, count=len(data) % 257))
    try:
        doc = parse_event(data)
    except CouponError:
        doc = None
    if doc is not None:
        event_columns(doc)  # Ledger.append runs this on every accepted event, unguarded
    _guard(lambda: parse_leaf(data))
    _check_proof_bytes(data)
    _check_witness(data)


# -- structured inputs -----------------------------------------------------------------------


def _check_note(body: bytes) -> None:
    text = body.decode("utf-8", "surrogateescape")
    try:
        signed = _signed(text)
    except ValueError:  # not a valid note text: the harness cannot sign it
        return
    _guard(lambda: verify_note(signed, VERIFIERS))
    _guard(lambda: open_checkpoint(signed, VERIFIERS, origin=ORIGIN))
    _guard(lambda: parse_checkpoint(text))
    raw = signed.encode("utf-8")
    _check_witness(b"old 0\n\n" + raw)
    _check_witness(f"old {WITNESS_SIZE}\n\n".encode() + raw)


def _check_proof(body: bytes) -> None:
    if len(body) < 3:
        return
    kind, x, y = body[0], body[1], body[2]
    proof = _chunks(body[3:])
    if kind % 2 == 0:
        index, size = x, y % 65
        leaf = LEAVES[index] if index < len(LEAVES) else bytes(32)
        _guard(lambda: verify_inclusion(index, size, leaf, proof, ROOTS[size]))
    else:
        size1, size2 = x % 65, y % 65
        _guard(lambda: verify_consistency(size1, size2, proof, ROOTS[size1], ROOTS[size2]))


def _check_witness_structured(body: bytes) -> None:
    split = body.find(b"\n\n")
    if split < 0:
        return
    head, text = body[: split + 2], body[split + 2 :].decode("utf-8", "surrogateescape")
    try:
        signed = sign_note(text, LOG_SIGNER).encode()
    except ValueError:
        return
    _check_witness(head + signed.encode("utf-8", "surrogateescape"))


def check_input(data: bytes) -> None:
    """Feed one fuzz input to every parser; raise only on a finding."""
    if len(data) > MAX_INPUT:
        return
    if data.startswith(b"#note\n"):
        _check_note(data[len(b"#note\n") :])
    elif data.startswith(b"#proof\n"):
        _check_proof(data[len(b"#proof\n") :])
    elif data.startswith(b"#witness\n"):
        _check_witness_structured(data[len(b"#witness\n") :])
    else:
        _check_raw(data)


# -- the corpus ------------------------------------------------------------------------------


def _event() -> dict[str, Any]:
    return {
        "v": 1,
        "id": "0f" * 16,
        "time": NOW * 1000,
        "service": "authority",
        "actor": {"type": "api_key", "id": "key-1"},
        "action": "coupon.issue",
        "target": {"jti": "fuzz-jti", "tenant": "acme"},
        "reason": "",
        "result": "ok",
        "code": None,
        "trace_id": "ab" * 16,
        "request_id": "cd" * 8,
        "lineage": None,
        "policy_version": "builtin-1",
        "personal": None,
    }


def _proof_lines(proof: Sequence[bytes]) -> bytes:
    return b"".join(base64.b64encode(h) + b"\n" for h in proof)


def seeds() -> dict[str, bytes]:
    """The seed corpus, name -> bytes (deterministic: fixed keys and clock)."""
    event = rfc8785.dumps(_event())
    signature = _seed("emitter").sign(b"coupon-audit-v1\n" + event)
    leaf = build_leaf(Submission(event, signature, "audit:fuzz"), None)
    text40 = _checkpoint_text(40)
    note40 = _signed(text40)
    out = {
        "seed-note": note40.encode(),
        "seed-note-log-only": sign_note(_checkpoint_text(64), LOG_SIGNER).encode().encode(),
        "seed-checkpoint": text40.encode(),
        "seed-checkpoint-extensions": _checkpoint_text(7, ("ext one", "ext-2")).encode(),
        "seed-vkey-log": LOG_SIGNER.verifier().vkey().encode(),
        "seed-vkey-witness": WITNESS_SIGNER.verifier().vkey().encode(),
        "seed-tile-0": TileRef(0, 1234067).path().encode(),
        "seed-tile-partial": TileRef(1, 5, 12).path().encode(),
        "seed-tile-entries": TileRef(-1, 0, 7).path().encode(),
        "seed-bundle": encode_bundle([event, leaf, b"", b"x" * 300]),
        "seed-event": event,
        "seed-leaf": leaf,
        "seed-proof-raw": (3).to_bytes(8, "big")
        + (40).to_bytes(8, "big")
        + LEAVES[3]
        + ROOTS[40]
        + b"".join(_true_inclusion(3, 40)),
        "seed-struct-note": b"#note\n" + _checkpoint_text(33, ("ext",)).encode(),
        "seed-struct-proof-inclusion": b"#proof\n"
        + bytes([0, 5, 45])
        + b"".join(_true_inclusion(5, 45)),
        "seed-struct-proof-consistency": b"#proof\n"
        + bytes([1, 13, 57])
        + b"".join(_true_consistency(13, 57)),
        "seed-struct-witness": b"#witness\n"
        + f"old {WITNESS_SIZE}\n".encode()
        + _proof_lines(_true_consistency(WITNESS_SIZE, 40))
        + b"\n"
        + text40.encode(),
        "seed-witness-body": f"old {WITNESS_SIZE}\n".encode()
        + _proof_lines(_true_consistency(WITNESS_SIZE, 40))
        + b"\n"
        + sign_note(text40, LOG_SIGNER).encode().encode(),
    }
    _check_seeds(out)
    return out


def _check_seeds(out: dict[str, bytes]) -> None:
    """The valid seeds must pass, so the fuzzer starts from inputs that reach the end."""
    open_checkpoint(out["seed-note"], VERIFIERS, origin=ORIGIN)
    parse_checkpoint(out["seed-checkpoint-extensions"])
    for name in ("seed-vkey-log", "seed-vkey-witness"):
        parse_vkey(out[name].decode())
    for name in ("seed-tile-0", "seed-tile-partial", "seed-tile-entries"):
        parse_tile_path(out[name].decode())
    assert len(parse_bundle(out["seed-bundle"])) == 4
    event_columns(parse_event(out["seed-event"]))
    parse_leaf(out["seed-leaf"])
    verify_inclusion(5, 45, LEAVES[5], _true_inclusion(5, 45), ROOTS[45])
    verify_consistency(13, 57, _true_consistency(13, 57), ROOTS[13], ROOTS[57])
    if witness_module is not None:
        witness = _witness()
        assert witness.add_checkpoint(out["seed-witness-body"])
        witness._state.close()


def make_corpus(directory: Path) -> list[Path]:
    """Write the seeds into ``directory`` (created if needed); returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in seeds().items():
        path = directory / name
        path.write_bytes(data)
        written.append(path)
    return written


# -- running ---------------------------------------------------------------------------------

#: Tokens libFuzzer splices into inputs (note, checkpoint, tile and witness syntax).
DICTIONARY: Final = (
    "\u2014 ", "\n\n", "tile/", "tile/entries/", ".p/", "x001/", "000", "255", "256",
    "old ", "old 0\n", "old 16\n", ORIGIN, WITNESS_NAME, "+", "/", "=", "==",
    "9223372036854775807", "9223372036854775808", "18446744073709551616", "-1", "\u00e9",
    '"v":1', '"event":', '"sig":', '"kid":', '"pd":', '"ref":', '"ct":', '"personal":',
    '"commit":', '"time":', '"actor":', '"target":', "null", "1e999", "\\ud800",
    base64.b64encode(ROOTS[40]).decode(), base64.b64encode(ROOTS[WITNESS_SIZE]).decode(),
)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    """Run libFuzzer through atheris (arguments as libFuzzer takes them).

    ``--replay FILE_OR_DIR...`` runs inputs once through :func:`replay` instead;
    ``--make-corpus DIR`` writes the seed corpus. Unless a ``-dict=`` argument is given, the
    built-in :data:`DICTIONARY` is used.
    """
    args = list(sys.argv if argv is None else argv)
    if len(args) > 1 and args[1] == "--replay":
        sys.exit(replay(args[2:], check_input))
    if len(args) > 1 and args[1] == "--make-corpus":
        target = Path(args[2]) if len(args) > 2 else Path(__file__).parent / "corpus_ledger"
        for path in make_corpus(target):
            print(path, file=sys.stderr)
        return
    fuzz(args, __file__, check_input, name="ledger", dictionary=DICTIONARY)


if __name__ == "__main__":
    main()
