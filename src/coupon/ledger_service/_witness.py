"""A C2SP tlog-witness (https://c2sp.org/tlog-witness) and the log's client for it.

- :class:`WitnessState`: the latest cosigned (size, root, note) per origin, in SQLite;
- :class:`Witness`: ``add-checkpoint`` over bytes, HTTP-free; :func:`witness_app` serves it;
- :class:`WitnessClient` and :class:`LogWitnessing`: the log side, which sends each new
  checkpoint to its witnesses and stores the cosignature lines that verify.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import sqlite3
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Final, NamedTuple

import httpx
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from coupon import codes
from coupon.errors import (
    Conflict,
    CouponError,
    DependencyUnavailable,
    InconsistentLog,
    MalformedLogData,
    error,
)
from coupon.ledger import (
    MAX_TREE_SIZE,
    CosignatureSigner,
    CosignatureVerifier,
    Ed25519Verifier,
    Verifier,
    parse_checkpoint,
    parse_note,
    sign_note,
    verify_consistency,
    verify_note,
)
from coupon.ledger._note import b64decode_canonical
from coupon.observability import get_logger
from coupon.storage.ledger_sql import CheckpointRow

__all__ = [
    "LogWitnessing",
    "Witness",
    "WitnessClient",
    "WitnessConflict",
    "WitnessState",
    "WitnessedCheckpoint",
    "serve_witness",
    "witness_app",
]

MAX_BODY: Final = 64 * 1024
MAX_PROOF: Final = 63
SIZE_TYPE: Final = "text/x.tlog.size"
_SIZE: Final = re.compile(rb"0|[1-9][0-9]{0,18}")
_log = get_logger("coupon.ledger.witness")
_REFUSED: Final = (codes.LOG_PROOF_FORMAT, codes.LOG_UNTRUSTED, codes.LOG_ORIGIN, codes.LOG_PROOF)
_REFUSALS: Final = {c.status: c for c in (*_REFUSED, codes.LOG_FORK)}  # by the witness's status


class WitnessConflict(Conflict):
    """The old size is not the size of the witness's latest cosigned checkpoint (``.size``)."""

    def __init__(self, size: int, reason: str | None = None) -> None:
        super().__init__(codes.LOG_WITNESS_SIZE, reason or f"the witness is at size {size}")
        self.size = size


def _bad(reason: str) -> MalformedLogData:
    return MalformedLogData(codes.LOG_PROOF_FORMAT, reason)


class WitnessedCheckpoint(NamedTuple):
    """The latest checkpoint a witness cosigned for one origin."""

    size: int
    root_hash: bytes
    note: str


@contextlib.contextmanager
def _storage(what: str) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        raise error(codes.UNAVAILABLE_STORAGE, f"{what}: {type(exc).__name__}") from exc


class WitnessState:
    """``origin -> (size, root hash, note)`` in SQLite, updated by compare-and-set.

    An update runs in ``BEGIN IMMEDIATE``: no two requests (threads or processes) both check
    the same old state and then both write."""

    def __init__(self, path: Path | str, *, timeout: float = 10.0) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            str(path), timeout=timeout, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS witness_checkpoints (origin TEXT PRIMARY KEY,"
            " size INTEGER NOT NULL, root_hash BLOB NOT NULL, note TEXT NOT NULL)"
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def latest(self, origin: str) -> WitnessedCheckpoint | None:
        """The latest cosigned checkpoint of ``origin``, or None."""
        with self._lock, _storage("witness state read"):
            return self._read(origin)

    def _read(self, origin: str) -> WitnessedCheckpoint | None:
        row = self._db.execute(
            "SELECT size, root_hash, note FROM witness_checkpoints WHERE origin = ?", (origin,)
        ).fetchone()
        return None if row is None else WitnessedCheckpoint(*row)

    def update(
        self,
        origin: str,
        decide: Callable[[WitnessedCheckpoint | None], WitnessedCheckpoint | None],
    ) -> None:
        """Read, ``decide`` (return the new state, None to keep it, or raise), write: atomically."""
        with self._lock, _storage("witness state update"):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                new = decide(self._read(origin))
                if new is not None:
                    sql = "INSERT OR REPLACE INTO witness_checkpoints VALUES (?, ?, ?, ?)"
                    self._db.execute(sql, (origin, *new))
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")


def _parse_body(body: bytes) -> tuple[int, list[bytes], bytes]:
    """Split an add-checkpoint body into (old size, proof hashes, checkpoint note)."""
    if len(body) > MAX_BODY:
        raise _bad(f"request body larger than {MAX_BODY} bytes")
    head, sep, rest = body.partition(b"\n")
    if not sep or head[:4] != b"old " or not _SIZE.fullmatch(head[4:]):
        raise _bad("first line is not 'old <size>'")
    if (old := int(head[4:])) > MAX_TREE_SIZE:
        raise _bad("old size out of range")
    proof: list[bytes] = []
    while True:
        line, sep, rest = rest.partition(b"\n")
        if not sep:
            raise _bad("no empty line before the checkpoint")
        if not line:
            break
        if len(proof) == MAX_PROOF:
            raise _bad(f"more than {MAX_PROOF} proof lines")
        digest = b64decode_canonical(line.decode("latin-1"))
        if digest is None or len(digest) != 32:
            raise _bad("proof line is not canonical base64 of 32 bytes")
        proof.append(digest)
    return old, proof, rest


class Witness:
    """Cosigns checkpoints of known logs that extend what it cosigned before (HTTP-free)."""

    def __init__(
        self,
        name_signer: CosignatureSigner,
        logs: Mapping[str, Sequence[Verifier]],
        state: WitnessState,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.signer = name_signer
        self._logs = {origin: list(keys) for origin, keys in logs.items()}
        self._state = state
        self._clock = clock

    def add_checkpoint(self, body: bytes) -> bytes:
        """Check an add-checkpoint body; return the cosignature line(s) or raise.

        Raises:
            MalformedLogData: (400) the body, note or checkpoint does not parse, or old > size.
            NotFound: (``LOG_ORIGIN``, 404) no log with this origin is configured.
            UntrustedLogData: (403) no trusted log key signed the checkpoint.
            WitnessConflict: (409) the old size is not the latest cosigned size (``.size``).
            InconsistentLog: (``LOG_FORK``, 409) same size as cosigned, another root hash.
            ProofMismatch: (422) the consistency proof does not verify.
        """
        old, proof, raw_note = _parse_body(body)
        note = parse_note(raw_note)
        checkpoint = parse_checkpoint(note.text)
        keys = self._logs.get(checkpoint.origin)
        if keys is None:
            raise error(codes.LOG_ORIGIN, f"unknown origin {checkpoint.origin!r}")
        verify_note(note, keys)
        if old > checkpoint.size:
            raise _bad(f"old size {old} is larger than the checkpoint size {checkpoint.size}")

        def decide(latest: WitnessedCheckpoint | None) -> WitnessedCheckpoint | None:
            size, root, root_note = latest or (0, b"", "")
            if old != size:
                raise WitnessConflict(size, f"old size {old}, the witness is at {size}")
            same = old == checkpoint.size and latest is not None
            if same and root != checkpoint.root_hash:
                raise InconsistentLog(
                    codes.LOG_FORK,
                    f"size {old} was cosigned with another root hash",
                    evidence={"cosigned": root_note, "submitted": note.encode()},
                )
            if old in (0, checkpoint.size) and proof:
                raise error(codes.LOG_PROOF, "from size 0 or to the same size, no proof")
            if old not in (0, checkpoint.size):
                try:
                    verify_consistency(old, checkpoint.size, proof, root, checkpoint.root_hash)
                except MalformedLogData as exc:  # a proof of the wrong shape does not verify
                    raise error(codes.LOG_PROOF, exc.reason) from None
            if same:
                return None  # nothing new: cosign again, keep the stored note
            return WitnessedCheckpoint(checkpoint.size, checkpoint.root_hash, note.encode())

        self._state.update(checkpoint.origin, decide)
        cosigned = sign_note(note.text, self.signer.at(int(self._clock())))
        return "".join(sig.line() for sig in cosigned.signatures).encode("utf-8")


def witness_app(witness: Witness) -> Starlette:
    """The witness over HTTP: ``POST /add-checkpoint`` and ``GET /healthz``."""

    async def add_checkpoint(request: Request) -> Response:
        try:
            body = bytearray()
            async for chunk in request.stream():
                body += chunk
                if len(body) > MAX_BODY:
                    return PlainTextResponse("request body too large\n", status_code=413)
            lines = await run_in_threadpool(witness.add_checkpoint, bytes(body))
        except WitnessConflict as exc:
            _log.info("witness_conflict", code=exc.code.code, reason=exc.reason)
            headers = {"Content-Type": SIZE_TYPE}  # as is: media_type would add a charset
            return Response(f"{exc.size}\n", 409, headers=headers)
        except CouponError as exc:
            _log.info("witness_refused", code=exc.code.code, reason=exc.reason)
            text = f"{exc.code.code} {exc.code.title}\n"
            return PlainTextResponse(text, status_code=exc.code.status)
        except Exception:
            _log.exception("witness_internal_error")
            return PlainTextResponse("internal error\n", status_code=500)
        return Response(lines, media_type="text/plain; charset=utf-8")

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    return Starlette(
        routes=[
            Route("/add-checkpoint", add_checkpoint, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )


class WitnessClient:
    """Asks one witness to cosign; accepts only cosignature lines that its vkey verifies."""

    def __init__(self, url: str, vkey: str, *, client: httpx.AsyncClient) -> None:
        self.url = url.rstrip("/") + "/add-checkpoint"
        self.verifier = CosignatureVerifier.from_vkey(vkey)
        self.name = self.verifier.name
        self._client = client

    async def cosign(
        self, checkpoint_note: str, old_size: int, proof: list[bytes]
    ) -> tuple[str, ...]:
        """Send the checkpoint; return the cosignature lines that verify with the vkey.

        Raises :class:`WitnessConflict` (resend from its ``.size``), ``DependencyUnavailable``
        (unreachable or failing), or the CouponError of a refusal or of a bad cosignature.
        """
        note = parse_note(checkpoint_note)
        lines = "".join(base64.b64encode(h).decode("ascii") + "\n" for h in proof)
        body = f"old {old_size}\n{lines}\n{checkpoint_note}".encode()
        try:
            response = await self._client.post(self.url, content=body)
        except httpx.HTTPError as exc:
            raise error(codes.UNAVAILABLE_LEDGER, f"{self.name}: {exc!r}") from None
        status, content = response.status_code, response.content
        if status == 409 and response.headers.get("content-type", "").startswith(SIZE_TYPE):
            if not content.endswith(b"\n") or not _SIZE.fullmatch(content[:-1]):
                raise error(codes.LOG_UNTRUSTED, "witness sent a malformed size")
            raise WitnessConflict(int(content[:-1]))
        if status != 200 or len(content) > MAX_BODY:
            code = _REFUSALS.get(status, codes.UNAVAILABLE_LEDGER)
            raise error(code, f"witness {self.name} answered {status}")
        signed = parse_note(note.text + "\n" + content.decode("utf-8", "replace"))
        _, verified = verify_note(signed, [self.verifier])
        return tuple(sig.line() for sig in verified)


_OUTCOMES: Final = (
    (WitnessConflict, "conflict"),  # a second 409, or the witness is ahead of this checkpoint
    (DependencyUnavailable, "unavailable"),
    (CouponError, "refused"),  # a 4xx, or a cosignature that does not verify
)


class LogWitnessing:
    """The log's hook: sends each new checkpoint to every witness, stores cosignatures.

    Remembers per witness the size it last cosigned (0 at start); a 409 teaches the right
    old size and the request is sent once more. Errors are logged and counted, never raised:
    ``count(witness, outcome)`` with ``ok``, ``resync``, ``stale`` or one of ``_OUTCOMES``."""

    def __init__(
        self,
        witnesses: Sequence[WitnessClient],
        *,
        proof: Callable[[int, int], Awaitable[list[bytes]]],
        store: Callable[[int, str, str], Awaitable[None]],
        count: Callable[[str, str], None] = lambda witness, outcome: None,
    ) -> None:
        self.witnesses = list(witnesses)
        self._proof = proof
        self._store = store
        self._count = count
        self.sizes: dict[str, int] = {w.name: 0 for w in self.witnesses}
        self._locks: dict[str, asyncio.Lock] = {}

    async def cosign(self, row: CheckpointRow) -> None:
        """Ask every witness to cosign ``row``, concurrently."""
        await asyncio.gather(*(self._one(w, row) for w in self.witnesses))

    async def _proof_for(self, old: int, new: int) -> list[bytes]:
        return [] if old in (0, new) else await self._proof(old, new)

    async def _one(self, witness: WitnessClient, row: CheckpointRow) -> None:
        name, outcome = witness.name, "error"
        try:
            async with self._locks.setdefault(name, asyncio.Lock()):
                old = self.sizes.get(name, 0)
                if row.size < old:
                    outcome = "stale"
                    return
                try:
                    proof = await self._proof_for(old, row.size)
                    lines = await witness.cosign(row.note, old, proof)
                except WitnessConflict as exc:  # learn the witness's size, resend once
                    if exc.size > row.size:
                        raise
                    self._count(name, "resync")
                    proof = await self._proof_for(exc.size, row.size)
                    lines = await witness.cosign(row.note, exc.size, proof)
                self.sizes[name] = row.size
                for line in lines:
                    await self._store(row.seq, name, line)
                outcome = "ok"
        except Exception as exc:  # logged and counted, never raised: the log goes on
            outcome = next((o for kind, o in _OUTCOMES if isinstance(exc, kind)), "error")
            reason = exc.reason if isinstance(exc, CouponError) else repr(exc)
            bug = outcome == "error"
            _log.warning(
                "witness_failed", witness=name, outcome=outcome, reason=reason, exc_info=bug
            )
        finally:
            with contextlib.suppress(Exception):
                self._count(name, outcome)


def load_or_create_key(key_file: Path, name: str) -> CosignatureSigner:
    """The witness key in ``key_file`` (an skey); a new one, written with mode 0600, if absent."""
    try:
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        signer = CosignatureSigner.from_skey(key_file.read_text(encoding="ascii").strip())
        if signer.name != name:
            raise ValueError(f"the key in {key_file} is not named {name!r}") from None
        return signer
    signer = CosignatureSigner.generate(name)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(signer.skey() + "\n")
    return signer


def serve_witness(
    *, key_file: Path, name: str, log_vkeys: list[str], state_path: Path, host: str, port: int
) -> None:
    """Run a witness with uvicorn; the log of each vkey is the origin named by the key."""
    import uvicorn

    logs: dict[str, list[Verifier]] = {}
    for vkey in log_vkeys:
        verifier = Ed25519Verifier.from_vkey(vkey)  # a log signs notes with Ed25519
        logs.setdefault(verifier.name, []).append(verifier)
    signer = load_or_create_key(key_file, name)
    print(signer.verifier().vkey(), file=sys.stderr)
    state = WitnessState(state_path)
    try:
        uvicorn.run(witness_app(Witness(signer, logs, state)), host=host, port=port)
    finally:
        state.close()
