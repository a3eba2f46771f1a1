"""``coupon ledger ...``: audit the Ledger from outside, trusting only its signing keys.

The logic lives in :mod:`._ledger_client`; these commands parse options and print.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from coupon import codes, ledger
from coupon.errors import error
from coupon.ledger import TILE_WIDTH, Checkpoint, TileRef, Verifier

from ._app import EPILOG, EnvironmentProblem, JsonOpt, Output, VerboseOpt, app, setup
from ._io import read_bytes
from ._ledger_client import (
    DirTileSource,
    HttpTileSource,
    TileSource,
    TrustState,
    VerifyResult,
    b64,
    check_root,
    entry_at,
    fetch_tiles,
    locate_leaf,
    prove_inclusion,
    verify_log,
    write_atomic,
)
from ._remote import DEFAULT_URL, UrlOpt, _credential

__all__ = ["checkpoint", "key", "ledger_app", "mirror", "monitor", "search", "verify"]

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
    wanted += [ledger.hash_leaf(read_bytes(f, what="entry")) for f in entry or []]
    with _opened(url, tiles, api_key) as source:
        result = verify_log(source, verifiers, origin=origin, state=trusted)
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


def _when(ms: object) -> str:
    if not isinstance(ms, int) or isinstance(ms, bool):
        return "?"
    try:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"
    except (OverflowError, OSError, ValueError):
        return str(ms)


def _hit_line(hit: dict[str, Any]) -> str:
    event = hit.get("event")
    if not isinstance(event, dict):
        event = {}
    actor = event.get("actor")
    target = event.get("target")
    actor_id = actor.get("id", "") if isinstance(actor, dict) else ""
    target_text = (
        " ".join(f"{k}={target[k]}" for k in sorted(target)) if isinstance(target, dict) else ""
    )
    fields = [
        hit.get("index"),
        _when(event.get("time")),
        event.get("action", ""),
        event.get("result", ""),
        actor_id,
        target_text,
    ]
    return "\t".join(_inert(f) for f in fields)


@ledger_app.command(epilog=EPILOG)
def search(
    url: UrlOpt = None,
    api_key: Annotated[
        str | None,
        typer.Option("--api-key", help="An auditor's API key [$COUPON_API_KEY; var/admin.key]."),
    ] = None,
    action: Annotated[str | None, typer.Option(help="Only this action.")] = None,
    actor: Annotated[str | None, typer.Option(help="Only this actor id.")] = None,
    subject: Annotated[str | None, typer.Option(help="Only events about this subject.")] = None,
    target: Annotated[str | None, typer.Option(help="Only this target.")] = None,
    result: Annotated[str | None, typer.Option(help="Only this result (allow, deny, ...).")] = None,
    since: Annotated[
        int | None, typer.Option(metavar="MS", help="From this time (ms since the epoch).")
    ] = None,
    until: Annotated[
        int | None, typer.Option(metavar="MS", help="Before this time (ms since the epoch).")
    ] = None,
    after: Annotated[
        int | None, typer.Option(metavar="INDEX", min=0, help="Hits after this log index.")
    ] = None,
    limit: Annotated[int | None, typer.Option(metavar="N", min=1, help="At most N hits.")] = None,
    entries_dir: Annotated[
        str | None,
        typer.Option(
            "--entries-dir", metavar="DIR", help="Also write each hit's entry to DIR/<index>.json."
        ),
    ] = None,
    json_: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Search the log's entries (auditor API key); one hit a line.

    Prints INDEX, TIME, ACTION, RESULT, ACTOR, TARGET separated by tabs. The hits are the
    server's answer, NOT verified: give each entry to `coupon ledger verify --entry`.

    \b
    Example:
      coupon ledger search --url https://authority.example --action coupon.revoke \\
        --since 1795400000000 --entries-dir hits/
    """
    out = setup(json_=json_, verbose=verbose)
    filters = {
        "action": action,
        "actor": actor,
        "subject": subject,
        "target": target,
        "result": result,
        "since": since,
        "until": until,
        "after": after,
        "limit": limit,
    }
    params = {k: v for k, v in filters.items() if v is not None}
    source = HttpTileSource(_base(url), api_key=_credential(api_key))
    try:
        doc = source.get_json("/search", params=params)
    finally:
        source.close()
    hits = doc.get("hits") if isinstance(doc, dict) else None
    if not isinstance(hits, list) or not all(isinstance(h, dict) for h in hits):
        raise EnvironmentProblem("GET /v1/ledger/search: not a search document")
    if entries_dir is not None:
        for hit in hits:
            index, entry = hit.get("index"), hit.get("entry")
            if not isinstance(index, int) or index < 0 or not isinstance(entry, str):
                raise EnvironmentProblem("GET /v1/ledger/search: a hit has no index or entry")
            write_atomic(Path(entries_dir) / f"{index}.json", entry.encode("utf-8"), mode=0o644)
    if out.json:
        out.emit(doc)
        return
    for hit in hits:
        out.data(_hit_line(hit))
    if doc.get("next") is not None:
        out.note(f"more hits: --after {_inert(doc['next'])}")


@ledger_app.command(epilog=EPILOG)
def mirror(
    out_dir: Annotated[
        str, typer.Option("--out", metavar="DIR", help="The mirror directory (created).")
    ],
    url: UrlOpt = None,
    keys: OptionalKeysOpt = None,
    api_key: Annotated[
        str | None,
        typer.Option("--api-key", help="An auditor's API key: also mirror the entry bundles."),
    ] = None,
    json_: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Copy the log into a static tlog-tiles directory (checkpoint, tiles, entry bundles).

    Full tiles already in DIR are kept (they never change); the tiles must hash to the
    checkpoint's root, and each entry bundle to its level-0 tile, before the checkpoint is
    written, last. `coupon ledger verify --tiles DIR` then audits the copy offline.

    \b
    Example:
      coupon ledger mirror --url https://authority.example --out mirror/ --key "$LOG_VKEY"
    """
    out = setup(json_=json_, verbose=verbose)
    target = Path(out_dir)
    local = DirTileSource(target)
    written = kept = bundles = 0
    with _opened(url, None, api_key) as source:
        raw, cp = _read_checkpoint(source, keys, out)
        for ref in _hash_tiles(cp.size):
            if ref.width == TILE_WIDTH and (target / ref.path()).is_file():
                kept += 1
                continue
            data = fetch_tiles(source, [ref])[ref.key]
            write_atomic(target / ref.path(), data, mode=0o644)
            written += 1
        check_root(local, cp)
        if api_key:
            for i in range(-(-cp.size // TILE_WIDTH)):
                ref = TileRef(ledger.ENTRIES, i, ledger.tile_width(0, i, cp.size))
                if ref.width == TILE_WIDTH and (target / ref.path()).is_file():
                    continue
                data = source.read(ref)
                entries = ledger.parse_bundle(data, count=ref.width)
                tile = fetch_tiles(local, [TileRef(0, i, ref.width)])[0, i]
                if b"".join(map(ledger.hash_leaf, entries)) != tile:
                    raise error(codes.LOG_TILE, f"entry bundle {i} does not match tile 0/{i}")
                write_atomic(target / ref.path(), data, mode=0o644)
                bundles += 1
    write_atomic(target / "checkpoint", raw, mode=0o644)
    out.ok(f"mirrored {cp.origin} size {cp.size}: {written} tiles written, {kept} kept")
    if out.json:
        out.emit(
            {
                "origin": cp.origin,
                "size": cp.size,
                "root": b64(cp.root_hash),
                "out": out_dir,
                "tiles_written": written,
                "tiles_kept": kept,
                "bundles_written": bundles,
            }
        )
    else:
        out.data(_line(cp))


def _hash_tiles(size: int) -> Iterator[TileRef]:
    """Every hash tile of the tree of ``size``, level by level."""
    level = 0
    while size >> (ledger.TILE_HEIGHT * level):
        row = size >> (ledger.TILE_HEIGHT * level)
        for index in range(-(-row // TILE_WIDTH)):
            yield TileRef(level, index, ledger.tile_width(level, index, size))
        level += 1
