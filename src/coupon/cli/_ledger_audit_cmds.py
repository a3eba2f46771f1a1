"""``coupon ledger search`` and ``coupon ledger mirror``: what an auditor reads and copies."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from coupon import codes, ledger
from coupon.errors import error
from coupon.ledger import TILE_WIDTH, TileRef

from ._app import EPILOG, EnvironmentProblem, JsonOpt, VerboseOpt, setup
from ._ledger_client import (
    DirTileSource,
    HttpTileSource,
    b64,
    check_root,
    fetch_tiles,
    write_atomic,
)
from ._ledger_cmds import (
    OptionalKeysOpt,
    _base,
    _inert,
    _line,
    _opened,
    _read_checkpoint,
    ledger_app,
)
from ._remote import UrlOpt, _credential

__all__ = ["mirror", "search"]


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
