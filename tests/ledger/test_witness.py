"""The C2SP tlog-witness: every add-checkpoint path, its state, its HTTP face, the log's client."""

from __future__ import annotations

import base64
import os
import stat
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from coupon import codes
from coupon.errors import (
    InconsistentLog,
    MalformedLogData,
    NotFound,
    ProofMismatch,
    UntrustedLogData,
)
from coupon.ledger import (
    Checkpoint,
    CosignatureSigner,
    Ed25519Signer,
    RightBorder,
    TileBuilder,
    consistency_plan,
    hash_leaf,
    parse_note,
    sign_note,
    verify_consistency,
    verify_note,
)
from coupon.ledger_service import _witness
from coupon.ledger_service._witness import (
    LogWitnessing,
    Witness,
    WitnessClient,
    WitnessConflict,
    WitnessedCheckpoint,
    WitnessState,
    load_or_create_key,
    witness_app,
)
from coupon.storage.ledger_sql import CheckpointRow

from .merkle_reference import consistency_proof

ORIGIN = "example.com/log"
NOW = 1_700_000_000
LOG_KEY = Ed25519Signer.generate(ORIGIN)
WITNESS_KEY = CosignatureSigner.generate("witness.example/w1")


class Tree:
    """A growing log: leaves, roots at every size, and proofs from the tiles (the core's way)."""

    def __init__(self) -> None:
        self.border = RightBorder()
        self.builder = TileBuilder()
        self.tiles: dict[tuple[int, int], bytes] = {}
        self.roots: dict[int, bytes] = {0: self.border.root()}
        self.leaves: list[bytes] = []

    def grow_to(self, size: int) -> Tree:
        while self.border.size < size:
            leaf = hash_leaf(b"entry %d" % self.border.size)
            self.leaves.append(leaf)
            self.border.append(leaf)
            self.tiles.update(self.builder.append([leaf]))
            self.roots[self.border.size] = self.border.root()
        return self

    def proof(self, old: int, new: int) -> list[bytes]:
        nodes, plan = consistency_plan(old, new)
        return nodes.rehash(plan.hashes(self.tiles)) if nodes.ids else []

    def note(self, size: int, *, signer: Ed25519Signer = LOG_KEY, root: bytes | None = None) -> str:
        checkpoint = Checkpoint(ORIGIN, size, self.roots[size] if root is None else root)
        return sign_note(checkpoint.text(), signer).encode()


def body(old: int, note: str, proof: Sequence[bytes] = ()) -> bytes:
    lines = "".join(base64.b64encode(h).decode() + "\n" for h in proof)
    return f"old {old}\n{lines}\n{note}".encode()


@pytest.fixture
def state(tmp_path: Path) -> Iterator[WitnessState]:
    store = WitnessState(tmp_path / "witness.db")
    yield store
    store.close()


@pytest.fixture
def witness(state: WitnessState) -> Witness:
    return Witness(WITNESS_KEY, {ORIGIN: [LOG_KEY.verifier()]}, state, clock=lambda: NOW)


@pytest.fixture
def tree() -> Tree:
    return Tree().grow_to(600)


def cosigned(note: str, lines: bytes) -> tuple[int, ...]:
    """The timestamps of the lines that verify with the witness key (raises if none do)."""
    signed = parse_note(parse_note(note).text + "\n" + lines.decode())
    _, sigs = verify_note(signed, [WITNESS_KEY.verifier()])
    return tuple(WITNESS_KEY.verifier().timestamp(s.signature) for s in sigs)


# -- add_checkpoint ------------------------------------------------------------------------------


def test_first_checkpoint_from_old_zero(witness: Witness, state: WitnessState, tree: Tree) -> None:
    """The first checkpoint of a log is sent from size 0, without a proof."""
    lines = witness.add_checkpoint(body(0, tree.note(5)))
    assert cosigned(tree.note(5), lines) == (NOW,)
    assert lines.startswith("— witness.example/w1 ".encode())
    assert state.latest(ORIGIN) == WitnessedCheckpoint(5, tree.roots[5], tree.note(5))


@pytest.mark.parametrize(("old", "new"), [(1, 2), (3, 8), (5, 12), (8, 300), (255, 257), (7, 600)])
def test_grows_with_a_consistency_proof(
    witness: Witness, state: WitnessState, tree: Tree, old: int, new: int
) -> None:
    """A larger checkpoint with a proof from the cosigned size is cosigned and stored."""
    witness.add_checkpoint(body(0, tree.note(old)))
    proof = tree.proof(old, new)
    assert proof == consistency_proof(old, tree.leaves[:new])  # the tiles agree with the RFC
    lines = witness.add_checkpoint(body(old, tree.note(new), proof))
    assert cosigned(tree.note(new), lines) == (NOW,)
    latest = state.latest(ORIGIN)
    assert latest is not None
    assert latest.size == new


def test_same_checkpoint_is_cosigned_again(witness: Witness, tree: Tree) -> None:
    """Old size equal to the checkpoint size, same root: cosigned again, no proof needed."""
    witness.add_checkpoint(body(0, tree.note(4)))
    assert cosigned(tree.note(4), witness.add_checkpoint(body(4, tree.note(4))))


@pytest.mark.parametrize(("cosigned_size", "old"), [(None, 3), (5, 0), (5, 4), (5, 6)])
def test_wrong_old_size_is_a_conflict_with_the_size(
    witness: Witness, tree: Tree, cosigned_size: int | None, old: int
) -> None:
    """An old size other than the latest cosigned one (0 if none) is 409 with that size."""
    if cosigned_size is not None:
        witness.add_checkpoint(body(0, tree.note(cosigned_size)))
    with pytest.raises(WitnessConflict) as caught:
        witness.add_checkpoint(body(old, tree.note(9), tree.proof(old, 9)))
    assert caught.value.size == (cosigned_size or 0)
    assert caught.value.code is codes.LOG_WITNESS_SIZE
    assert caught.value.code.status == 409


def test_bad_proofs_are_mismatches(witness: Witness, state: WitnessState, tree: Tree) -> None:
    """A proof that does not verify, has the wrong length or is not empty from 0: 422."""
    witness.add_checkpoint(body(0, tree.note(5)))
    good = tree.proof(5, 12)
    tampered = [good[0], bytes(32), *good[2:]]
    for proof in (tampered, good[:-1], [*good, bytes(32)], []):
        with pytest.raises(ProofMismatch) as caught:
            witness.add_checkpoint(body(5, tree.note(12), proof))
        assert caught.value.code is codes.LOG_PROOF
    with pytest.raises(ProofMismatch):  # sizes equal: the proof must be empty
        witness.add_checkpoint(body(5, tree.note(5), [bytes(32)]))
    fresh = Witness(WITNESS_KEY, {ORIGIN: [LOG_KEY.verifier()]}, WitnessState(":memory:"))
    with pytest.raises(ProofMismatch):  # from size 0 the proof must be empty
        fresh.add_checkpoint(body(0, tree.note(5), tree.proof(1, 5)))
    latest = state.latest(ORIGIN)
    assert latest is not None
    assert latest.size == 5


def test_same_size_other_root_is_a_conflict(witness: Witness, tree: Tree) -> None:
    """A second root at a cosigned size is a fork: 409, without a size body."""
    witness.add_checkpoint(body(0, tree.note(5)))
    with pytest.raises(InconsistentLog) as caught:
        witness.add_checkpoint(body(5, tree.note(5, root=bytes(32))))
    assert caught.value.code is codes.LOG_FORK
    assert caught.value.code.status == 409
    assert set(caught.value.evidence) == {"cosigned", "submitted"}


def test_untrusted_signatures_are_refused(witness: Witness, tree: Tree) -> None:
    """Signed by another key under the log's name, or by no log key at all: 403."""
    impostor = Ed25519Signer.generate(ORIGIN)
    stranger = Ed25519Signer.generate("someone.else")
    for signer in (impostor, stranger):
        with pytest.raises(UntrustedLogData) as caught:
            witness.add_checkpoint(body(0, tree.note(5, signer=signer)))
        assert caught.value.code.status == 403


def test_unknown_origin_is_not_found(state: WitnessState, tree: Tree) -> None:
    """A checkpoint of a log the witness does not know: 404."""
    other = Witness(WITNESS_KEY, {"other.example/log": [LOG_KEY.verifier()]}, state)
    with pytest.raises(NotFound) as caught:
        other.add_checkpoint(body(0, tree.note(5)))
    assert caught.value.code is codes.LOG_ORIGIN


def _malformed_bodies() -> list[bytes]:
    tree = Tree().grow_to(5)
    note = tree.note(5)
    hash_line = base64.b64encode(bytes(32)).decode()
    not_a_checkpoint = sign_note("hello\n", LOG_KEY).encode()
    return [
        b"",
        b"old 0",
        b"old 0\n",
        f"new 0\n\n{note}".encode(),
        f"old 00\n\n{note}".encode(),
        f"old -1\n\n{note}".encode(),
        f"old 99999999999999999999\n\n{note}".encode(),
        f"old  0\n\n{note}".encode(),
        f"old 1\n{hash_line[:-1]}\n\n{note}".encode(),  # not base64
        f"old 1\n{base64.b64encode(bytes(31)).decode()}\n\n{note}".encode(),  # 31 bytes
        f"old 1\n{hash_line}\xff\n\n{note}".encode(),
        f"old 1\n{hash_line}\n".encode(),  # no empty line
        ("old 1\n" + f"{hash_line}\n" * 64 + f"\n{note}").encode(),  # 64 proof lines
        b"old 0\n\nnot a note",
        b"old 0\n\n" + note.encode()[:-1],
        f"old 0\n\n{not_a_checkpoint}".encode(),
        f"old 6\n\n{note}".encode(),  # old > checkpoint size
        f"old 0\n\n{note}".encode() + b"x" * (64 * 1024),
    ]


@pytest.mark.parametrize("request_body", _malformed_bodies())
def test_malformed_bodies_are_refused(witness: Witness, request_body: bytes) -> None:
    """A body that breaks the format, or an old size above the checkpoint's: 400."""
    with pytest.raises(MalformedLogData) as caught:
        witness.add_checkpoint(request_body)
    assert caught.value.code.status == 400


# -- state -----------------------------------------------------------------------------------


def test_state_persists_across_a_new_store(tmp_path: Path, tree: Tree) -> None:
    """A restarted witness remembers the size it cosigned and refuses to roll back."""
    path = tmp_path / "state.db"
    first = WitnessState(path)
    Witness(WITNESS_KEY, {ORIGIN: [LOG_KEY.verifier()]}, first).add_checkpoint(
        body(0, tree.note(5))
    )
    first.close()
    second = WitnessState(path)
    again = Witness(WITNESS_KEY, {ORIGIN: [LOG_KEY.verifier()]}, second)
    with pytest.raises(WitnessConflict) as caught:
        again.add_checkpoint(body(0, tree.note(3)))
    assert caught.value.size == 5
    assert again.add_checkpoint(body(5, tree.note(9), tree.proof(5, 9)))
    assert second.latest(ORIGIN) == WitnessedCheckpoint(9, tree.roots[9], tree.note(9))
    assert second.latest("other") is None
    mode = second._db.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_concurrent_updates_from_two_connections_cannot_both_win(
    tmp_path: Path, tree: Tree
) -> None:
    """Two witnesses on one file (two connections, as two processes) race from size 0."""
    path = tmp_path / "state.db"
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def race(w: Witness, size: int) -> None:
        barrier.wait()
        try:
            w.add_checkpoint(body(0, tree.note(size)))
            outcomes.append("ok")
        except WitnessConflict:
            outcomes.append("conflict")

    for _ in range(10):
        fresh = [WitnessState(path) for _ in range(2)]
        fresh[0]._db.execute("DELETE FROM witness_checkpoints")
        witnesses = [Witness(WITNESS_KEY, {ORIGIN: [LOG_KEY.verifier()]}, s) for s in fresh]
        outcomes.clear()
        threads = [threading.Thread(target=race, args=(w, 3 + i)) for i, w in enumerate(witnesses)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcomes) == ["conflict", "ok"]
        for s in fresh:
            s.close()


# -- HTTP ------------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def http(witness: Witness) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=witness_app(witness))
    async with httpx.AsyncClient(transport=transport, base_url="http://witness") as client:
        yield client


@pytest.mark.asyncio
async def test_app_status_codes(http: httpx.AsyncClient, tree: Tree) -> None:
    """Each path of the spec has its status; a size conflict is text/x.tlog.size."""

    async def post(content: bytes) -> httpx.Response:
        return await http.post("/add-checkpoint", content=content)

    ok = await post(body(0, tree.note(5)))
    assert ok.status_code == 200
    assert ok.headers["content-type"].startswith("text/plain")
    assert cosigned(tree.note(5), ok.content)

    conflict = await post(body(2, tree.note(8), tree.proof(2, 8)))
    assert conflict.status_code == 409
    assert conflict.headers["content-type"] == "text/x.tlog.size"
    assert conflict.content == b"5\n"

    fork = await post(body(5, tree.note(5, root=bytes(32))))
    assert fork.status_code == 409
    assert fork.headers["content-type"] != "text/x.tlog.size"

    assert (await post(body(5, tree.note(8), [bytes(32)]))).status_code == 422
    assert (
        await post(body(0, tree.note(5, signer=Ed25519Signer.generate(ORIGIN))))
    ).status_code == 403
    other = Checkpoint("other.example/log", 1, bytes(32)).text()
    assert (await post(body(0, sign_note(other, LOG_KEY).encode()))).status_code == 404
    assert (await post(b"old x\n\n")).status_code == 400
    assert (await post(body(9, tree.note(8)))).status_code == 400
    assert (await post(b"old 0\n\n" + b"x" * (64 * 1024))).status_code == 413
    assert (await http.get("/add-checkpoint")).status_code == 405
    health = await http.get("/healthz")
    assert health.status_code == 200


@pytest.mark.asyncio
async def test_app_hides_unexpected_errors(state: WitnessState) -> None:
    """A bug becomes a bare 500, and the app keeps serving."""

    class Broken(Witness):
        def add_checkpoint(self, body: bytes) -> bytes:
            raise RuntimeError("secret detail")

    app = witness_app(Broken(WITNESS_KEY, {}, state))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://w"
    ) as client:
        response = await client.post("/add-checkpoint", content=b"old 0\n\n")
        assert response.status_code == 500
        assert b"secret" not in response.content
        assert (await client.get("/healthz")).status_code == 200


@pytest.mark.asyncio
async def test_app_storage_failure_is_503(tmp_path: Path, tree: Tree) -> None:
    """The state store failing is a temporary 503, not a crash."""
    state = WitnessState(tmp_path / "s.db")
    state.close()
    app = witness_app(Witness(WITNESS_KEY, {ORIGIN: [LOG_KEY.verifier()]}, state))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://w"
    ) as client:
        response = await client.post("/add-checkpoint", content=body(0, tree.note(5)))
    assert response.status_code == 503


# -- the log's side --------------------------------------------------------------------------


class Recorder:
    """The LogWitnessing callbacks: proofs from a tree, stored lines and counted outcomes."""

    def __init__(self, tree: Tree) -> None:
        self.tree = tree
        self.proofs: list[tuple[int, int]] = []
        self.stored: list[tuple[int, str, str]] = []
        self.counts: list[tuple[str, str]] = []

    async def proof(self, old: int, new: int) -> list[bytes]:
        self.proofs.append((old, new))
        return self.tree.proof(old, new)

    async def store(self, seq: int, witness: str, line: str) -> None:
        self.stored.append((seq, witness, line))

    def count(self, witness: str, outcome: str) -> None:
        self.counts.append((witness, outcome))

    def hook(self, clients: list[WitnessClient]) -> LogWitnessing:
        return LogWitnessing(clients, proof=self.proof, store=self.store, count=self.count)


def row(tree: Tree, seq: int, size: int) -> CheckpointRow:
    return CheckpointRow(seq, size, tree.roots[size], tree.note(size), NOW * 1000)


class SwitchableApp:
    """An ASGI app whose witness can be replaced, as by a restart."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://witness")


def _verifies(note: str, line: str) -> bool:
    signed = parse_note(parse_note(note).text + "\n" + line)
    return bool(verify_note(signed, [WITNESS_KEY.verifier()])[1])


@pytest.mark.asyncio
async def test_log_witnessing_end_to_end(tmp_path: Path, witness: Witness, tree: Tree) -> None:
    """First checkpoint from 0, growth with a proof, then a restart to an older state."""
    rec = Recorder(tree)
    app = SwitchableApp(witness_app(witness))
    vkey = WITNESS_KEY.verifier().vkey()
    async with _client(app) as http:
        hook = rec.hook([WitnessClient("http://witness/", vkey, client=http)])
        await hook.cosign(row(tree, 1, 5))
        assert rec.proofs == []
        await hook.cosign(row(tree, 2, 12))
        assert rec.proofs == [(5, 12)]
        assert [(s, w) for s, w, _ in rec.stored] == [(1, WITNESS_KEY.name), (2, WITNESS_KEY.name)]
        assert _verifies(tree.note(5), rec.stored[0][2])
        assert _verifies(tree.note(12), rec.stored[1][2])
        assert hook.sizes == {WITNESS_KEY.name: 12}

        older = WitnessState(tmp_path / "restored.db")  # restored from an old backup
        older.update(ORIGIN, lambda _: WitnessedCheckpoint(5, tree.roots[5], tree.note(5)))
        app.app = witness_app(Witness(WITNESS_KEY, {ORIGIN: [LOG_KEY.verifier()]}, older))
        await hook.cosign(row(tree, 3, 20))
        assert rec.proofs[-2:] == [(12, 20), (5, 20)]
        assert rec.stored[-1][0] == 3
        assert _verifies(tree.note(20), rec.stored[-1][2])
        assert rec.counts == [(WITNESS_KEY.name, o) for o in ("ok", "ok", "resync", "ok")]

        await hook.cosign(row(tree, 0, 4))  # older than what the witness cosigned
        assert rec.counts[-1] == (WITNESS_KEY.name, "stale")


@pytest.mark.asyncio
async def test_log_witnessing_never_raises(
    witness: Witness, state: WitnessState, tree: Tree
) -> None:
    """A forged cosignature, a refusal, a witness ahead and a dead witness are only counted."""
    rec = Recorder(tree)
    forger = Witness(
        CosignatureSigner.generate(WITNESS_KEY.name),
        {ORIGIN: [LOG_KEY.verifier()]},
        WitnessState(":memory:"),
    )
    vkey = WITNESS_KEY.verifier().vkey()

    def dead(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    witness.add_checkpoint(body(0, tree.note(30)))  # someone else's log state ran ahead
    async with (
        _client(witness_app(forger)) as forged,
        _client(witness_app(witness)) as ahead,
        httpx.AsyncClient(transport=httpx.MockTransport(dead)) as unreachable,
    ):
        clients = [
            WitnessClient("http://f", vkey, client=forged),
            WitnessClient("http://a", vkey, client=ahead),
            WitnessClient("http://d", vkey, client=unreachable),
        ]
        await rec.hook(clients).cosign(row(tree, 1, 5))
    assert rec.stored == []
    assert sorted(o for _, o in rec.counts) == ["conflict", "refused", "unavailable"]


@pytest.mark.asyncio
async def test_client_reports_the_witness_size_and_refusals(witness: Witness, tree: Tree) -> None:
    """WitnessClient raises WitnessConflict with the size, and the coupon error of a refusal."""
    witness.add_checkpoint(body(0, tree.note(7)))
    async with _client(witness_app(witness)) as http:
        client = WitnessClient("http://witness", WITNESS_KEY.verifier().vkey(), client=http)
        with pytest.raises(WitnessConflict) as caught:
            await client.cosign(tree.note(9), 0, [])
        assert caught.value.size == 7
        with pytest.raises(ProofMismatch):
            await client.cosign(tree.note(9), 7, [bytes(32)])
        lines = await client.cosign(tree.note(9), 7, tree.proof(7, 9))
        assert len(lines) == 1
        assert _verifies(tree.note(9), lines[0])


# -- serving ---------------------------------------------------------------------------------


def test_key_file_is_created_private_and_reloaded(tmp_path: Path) -> None:
    """A missing key file is created with mode 0600; the same key loads again."""
    path = tmp_path / "witness.key"
    created = load_or_create_key(path, "witness.example/w2")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    loaded = load_or_create_key(path, "witness.example/w2")
    assert loaded.verifier() == created.verifier()
    with pytest.raises(ValueError, match="named"):
        load_or_create_key(path, "another.name")


def test_serve_witness_runs_uvicorn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """serve_witness prints the vkey and hands uvicorn an app for the logs' vkeys."""
    import uvicorn

    seen: dict[str, Any] = {}
    run: Callable[..., None] = lambda app, **kw: seen.update(app=app, **kw)  # noqa: E731
    monkeypatch.setattr(uvicorn, "run", run)
    _witness.serve_witness(
        key_file=tmp_path / "k",
        name="w3",
        log_vkeys=[LOG_KEY.verifier().vkey()],
        state_path=tmp_path / "s.db",
        host="127.0.0.1",
        port=0,
    )
    vkey = capsys.readouterr().err.strip()
    assert vkey.startswith("w3+")
    assert seen["host"] == "127.0.0.1"
    assert seen["port"] == 0
    with pytest.raises(MalformedLogData):  # a cosignature key is no log key
        _witness.serve_witness(
            key_file=tmp_path / "k",
            name="w3",
            log_vkeys=[vkey],
            state_path=tmp_path / "s.db",
            host="127.0.0.1",
            port=0,
        )


def test_consistency_reference_agrees_with_verify(tree: Tree) -> None:
    """The proofs the tests send are the core's, and the core accepts them."""
    verify_consistency(5, 12, tree.proof(5, 12), tree.roots[5], tree.roots[12])
