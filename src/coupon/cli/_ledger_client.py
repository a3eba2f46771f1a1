"""The Ledger auditor's client side: tile sources, the trust state, and what it verifies.

Independent of Typer. Nothing the server computes is trusted: the checkpoint is verified
with the auditor's keys, and every proof is recomputed here from hash tiles (c2sp.org/
tlog-tiles) and checked against a signed root. The server only ever says *where* a leaf is.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

from coupon import codes, ledger
from coupon.errors import InconsistentLog, ProofMismatch, error
from coupon.ledger import HASH_SIZE, TILE_WIDTH, Checkpoint, TileRef, Verifier

from ._app import EnvironmentProblem
from ._io import read_bytes

if TYPE_CHECKING:
    import httpx

__all__ = [
    "DirTileSource",
    "HttpTileSource",
    "TileSource",
    "TrustState",
    "VerifyResult",
    "check_root",
    "entry_at",
    "fetch_tiles",
    "locate_leaf",
    "prove_inclusion",
    "verify_log",
    "write_atomic",
]

PREFIX: Final = "/v1/ledger"
TILE_BYTES: Final = TILE_WIDTH * HASH_SIZE
#: The largest entry bundle: 256 entries of at most 2 + 65535 bytes.
MAX_BUNDLE: Final = TILE_WIDTH * (2 + 0xFFFF)
MAX_JSON: Final = 16 * 1024 * 1024


def b64(data: bytes) -> str:
    """Standard, padded base64 (the encoding of checkpoints and proofs)."""
    return base64.b64encode(data).decode("ascii")


def _limit(ref: TileRef) -> int:
    return MAX_BUNDLE if ref.level == ledger.ENTRIES else TILE_BYTES


def _cut(ref: TileRef, full: bytes) -> bytes:
    """The partial tile ``ref`` from the full tile that replaced it (its prefix)."""
    if ref.level == ledger.ENTRIES:
        entries = ledger.parse_bundle(full)
        return b"".join(len(e).to_bytes(2, "big") + e for e in entries[: ref.width])
    return full[: ref.width * HASH_SIZE] if len(full) == TILE_BYTES else full


class TileSource(Protocol):
    """Where a log's checkpoint and tiles come from: its server or a static mirror."""

    def checkpoint(self) -> bytes:
        """The latest signed checkpoint note."""

    def read(self, ref: TileRef) -> bytes:
        """The bytes of one tile or entry bundle, at ``ref.width``."""


class DirTileSource:
    """A static tlog-tiles directory: ``<dir>/checkpoint``, ``<dir>/tile/0/000``, ..."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def _read(self, name: str, limit: int) -> bytes:
        return read_bytes(self.path / name, what="mirror file", limit=limit)

    def checkpoint(self) -> bytes:
        """The file ``checkpoint``."""
        return self._read("checkpoint", ledger.MAX_NOTE_SIZE)

    def read(self, ref: TileRef) -> bytes:
        """The tile's file; a partial tile missing on disk is cut from the full one."""
        if ref.width < TILE_WIDTH and not (self.path / ref.path()).exists():
            full = TileRef(ref.level, ref.index)
            if (self.path / full.path()).exists():
                return _cut(ref, self._read(full.path(), _limit(ref)))
        return self._read(ref.path(), _limit(ref))


class HttpTileSource:
    """The Ledger's HTTP API under ``base_url`` (``GET {base}/v1/ledger/...``)."""

    def __init__(
        self, base_url: str, *, api_key: str | None = None, client: httpx.Client | None = None
    ) -> None:
        import httpx

        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self._client = client or httpx.Client(timeout=10.0, trust_env=False)

    def close(self) -> None:
        """Close the HTTP client."""
        self._client.close()

    def get(
        self, path: str, *, params: Mapping[str, Any] | None = None, limit: int = MAX_JSON
    ) -> bytes | None:
        """``GET {base}/v1/ledger{path}``: at most ``limit`` bytes of body; None for a 404.

        Raises:
            CouponError: the server answered with a problem document (not a 404).
            EnvironmentProblem: it cannot be reached, fails, or sends more than ``limit``.
        """
        import httpx

        url = f"{self.base_url}{PREFIX}{path}"
        headers = {"X-API-Key": self.api_key} if self.api_key else {}
        try:
            with self._client.stream("GET", url, params=params, headers=headers) as response:
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > limit:
                        raise EnvironmentProblem(f"GET {url}: more than {limit} bytes")
        except httpx.HTTPError as exc:
            raise EnvironmentProblem(f"cannot reach the Ledger at {self.base_url}: {exc}") from exc
        status = response.status_code
        if status == 404:
            return None
        if response.headers.get("content-type", "").startswith("application/problem+json"):
            try:
                doc = json.loads(body)
                code = codes.by_code(str(doc.get("code")))
            except (ValueError, KeyError, AttributeError):
                raise EnvironmentProblem(f"GET {url}: HTTP {status}") from None
            raise error(code, str(doc.get("detail", "")))
        if status >= 400:
            raise EnvironmentProblem(f"GET {url}: HTTP {status}")
        return bytes(body)

    def _found(self, path: str, *, params: Mapping[str, Any] | None = None, limit: int) -> bytes:
        if (body := self.get(path, params=params, limit=limit)) is None:
            raise EnvironmentProblem(f"GET {self.base_url}{PREFIX}{path}: HTTP 404")
        return body

    def get_json(self, path: str, *, params: Mapping[str, Any] | None = None) -> Any:
        """A JSON answer (``EnvironmentProblem`` if the body is not JSON)."""
        try:
            return json.loads(self._found(path, params=params, limit=MAX_JSON))
        except ValueError:
            raise EnvironmentProblem(f"GET {PREFIX}{path}: the answer is not JSON") from None

    def checkpoint(self) -> bytes:
        """``GET /v1/ledger/checkpoint``."""
        return self._found("/checkpoint", limit=ledger.MAX_NOTE_SIZE)

    def read(self, ref: TileRef) -> bytes:
        """``GET /v1/ledger/<tile path>``; a partial tile that 404s is cut from the full one."""
        limit = _limit(ref)
        if ref.width < TILE_WIDTH and (body := self.get(f"/{ref.path()}", limit=limit)) is not None:
            return body
        full = self._found(f"/{TileRef(ref.level, ref.index).path()}", limit=limit)
        return full if ref.width == TILE_WIDTH else _cut(ref, full)

    def lookup_index(self, leaf_hash: bytes, tree_size: int) -> int:
        """Where the server says ``leaf_hash`` is; only the index is used, never its proof."""
        params = {"leaf_hash": leaf_hash.hex(), "tree_size": tree_size}
        body = self.get("/proof/inclusion", params=params)
        if body is None:
            raise error(codes.NOT_FOUND, f"leaf {leaf_hash.hex()} is not in the log")
        try:
            index = json.loads(body)["index"]
        except (ValueError, KeyError, TypeError):
            index = None
        if not isinstance(index, int) or isinstance(index, bool):
            raise EnvironmentProblem("GET /proof/inclusion: the answer has no integer index")
        return index


def fetch_tiles(source: TileSource, refs: Iterable[TileRef]) -> dict[tuple[int, int], bytes]:
    """Read hash tiles, each exactly ``width * 32`` bytes, keyed by ``(level, index)``.

    Raises:
        MalformedLogData: ``CPN-LOG-004`` for a tile of the wrong length.
    """
    tiles: dict[tuple[int, int], bytes] = {}
    for ref in refs:
        data = source.read(ref)
        if len(data) != ref.width * HASH_SIZE:
            reason = f"tile {ref.path()} is {len(data)} bytes, expected {ref.width * HASH_SIZE}"
            raise error(codes.LOG_TILE, reason)
        tiles[ref.key] = data
    return tiles


@dataclass(frozen=True, slots=True)
class TrustState:
    """The last checkpoint verified: what a new one must be consistent with."""

    origin: str
    size: int
    root_hash: bytes
    checkpoint: str

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TrustState | None:
        """The state in ``path``; None if there is no such file (first use)."""
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise EnvironmentProblem(f"cannot read state {path}: {exc.strerror or exc}") from exc
        try:
            doc = json.loads(data)
            root = base64.b64decode(doc["root"], validate=True)
            state = cls(str(doc["origin"]), int(doc["size"]), root, str(doc["checkpoint"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise EnvironmentProblem(f"state file {path} is damaged: {exc}") from None
        if len(state.root_hash) != HASH_SIZE or state.size < 0:
            raise EnvironmentProblem(f"state file {path} is damaged")
        return state

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the state atomically (:func:`write_atomic`)."""
        doc = {"origin": self.origin, "size": self.size, "root": b64(self.root_hash)}
        doc["checkpoint"] = self.checkpoint
        write_atomic(path, (json.dumps(doc, indent=2) + "\n").encode("utf-8"))


def write_atomic(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o600) -> None:
    """Write a file atomically: a temporary file, fsync, then rename over ``path``."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            os.fchmod(fd, mode)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise EnvironmentProblem(f"cannot write {path}: {exc.strerror or exc}") from exc


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """A verified checkpoint, the state it becomes, and what was checked on the way."""

    checkpoint: Checkpoint
    note: str
    state: TrustState
    previous: TrustState | None
    checks: list[str] = field(default_factory=list)
    consistency_proof: list[bytes] = field(default_factory=list)

    @property
    def grew(self) -> bool:
        """Whether this is a checkpoint not seen before (or the first one)."""
        return self.previous is None or self.previous.size != self.checkpoint.size


def _evidence(old: str, new: str, proof: Sequence[bytes] | None = None) -> dict[str, str]:
    evidence = {"trusted checkpoint": old, "new checkpoint": new}
    if proof is not None:
        evidence["consistency proof"] = "\n".join(map(b64, proof)) or "(empty)"
    return evidence


def verify_log(
    source: TileSource,
    verifiers: Sequence[Verifier],
    *,
    origin: str,
    state: TrustState | None,
    witness_quorum: int = 0,
) -> VerifyResult:
    """Verify the latest checkpoint: its signature, then its consistency with ``state``.

    With ``witness_quorum``, at least that many of the witness keys (cosignature vkeys among
    ``verifiers``) must have cosigned it: protection against a log showing this client a
    view that nobody else sees (a split view).

    Raises:
        UntrustedLogData: ``CPN-LOG-006``: no trusted log signature, or another origin.
        InconsistentLog: ``CPN-LOG-009`` for a smaller tree than trusted, ``CPN-LOG-010``
            for another root at the same size or a consistency proof that fails.
        ProofMismatch: ``CPN-LOG-008`` when the tiles do not hash to the signed root.
        MalformedLogData: a malformed note, checkpoint or tile.
    """
    if state is not None and state.origin != origin:
        raise ValueError(f"the state is for origin {state.origin!r}, not {origin!r}")
    raw = source.checkpoint()
    checkpoint, note, sigs = ledger.open_checkpoint(raw, verifiers, origin=origin)
    log_keys = {(v.name, v.key_id) for v in verifiers if isinstance(v, ledger.Ed25519Verifier)}
    signed = [s for s in sigs if (s.name, s.key_id) in log_keys]
    if not signed:
        raise error(codes.LOG_UNTRUSTED, "no signature by a trusted log key")
    cosigners = {s.name for s in sigs if (s.name, s.key_id) not in log_keys}
    if len(cosigners) < witness_quorum:
        reason = f"{len(cosigners)} trusted witnesses cosigned, {witness_quorum} required"
        raise error(codes.LOG_UNTRUSTED, reason)
    text = note.encode()
    checks = [f"checkpoint signed by {', '.join(f'{s.name}+{s.key_id:08x}' for s in sigs)}"]
    proof: list[bytes] = []
    if state is None or state.size == 0 < checkpoint.size:
        check_root(source, checkpoint)
        checks.append(f"tiles hash to the root of size {checkpoint.size}")
    elif checkpoint.size < state.size:
        reason = f"tree size {checkpoint.size} is smaller than the trusted {state.size}"
        raise InconsistentLog(
            codes.LOG_ROLLBACK, reason, evidence=_evidence(state.checkpoint, text)
        )
    elif checkpoint.size == state.size:
        if checkpoint.root_hash != state.root_hash:
            reason = f"two roots for tree size {state.size}"
            raise InconsistentLog(
                codes.LOG_FORK, reason, evidence=_evidence(state.checkpoint, text)
            )
        checks.append(f"same tree as trusted (size {state.size})")
    else:
        nodes, plan = ledger.consistency_plan(state.size, checkpoint.size)
        proof = nodes.rehash(plan.hashes(fetch_tiles(source, plan.tiles())))
        try:
            ledger.verify_consistency(
                state.size, checkpoint.size, proof, state.root_hash, checkpoint.root_hash
            )
        except ProofMismatch as exc:
            reason = (
                f"size {checkpoint.size} is not an extension of size {state.size}: {exc.reason}"
            )
            evidence = _evidence(state.checkpoint, text, proof)
            raise InconsistentLog(codes.LOG_FORK, reason, evidence=evidence) from exc
        checks.append(f"consistent with trusted size {state.size} ({len(proof)} hashes)")
    new = TrustState(origin, checkpoint.size, checkpoint.root_hash, text)
    return VerifyResult(checkpoint, text, new, state, checks, proof)


def check_root(source: TileSource, checkpoint: Checkpoint) -> None:
    """Check that the source's tiles hash to the checkpoint's root (``CPN-LOG-008``)."""
    tiles = fetch_tiles(source, ledger.root_plan(checkpoint.size).tiles())
    root = ledger.root_from_tiles(checkpoint.size, tiles)
    if root != checkpoint.root_hash:
        reason = f"the tiles of size {checkpoint.size} do not hash to the checkpoint's root"
        raise ProofMismatch(codes.LOG_PROOF, reason, expected=checkpoint.root_hash, calculated=root)


def prove_inclusion(
    source: TileSource, checkpoint: Checkpoint, leaf_hash: bytes, index: int
) -> list[bytes]:
    """The inclusion proof of leaf ``index``, computed from tiles and checked.

    Raises:
        InvalidRequest: ``CPN-LOG-011`` for an index outside the tree.
        ProofMismatch: ``CPN-LOG-008`` when ``leaf_hash`` is not leaf ``index``.
    """
    nodes, plan = ledger.inclusion_plan(index, checkpoint.size)
    proof = nodes.rehash(plan.hashes(fetch_tiles(source, plan.tiles())))
    ledger.verify_inclusion(index, checkpoint.size, leaf_hash, proof, checkpoint.root_hash)
    return proof


def entry_at(source: TileSource, index: int, size: int) -> bytes:
    """The entry at ``index``, read from its entry bundle in the tree of ``size``."""
    if not 0 <= index < size:
        raise error(codes.NOT_FOUND, f"index {index} is outside a tree of size {size}")
    bundle_index = index // TILE_WIDTH
    width = ledger.tile_width(0, bundle_index, size)
    bundle = source.read(TileRef(ledger.ENTRIES, bundle_index, width))
    return ledger.parse_bundle(bundle, count=width)[index % TILE_WIDTH]


def locate_leaf(source: TileSource, leaf_hash: bytes, size: int) -> int:
    """The index of ``leaf_hash``: asked of the server, or found in a mirror's bundles.

    Raises:
        NotFound: ``CPN-REQ-008`` when the leaf is not in the tree of ``size``.
    """
    if isinstance(source, HttpTileSource):
        return source.lookup_index(leaf_hash, size)
    for bundle_index in range((size + TILE_WIDTH - 1) // TILE_WIDTH):
        width = ledger.tile_width(0, bundle_index, size)
        bundle = source.read(TileRef(ledger.ENTRIES, bundle_index, width))
        for offset, entry in enumerate(ledger.parse_bundle(bundle, count=width)):
            if ledger.hash_leaf(entry) == leaf_hash:
                return bundle_index * TILE_WIDTH + offset
    raise error(codes.NOT_FOUND, f"leaf {leaf_hash.hex()} is not in the log of size {size}")
