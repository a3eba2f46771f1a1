"""The Ledger's HTTP API (the auditor API) under ``/v1/ledger``.

Public: the checkpoint, the key, proofs and hash tiles (hashes only: they reveal nothing
but the shape of the log). Auditors (role ``auditor`` or ``admin``): entries, entry bundles
and audit search. Emitters (role ``emitter``): appends. Admins: erasure, key rotation.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from coupon import codes
from coupon.authority._auth import CallerContext, Principal, authenticate, require_role
from coupon.errors import CouponError, InvalidRequest, MalformedLogData, NotFound
from coupon.ledger import ENTRIES, HASH_SIZE, parse_tile_path
from coupon.storage.ledger_sql import CheckpointRow, EntryRow, SearchFilter

from ._entries import Submission, parse_leaf, unb64url
from ._service import Ledger

__all__ = ["Caller", "LedgerDep", "ledger_router"]

ledger_router = APIRouter(prefix="/v1/ledger", tags=["ledger"])


async def _ledger(request: Request) -> Ledger:
    ledger: Ledger | None = getattr(request.app.state, "ledger", None)
    if ledger is None:
        raise NotFound(codes.NOT_FOUND, "this server runs no ledger")
    return ledger


async def _caller(request: Request) -> Principal:
    caller = CallerContext.from_scope(request.scope, request.headers)
    return await authenticate(request.app.state.authority.rt.authenticators, caller)


LedgerDep = Annotated[Ledger, Depends(_ledger)]
Caller = Annotated[Principal, Depends(_caller)]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _leaf_hash(text: str) -> bytes:
    try:
        raw = (
            bytes.fromhex(text)
            if len(text) == 2 * HASH_SIZE
            else base64.b64decode(text, validate=True)
        )
    except (ValueError, binascii.Error):
        raw = b""
    if len(raw) != HASH_SIZE:
        raise MalformedLogData(codes.LOG_PROOF_FORMAT, "leaf_hash is 32 bytes in hex or base64")
    return raw


async def _tree_size(ledger: Ledger, given: int | None) -> int:
    if given is not None:
        return given
    return (await ledger.checkpoint()).size


def _checkpoint_doc(row: CheckpointRow) -> dict[str, Any]:
    return {
        "seq": row.seq,
        "size": row.size,
        "root_hash": _b64(row.root_hash),
        "published_ms": row.published_ms,
        "note": row.note,
    }


# -- public: checkpoint, key, proofs, tiles ------------------------------------------------------


@ledger_router.get("/checkpoint", response_class=PlainTextResponse)
async def checkpoint(ledger: LedgerDep) -> Response:
    """The newest checkpoint: a C2SP signed note with the witnesses' cosignatures attached."""
    row = await ledger.checkpoint()
    return Response(
        row.note + "".join(row.cosignatures),
        media_type="text/plain; charset=utf-8",
        headers={"Cache-Control": "no-store"},
    )


@ledger_router.get("/checkpoints")
async def checkpoints(
    ledger: LedgerDep,
    after: Annotated[int, Query(ge=0, le=2**62, description="Sequence to continue after.")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    since: Annotated[
        int | None, Query(ge=0, le=2**62, description="Published at or after (ms).")
    ] = None,
    until: Annotated[
        int | None, Query(ge=0, le=2**62, description="Published before (ms).")
    ] = None,
    min_size: Annotated[int | None, Query(ge=0, le=2**62)] = None,
    max_size: Annotated[int | None, Query(ge=0, le=2**62)] = None,
) -> dict[str, Any]:
    """The checkpoint history (every one the log signed), oldest first."""
    rows = await ledger.store.checkpoints(
        after=after,
        limit=limit,
        since_ms=since,
        until_ms=until,
        min_size=min_size,
        max_size=max_size,
    )
    return {
        "checkpoints": [_checkpoint_doc(r) for r in rows],
        "next": rows[-1].seq if len(rows) == limit else None,
    }


@ledger_router.get("/key")
async def key(ledger: LedgerDep) -> dict[str, Any]:
    """The log's verifier keys (C2SP vkeys); during a rotation, old and new both sign."""
    now_ms = int(time.time() * 1000)
    return {
        "origin": ledger.config.origin,
        "keys": [
            {
                "vkey": k.vkey,
                "key_id": k.key_id,
                "created_ms": k.created_ms,
                "retire_ms": k.retire_ms,
                "active": k.active(now_ms),
            }
            for k in ledger.keys.describe()
        ],
    }


@ledger_router.get("/proof/inclusion")
async def inclusion_proof(
    ledger: LedgerDep,
    index: Annotated[int | None, Query(ge=0, le=2**62)] = None,
    leaf_hash: Annotated[str | None, Query(max_length=100)] = None,
    tree_size: Annotated[
        int | None, Query(ge=1, le=2**62, description="Default: the newest checkpoint.")
    ] = None,
) -> dict[str, Any]:
    """An inclusion proof, by entry index or by leaf hash (hex or base64)."""
    if (index is None) == (leaf_hash is None):
        raise InvalidRequest(codes.REQUEST_BODY, "give exactly one of index and leaf_hash")
    size = await _tree_size(ledger, tree_size)
    if leaf_hash is not None:
        index = await ledger.find(_leaf_hash(leaf_hash))
    assert index is not None
    proof = await ledger.inclusion_proof(index, size)
    hashes = await ledger.entries(index, index + 1)
    return {
        "index": index,
        "tree_size": size,
        "leaf_hash": hashes[0].leaf_hash.hex() if hashes else None,
        "proof": [_b64(h) for h in proof],
    }


@ledger_router.get("/proof/consistency")
async def consistency_proof(
    ledger: LedgerDep,
    first: Annotated[int, Query(ge=0, le=2**62)],
    second: Annotated[
        int | None, Query(ge=1, le=2**62, description="Default: the newest checkpoint.")
    ] = None,
) -> dict[str, Any]:
    """A consistency proof between two tree sizes."""
    size = await _tree_size(ledger, second)
    proof = await ledger.consistency_proof(first, size)
    return {"first": first, "second": size, "proof": [_b64(h) for h in proof]}


@ledger_router.get("/tile/{path:path}", response_class=Response)
async def tile(path: str, ledger: LedgerDep, request: Request) -> Response:
    """C2SP tlog-tiles: hash tiles (public) and entry bundles (auditors)."""
    ref = parse_tile_path("tile/" + path)
    if ref.level == ENTRIES:
        require_role(await _caller(request), "auditor")
    data = await ledger.tile(ref)
    return Response(
        data,
        media_type="application/octet-stream",
        headers={"Cache-Control": "public, max-age=31536000, immutable"},
    )


# -- auditors: entries and search ----------------------------------------------------------------


def _entry_doc(row: EntryRow) -> dict[str, Any]:
    return {"index": row.idx, "leaf_hash": row.leaf_hash.hex(), "entry": row.data.decode()}


@ledger_router.get("/entries")
async def entries(
    ledger: LedgerDep,
    caller: Caller,
    start: Annotated[int, Query(ge=0, le=2**62)] = 0,
    end: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> dict[str, Any]:
    """Entries ``[start, end)`` as stored (roles: auditor, admin); at most 1000."""
    require_role(caller, "auditor")
    rows = await ledger.entries(start, end if end is not None else start + 100)
    return {"entries": [_entry_doc(r) for r in rows]}


@ledger_router.get("/search")
async def search(
    ledger: LedgerDep,
    caller: Caller,
    actor: Annotated[str | None, Query(max_length=256, description="Who.")] = None,
    action: Annotated[str | None, Query(max_length=64, description="Did what.")] = None,
    target: Annotated[str | None, Query(max_length=256, description="To what (substring).")] = None,
    subject: Annotated[str | None, Query(max_length=256, description="About whom.")] = None,
    result: Annotated[str | None, Query(max_length=16)] = None,
    service: Annotated[str | None, Query(max_length=64)] = None,
    code: Annotated[str | None, Query(max_length=32, description="Why (error code).")] = None,
    trace_id: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[int | None, Query(ge=0, le=2**62, description="When: from (ms).")] = None,
    until: Annotated[int | None, Query(ge=0, le=2**62, description="When: before (ms).")] = None,
    after: Annotated[int, Query(ge=-1, le=2**62, description="Continue after this index.")] = -1,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    personal: Annotated[bool, Query(description="Decrypt personal data (admin).")] = False,
) -> dict[str, Any]:
    """Audit search (roles: auditor, admin): each hit with its inclusion proof in the newest
    checkpoint, so the answer can be checked without trusting this server."""
    require_role(caller, "auditor")
    if personal:
        require_role(caller, "admin")
    where = SearchFilter(
        actor=actor,
        action=action,
        result=result,
        service=service,
        target=target,
        subject_ref=None if subject is None else ledger.vault.ref(subject),
        trace_id=trace_id,
        code=code,
        since_ms=since,
        until_ms=until,
    )
    rows = await ledger.search(where, after=after, limit=limit)
    latest = await ledger.checkpoint()
    hits = []
    for row in rows:
        hit = _entry_doc(row)
        hit["event"] = parse_leaf(row.data).event
        if row.idx < latest.size:
            hit["tree_size"] = latest.size
            hit["proof"] = [_b64(h) for h in await ledger.inclusion_proof(row.idx, latest.size)]
        else:
            hit["tree_size"] = None  # in the log, not yet in a checkpoint
            hit["proof"] = None
        if personal and row.subject_ref is not None:
            try:
                hit["personal"] = json.loads(await ledger.personal_data(row))
            except CouponError as exc:
                hit["personal"] = {"error": exc.code.code}
        hits.append(hit)
    return {
        "hits": hits,
        "next": rows[-1].idx if len(rows) == limit else None,
        "checkpoint": latest.note,
    }


# -- emitters and admins -------------------------------------------------------------------------


class SubmittedEvent(BaseModel):
    """A signed audit event from another service."""

    model_config = ConfigDict(extra="forbid")
    event: str = Field(
        min_length=2, max_length=16_384, description="The RFC 8785 JSON that was signed."
    )
    signature: str = Field(
        min_length=10, max_length=200, description="base64url Ed25519 signature."
    )
    kid: str = Field(min_length=1, max_length=128)
    personal: str | None = Field(None, max_length=16_384)


class AppendRequest(BaseModel):
    """Up to 1000 events, each acknowledged once committed."""

    model_config = ConfigDict(extra="forbid")
    entries: list[SubmittedEvent] = Field(min_length=1, max_length=1000)


@ledger_router.post("/entries", status_code=201)
async def append(
    body: AppendRequest,
    ledger: LedgerDep,
    caller: Caller,
    wait: Annotated[
        bool,
        Query(description="Also wait (up to 5 s) for a checkpoint, and return the proofs."),
    ] = False,
) -> dict[str, Any]:
    """Append signed events (role: emitter); answered after they are durably committed.

    Each receipt names the entry's index, leaf hash and the tree size it is in; with
    ``wait=true`` it also carries the inclusion proof in the signed checkpoint returned.
    """
    require_role(caller, "emitter")
    receipts = await asyncio.gather(
        *(
            ledger.append(
                Submission(
                    e.event.encode(),
                    unb64url(e.signature),
                    e.kid,
                    None if e.personal is None else e.personal.encode(),
                )
            )
            for e in body.entries
        )
    )
    docs: list[dict[str, Any]] = [
        {
            "index": r.index,
            "leaf_hash": r.leaf_hash.hex(),
            "tree_size": r.tree_size,
            "duplicate": r.duplicate,
        }
        for r in receipts
    ]
    answer: dict[str, Any] = {"receipts": docs}
    if wait:
        row = await ledger.wait_for_checkpoint(max(r.tree_size for r in receipts), timeout=5.0)
        if row is not None:
            answer["checkpoint"] = row.note
            for doc in docs:
                proof = await ledger.inclusion_proof(doc["index"], row.size)
                doc["proof"] = [_b64(h) for h in proof]
    return answer
