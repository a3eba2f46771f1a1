"""``coupon ledger ...``: audit the Ledger from outside, trusting only its signing keys.

The logic lives in :mod:`._ledger_client`; these commands parse options and print.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from coupon import codes, ledger
from coupon.errors import error
from coupon.ledger import Checkpoint, Verifier
from coupon.ledger_service import parse_leaf

from ._app import EPILOG, EnvironmentProblem, JsonOpt, Output, VerboseOpt, app, setup
from ._io import read_bytes
from ._ledger_client import (
    DirTileSource,
    HttpTileSource,
    TileSource,
    TrustState,
    VerifyResult,
    b64,
    entry_at,
    locate_leaf,
    prove_inclusion,
    verify_log,
)
from ._remote import DEFAULT_URL, UrlOpt

__all__ = ["checkpoint", "key", "ledger_app", "monitor", "verify"]

ledger_app = typer.Typer(
    name="ledger",
    help="Audit the Ledger: checkpoints, consistency, inclusion; search and mirror it.",
    epilog=EPILOG,
    no_args_is_help=True,
)
app.add_typer(ledger_app)

TilesOpt = Annotated[
    str | None,
    typer.Option("--tiles", metavar="DIR", help="Read a static tlog-tiles mirror, not --url."),
]
KeysOpt = Annotated[
    list[str],
    typer.Option(
        "--key",
        metavar="VKEY",
        help="A trusted note verifier key, or a file of them (one a line); repeat. "
        "The first names the log's origin.",
    ),
]
OptionalKeysOpt = Annotated[
    list[str] | None,
    typer.Option("--key", metavar="VKEY", help="Verify the checkpoint with this key; repeat."),
]
OriginOpt = Annotated[
    str | None,
    typer.Option("--origin", help="The log's origin (default: the first --key's name)."),
]
StateOpt = Annotated[
    str | None,
    typer.Option(
        "--state",
        metavar="FILE",
        help="The last verified checkpoint: checked for consistency, then updated.",
    ),
]
ReadKeyOpt = Annotated[
    str | None,
    typer.Option(
        "--api-key", help="An auditor's API key, to read entry bundles [$COUPON_API_KEY]."
    ),
]


def _base(url: str | None) -> str:
    return url or os.environ.get("COUPON_URL") or DEFAULT_URL


@contextmanager
def _opened(url: str | None, tiles: str | None, api_key: str | None) -> Iterator[TileSource]:
    """The tile source the options name: ``--tiles DIR``, else the Ledger at ``--url``."""
    if url and tiles:
        raise typer.BadParameter("give --url or --tiles, not both", param_hint="--tiles")
    if tiles:
        yield DirTileSource(tiles)
        return
    source = HttpTileSource(_base(url), api_key=api_key or os.environ.get("COUPON_API_KEY"))
    try:
        yield source
    finally:
        source.close()


def _verifiers(keys: list[str]) -> list[Verifier]:
    """Parse ``--key`` values: vkeys, or files holding vkeys one per line."""
    vkeys: list[str] = []
    for value in keys:
        if os.path.isfile(value):
            text = read_bytes(value, what="key file").decode("utf-8", errors="replace")
            vkeys.extend(v for v in (line.strip() for line in text.splitlines()) if v)
        else:
            vkeys.append(value.strip())
    if not vkeys:
        raise typer.BadParameter("give at least one trusted key", param_hint="--key")
    return [ledger.parse_vkey(v) for v in vkeys]


def _inert(value: object) -> str:
    """``value`` as one line of inert text: control characters shown as escapes."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def _audit_key(text: str) -> Ed25519PublicKey:
    raw = b""
    with contextlib.suppress(ValueError, binascii.Error):
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if len(raw) != 32:
        raise typer.BadParameter("a base64url Ed25519 public key", param_hint="--audit-key")
    return Ed25519PublicKey.from_public_bytes(raw)


def check_event_signature(entry: bytes, keys: list[Ed25519PublicKey]) -> None:
    """Check that an entry's event is signed by one of the emitter ``keys``.

    Raises:
        UntrustedLogData: ``CPN-LOG-006`` when none of them signed it.
    """
    leaf = parse_leaf(entry)
    message = ledger.AUDIT_CONTEXT + leaf.signed_bytes()
    for key in keys:
        try:
            key.verify(leaf.signature, message)
        except InvalidSignature:
            continue
        return
    raise error(
        codes.LOG_UNTRUSTED, f"event {leaf.event.get('id')!r} is not signed by an --audit-key"
    )


def _leaf_hash(text: str) -> bytes:
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != ledger.HASH_SIZE:
        raise typer.BadParameter("a leaf hash is 64 hex digits", param_hint="--leaf-hash")
    return raw


def _summary(result: VerifyResult) -> dict[str, Any]:
    cp = result.checkpoint
    previous = None if result.previous is None else result.previous.size
    return {"origin": cp.origin, "size": cp.size, "root": b64(cp.root_hash), "previous": previous}


def _start(
    keys: list[str], origin: str | None, state: str | None
) -> tuple[list[Verifier], str, TrustState | None]:
    verifiers = _verifiers(keys)
    origin = origin or verifiers[0].name
    trusted = TrustState.load(state) if state else None
    if trusted is not None and trusted.origin != origin:
        raise typer.BadParameter(
            f"the state is for origin {trusted.origin!r}, not {origin!r}", param_hint="--state"
        )
    return verifiers, origin, trusted


def _report(out: Output, result: VerifyResult, state: str | None) -> None:
    for check in result.checks:
        out.ok(check)
    if state is None:
        out.warn("consistency NOT checked with an earlier checkpoint (no --state)")
    elif result.previous is None:
        out.warn(f"no trusted checkpoint in {state}: trusting this one on first use")
    if state is not None and result.grew:
        result.state.save(state)


@ledger_app.command(epilog=EPILOG)
def verify(
    keys: KeysOpt,
    url: UrlOpt = None,
    tiles: TilesOpt = None,
    origin: OriginOpt = None,
    state: StateOpt = None,
    index: Annotated[
        list[int] | None,
        typer.Option("--index", metavar="N", min=0, help="Check the entry at index N; repeat."),
    ] = None,
    leaf_hash: Annotated[
        list[str] | None,
        typer.Option("--leaf-hash", metavar="HEX", help="Check this leaf hash is in the log."),
    ] = None,
    entry: Annotated[
        list[str] | None,
        typer.Option("--entry", metavar="FILE", help="Check this entry (raw bytes) is in the log."),
    ] = None,
    api_key: ReadKeyOpt = None,
    audit_key: Annotated[
        list[str] | None,
        typer.Option(
            "--audit-key",
            metavar="KEY",
            help="An emitter's audit key (base64url Ed25519, as GET /v1/audit/key's x); "
            "every --entry's event must carry a signature that verifies with one. Repeat.",
        ),
    ] = None,
    witness_quorum: Annotated[
        int,
        typer.Option(
            "--witness-quorum",
            min=0,
            help="Require cosignatures by this many of the witness keys given with --key.",
        ),
    ] = 0,
    json_: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Verify the log's checkpoint, its consistency with --state, and inclusion of entries.

    Every proof is recomputed from the log's hash tiles and checked against the signed root:
    the server is only asked where a leaf is.

    \b
    Example:
      coupon ledger verify --url https://authority.example --key "$LOG_VKEY" \\
        --state ledger-state.json --entry 42.json
    """
    out = setup(json_=json_, verbose=verbose)
    verifiers, origin, trusted = _start(keys, origin, state)
    wanted = [_leaf_hash(h) for h in leaf_hash or []]
    entries = [read_bytes(f, what="entry") for f in entry or []]
    if audit_key:
        emitters = [_audit_key(k) for k in audit_key]
        for data in entries:
            check_event_signature(data, emitters)
        if entries:
            out.ok(f"{len(entries)} entries carry a valid emitter signature")
    wanted += [ledger.hash_leaf(data) for data in entries]
    with _opened(url, tiles, api_key) as source:
        result = verify_log(
            source, verifiers, origin=origin, state=trusted, witness_quorum=witness_quorum
        )
        _report(out, result, state)
        cp = result.checkpoint
        items = [(i, ledger.hash_leaf(entry_at(source, i, cp.size))) for i in index or []]
        items += [(locate_leaf(source, h, cp.size), h) for h in wanted]
        included = []
        for i, h in items:
            proof = prove_inclusion(source, cp, h, i)
            out.ok(f"leaf {i} ({h.hex()[:16]}...) is in the log of size {cp.size}")
            included.append({"index": i, "leaf_hash": h.hex(), "proof": [b64(p) for p in proof]})
    if out.json:
        out.emit({"ok": True, **_summary(result), "checks": result.checks, "included": included})
    else:
        out.data(_line(cp))


@ledger_app.command(epilog=EPILOG)
def monitor(
    keys: KeysOpt,
    url: UrlOpt = None,
    tiles: TilesOpt = None,
    origin: OriginOpt = None,
    state: StateOpt = None,
    interval: Annotated[
        float, typer.Option("--interval", metavar="SECONDS", min=0, help="Time between rounds.")
    ] = 60.0,
    count: Annotated[
        int, typer.Option("--count", metavar="N", min=0, help="Stop after N rounds (0: never).")
    ] = 0,
    json_: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Verify the log again every --interval seconds; print each new checkpoint.

    One line per new checkpoint on stdout ("ORIGIN SIZE ROOT", or one JSON object a line
    with --json). Stops with exit 1 at the first inconsistency (rollback, fork, bad
    signature). A round that cannot reach the log is a warning, except the last one.

    \b
    Example:
      coupon ledger monitor --url https://authority.example --key "$LOG_VKEY" \\
        --state ledger-state.json --interval 300
    """
    out = setup(json_=json_, verbose=verbose)
    verifiers, origin, trusted = _start(keys, origin, state)
    if state is None:
        out.warn("consistency checked only within this run (no --state)")
    elif trusted is None:
        out.warn(f"no trusted checkpoint in {state}: trusting the first one on first use")
    rounds = 0
    with _opened(url, tiles, None) as source:
        while True:
            rounds += 1
            last = bool(count) and rounds >= count
            try:
                result = verify_log(source, verifiers, origin=origin, state=trusted)
            except EnvironmentProblem as exc:
                if last:
                    raise
                out.warn(f"round {rounds}: {exc}")
            else:
                if result.grew:
                    if state is not None:
                        result.state.save(state)
                    doc = _summary(result)
                    out.data(_json_line(doc) if out.json else _line(result.checkpoint))
                trusted = result.state
            if last:
                return
            time.sleep(interval)


def _line(cp: Checkpoint) -> str:
    return f"{cp.origin} {cp.size} {b64(cp.root_hash)}"


def _json_line(doc: dict[str, Any]) -> str:
    return json.dumps(doc, separators=(",", ":"))


def _read_checkpoint(
    source: TileSource, keys: list[str] | None, out: Output
) -> tuple[bytes, Checkpoint]:
    raw = source.checkpoint()
    if keys:
        verifiers = _verifiers(keys)
        cp, _, sigs = ledger.open_checkpoint(raw, verifiers)
        out.ok(f"checkpoint signed by {', '.join(s.name for s in sigs)}")
    else:
        cp = ledger.parse_checkpoint(ledger.parse_note(raw).text)
        out.warn("checkpoint signature NOT checked (no --key)")
    return raw, cp


@ledger_app.command(epilog=EPILOG)
def checkpoint(
    url: UrlOpt = None,
    tiles: TilesOpt = None,
    keys: OptionalKeysOpt = None,
    json_: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Print the log's latest signed checkpoint (verified if --key is given).

    \b
    Example:
      coupon ledger checkpoint --url https://authority.example > checkpoint.txt
    """
    out = setup(json_=json_, verbose=verbose)
    with _opened(url, tiles, None) as source:
        raw, cp = _read_checkpoint(source, keys, out)
    note = raw.decode("utf-8")
    if out.json:
        root = b64(cp.root_hash)
        out.emit({"origin": cp.origin, "size": cp.size, "root": root, "checkpoint": note})
    else:
        typer.echo(note, nl=False)


@ledger_app.command(epilog=EPILOG)
def key(url: UrlOpt = None, json_: JsonOpt = False, verbose: VerboseOpt = False) -> None:
    """Print the log's verifier keys (vkeys), one a line; --json: the whole document.

    Fetching a key is not trusting it: compare it with one obtained out of band.

    \b
    Example:
      coupon ledger key --url https://authority.example
    """
    out = setup(json_=json_, verbose=verbose)
    source = HttpTileSource(_base(url))
    try:
        doc = source.get_json("/key")
    finally:
        source.close()
    try:
        vkeys = [str(k["vkey"]) for k in doc["keys"]]
    except (KeyError, TypeError):
        raise EnvironmentProblem("GET /v1/ledger/key: not a key document") from None
    if out.json:
        out.emit(doc)
    else:
        for vkey in vkeys:
            out.data(vkey)
