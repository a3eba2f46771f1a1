"""``coupon ledger``: auditing a log from a static tlog-tiles directory or over HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from tests.cli.cli_support import Cli, Served

from coupon.cli import main
from coupon.cli._app import EnvironmentProblem
from coupon.cli._ledger_client import (
    DirTileSource,
    HttpTileSource,
    TrustState,
    fetch_tiles,
    prove_inclusion,
    verify_log,
)
from coupon.errors import InconsistentLog, MalformedLogData
from coupon.ledger import (
    ENTRIES,
    TILE_WIDTH,
    Checkpoint,
    Ed25519Signer,
    RightBorder,
    TileBuilder,
    TileRef,
    encode_bundle,
    hash_leaf,
    sign_note,
)

ORIGIN = "ledger.example/log"


def entry(i: int, salt: str = "") -> bytes:
    """The bytes of entry ``i``: a small canonical JSON document."""
    return json.dumps({"v": 1, "event": {"action": "coupon.issue", "n": i, "s": salt}}).encode()


class Log:
    """A log built in memory and written out as a static tlog-tiles directory."""

    def __init__(self, signer: Ed25519Signer, salt: str = "") -> None:
        self.signer = signer
        self.salt = salt
        self.entries: list[bytes] = []
        self.builder = TileBuilder()
        self.border = RightBorder()
        self.tiles: dict[tuple[int, int], bytes] = {}

    def grow(self, count: int) -> Log:
        """Append ``count`` entries."""
        new = [entry(len(self.entries) + i, self.salt) for i in range(count)]
        hashes = [hash_leaf(e) for e in new]
        self.entries += new
        self.tiles.update(self.builder.append(hashes))
        self.border.extend(hashes)
        return self

    def note(self) -> str:
        """The signed checkpoint of the current size."""
        body = Checkpoint(ORIGIN, self.border.size, self.border.root()).text()
        return sign_note(body, self.signer).encode()

    def write(self, root: Path) -> Path:
        """Write tiles (partial ones as ``.p/W``), entry bundles and the checkpoint."""
        for (level, index), data in self.tiles.items():
            put(root / TileRef(level, index, len(data) // 32).path(), data)
        for i in range(0, len(self.entries), TILE_WIDTH):
            chunk = self.entries[i : i + TILE_WIDTH]
            put(root / TileRef(ENTRIES, i // TILE_WIDTH, len(chunk)).path(), encode_bundle(chunk))
        (root / "checkpoint").write_text(self.note())
        return root


def put(path: Path, data: bytes) -> None:
    """Write a file, creating its directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.fixture
def signer() -> Ed25519Signer:
    """The log's signing key."""
    return Ed25519Signer.generate(ORIGIN)


@pytest.fixture
def vkey(signer: Ed25519Signer) -> str:
    """The log's verifier key string."""
    return signer.verifier().vkey()


@pytest.fixture
def log(signer: Ed25519Signer) -> Log:
    """A log of 300 entries: one full level-0 tile and a partial one."""
    return Log(signer).grow(300)


class TestVerify:
    def test_first_run_writes_the_state(
        self, cli: Cli, tmp_path: Path, log: Log, vkey: str
    ) -> None:
        """The first run verifies the signature and the tiles, then records the checkpoint."""
        tiles, state = log.write(tmp_path / "log"), tmp_path / "state.json"
        run = cli("ledger", "verify", "--tiles", str(tiles), "--key", vkey, "--state", str(state))
        assert run.code == 0, run.err
        assert run.out == f"{ORIGIN} 300 {json.loads(state.read_text())['root']}\n"
        assert "OK: checkpoint signed by" in run.err
        assert "first use" in run.err
        assert json.loads(state.read_text())["size"] == 300

    def test_growth_is_checked_for_consistency(
        self, cli: Cli, tmp_path: Path, log: Log, vkey: str
    ) -> None:
        """After the log grows, the new checkpoint is proved consistent with the state."""
        tiles, state = tmp_path / "log", str(tmp_path / "state.json")
        log.write(tiles)
        assert (
            cli("ledger", "verify", "--tiles", str(tiles), "--key", vkey, "--state", state).code
            == 0
        )
        log.grow(500).write(tiles)
        run = cli(
            "ledger", "verify", "--tiles", str(tiles), "--key", vkey, "--state", state, "--json"
        )
        assert run.code == 0, run.err
        doc = run.json()
        assert (doc["size"], doc["previous"]) == (800, 300)
        assert "consistent with trusted size 300" in run.err
        assert json.loads(Path(state).read_text())["size"] == 800

    def test_rollback(self, cli: Cli, tmp_path: Path, log: Log, vkey: str) -> None:
        """A checkpoint smaller than the trusted one is a rollback, with both notes shown."""
        tiles, state = tmp_path / "log", str(tmp_path / "state.json")
        old = log.note()
        log.grow(10).write(tiles)
        assert (
            cli("ledger", "verify", "--tiles", str(tiles), "--key", vkey, "--state", state).code
            == 0
        )
        (tiles / "checkpoint").write_text(old)
        run = cli("ledger", "verify", "--tiles", str(tiles), "--key", vkey, "--state", state)
        assert run.code == 1
        assert "FAIL: CPN-LOG-009" in run.err
        assert "trusted checkpoint:" in run.err
        assert "new checkpoint:" in run.err
        assert json.loads(Path(state).read_text())["size"] == 310

    def test_fork(
        self, cli: Cli, tmp_path: Path, log: Log, signer: Ed25519Signer, vkey: str
    ) -> None:
        """A larger tree that does not extend the trusted one is a fork (the proof fails)."""
        tiles, state = tmp_path / "log", str(tmp_path / "state.json")
        log.write(tiles)
        assert (
            cli("ledger", "verify", "--tiles", str(tiles), "--key", vkey, "--state", state).code
            == 0
        )
        Log(signer, salt="other").grow(400).write(tmp_path / "other")
        run = cli(
            "ledger", "verify", "--tiles", str(tmp_path / "other"), "--key", vkey, "--state", state
        )
        assert run.code == 1
        assert "FAIL: CPN-LOG-010" in run.err
        assert "consistency proof:" in run.err

    def test_same_size_other_root_is_a_fork(
        self, cli: Cli, tmp_path: Path, log: Log, signer: Ed25519Signer, vkey: str
    ) -> None:
        """Two roots signed for one tree size are a fork."""
        state = str(tmp_path / "state.json")
        log.write(tmp_path / "log")
        assert (
            cli(
                "ledger",
                "verify",
                "--tiles",
                str(tmp_path / "log"),
                "--key",
                vkey,
                "--state",
                state,
            ).code
            == 0
        )
        Log(signer, salt="other").grow(300).write(tmp_path / "other")
        run = cli(
            "ledger", "verify", "--tiles", str(tmp_path / "other"), "--key", vkey, "--state", state
        )
        assert run.code == 1
        assert "CPN-LOG-010" in run.err

    def test_untrusted_key(self, cli: Cli, tmp_path: Path, log: Log) -> None:
        """A checkpoint that no trusted key signed fails with CPN-LOG-006."""
        other = Ed25519Signer.generate(ORIGIN).verifier().vkey()
        run = cli("ledger", "verify", "--tiles", str(log.write(tmp_path)), "--key", other)
        assert run.code == 1
        assert "FAIL: CPN-LOG-006" in run.err

    def test_wrong_origin(self, cli: Cli, tmp_path: Path, log: Log, vkey: str) -> None:
        """A checkpoint for another origin than --origin is refused."""
        run = cli(
            "ledger",
            "verify",
            "--tiles",
            str(log.write(tmp_path)),
            "--key",
            vkey,
            "--origin",
            "x.example/log",
        )
        assert run.code == 1
        assert "CPN-LOG-006" in run.err

    def test_key_file(self, cli: Cli, tmp_path: Path, log: Log, vkey: str) -> None:
        """--key accepts a file of vkeys, one a line."""
        keys = tmp_path / "keys.txt"
        keys.write_text(f"{vkey}\n\n")
        assert (
            cli(
                "ledger", "verify", "--tiles", str(log.write(tmp_path / "log")), "--key", str(keys)
            ).code
            == 0
        )

    def test_entry_inclusion(self, cli: Cli, tmp_path: Path, log: Log, vkey: str) -> None:
        """An entry file of the log verifies; a modified one is not in the log."""
        tiles = log.write(tmp_path / "log")
        good, bad = tmp_path / "good.json", tmp_path / "bad.json"
        good.write_bytes(log.entries[270])
        bad.write_bytes(log.entries[270].replace(b"coupon.issue", b"coupon.revoke"))
        run = cli(
            "ledger", "verify", "--tiles", str(tiles), "--key", vkey, "--entry", str(good), "--json"
        )
        assert run.code == 0, run.err
        (included,) = run.json()["included"]
        assert included["index"] == 270
        run = cli("ledger", "verify", "--tiles", str(tiles), "--key", vkey, "--entry", str(bad))
        assert run.code == 1
        assert "not in the log" in run.err

    def test_index_and_leaf_hash(self, cli: Cli, tmp_path: Path, log: Log, vkey: str) -> None:
        """--index reads the entry from its bundle; --leaf-hash finds its index."""
        tiles = str(log.write(tmp_path))
        leaf = hash_leaf(log.entries[5]).hex()
        run = cli(
            "ledger",
            "verify",
            "--tiles",
            tiles,
            "--key",
            vkey,
            "--index",
            "299",
            "--leaf-hash",
            leaf,
        )
        assert run.code == 0, run.err
        assert "OK: leaf 299" in run.err
        assert "OK: leaf 5 " in run.err

    def test_index_out_of_range(self, cli: Cli, tmp_path: Path, log: Log, vkey: str) -> None:
        """An index beyond the tree fails with a CouponError."""
        run = cli(
            "ledger", "verify", "--tiles", str(log.write(tmp_path)), "--key", vkey, "--index", "300"
        )
        assert run.code == 1

    def test_truncated_tile(self, cli: Cli, tmp_path: Path, log: Log, vkey: str) -> None:
        """A tile shorter than its width fails with CPN-LOG-004."""
        tiles = log.write(tmp_path)
        partial = tiles / "tile/0/001.p/44"
        partial.write_bytes(partial.read_bytes()[:-1])
        run = cli("ledger", "verify", "--tiles", str(tiles), "--key", vkey)
        assert run.code == 1
        assert "FAIL: CPN-LOG-004" in run.err

    def test_tampered_tile(self, cli: Cli, tmp_path: Path, log: Log, vkey: str) -> None:
        """Tiles that do not hash to the signed root fail with CPN-LOG-008."""
        tiles = log.write(tmp_path)
        partial = tiles / "tile/0/001.p/44"
        partial.write_bytes(bytes(32) + partial.read_bytes()[32:])
        assert "CPN-LOG-008" in cli("ledger", "verify", "--tiles", str(tiles), "--key", vkey).err

    def test_missing_directory(self, cli: Cli, tmp_path: Path, vkey: str) -> None:
        """An unreadable mirror is an environment error."""
        assert cli("ledger", "verify", "--tiles", str(tmp_path / "nope"), "--key", vkey).code == 3

    def test_url_and_tiles_exclude_each_other(self, cli: Cli, tmp_path: Path, vkey: str) -> None:
        """Giving both --url and --tiles is a usage error."""
        run = cli("ledger", "verify", "--url", "http://x", "--tiles", str(tmp_path), "--key", vkey)
        assert run.code == 2


class TestMonitor:
    def test_two_rounds(self, cli: Cli, tmp_path: Path, log: Log, vkey: str) -> None:
        """--count 2 runs two rounds and prints the one new checkpoint once."""
        state = tmp_path / "state.json"
        run = cli(
            "ledger",
            "monitor",
            "--tiles",
            str(log.write(tmp_path / "log")),
            "--key",
            vkey,
            "--state",
            str(state),
            "--interval",
            "0",
            "--count",
            "2",
        )
        assert run.code == 0, run.err
        assert run.out.count("\n") == 1
        assert run.out.startswith(f"{ORIGIN} 300 ")
        assert state.exists()

    def test_stops_at_rollback(self, cli: Cli, tmp_path: Path, log: Log, vkey: str) -> None:
        """An inconsistency stops the monitor with exit 1."""
        state, tiles = tmp_path / "state.json", tmp_path / "log"
        old = log.note()
        log.grow(1).write(tiles)
        TrustState(ORIGIN, 301, log.border.root(), log.note()).save(state)
        (tiles / "checkpoint").write_text(old)
        run = cli(
            "ledger",
            "monitor",
            "--tiles",
            str(tiles),
            "--key",
            vkey,
            "--state",
            str(state),
            "--interval",
            "0",
            "--count",
            "3",
        )
        assert run.code == 1
        assert "CPN-LOG-009" in run.err


class TestClient:
    def test_state_round_trip(self, tmp_path: Path) -> None:
        """A saved state loads back equal."""
        state = TrustState(ORIGIN, 7, bytes(range(32)), "note\n")
        state.save(tmp_path / "s.json")
        assert TrustState.load(tmp_path / "s.json") == state
        assert TrustState.load(tmp_path / "missing.json") is None

    def test_damaged_state(self, tmp_path: Path) -> None:
        """A state file that does not parse is an environment problem."""
        (tmp_path / "s.json").write_text("{")
        with pytest.raises(EnvironmentProblem):
            TrustState.load(tmp_path / "s.json")

    def test_dir_source_cuts_a_full_tile(self, tmp_path: Path, log: Log) -> None:
        """A partial tile deleted after the tile filled up is cut from the full one."""
        tiles = log.write(tmp_path)
        assert DirTileSource(tiles).read(TileRef(0, 0, 10)) == log.tiles[0, 0][: 10 * 32]

    def test_fetch_tiles_checks_lengths(self, tmp_path: Path, log: Log) -> None:
        """A tile of another length than its width is malformed (CPN-LOG-004)."""
        tiles = log.write(tmp_path)
        (tiles / "tile/0/001.p/44").write_bytes(bytes(45 * 32))
        with pytest.raises(MalformedLogData, match="CPN-LOG-004"):
            fetch_tiles(DirTileSource(tiles), [TileRef(0, 1, 44)])

    def test_verify_log_fork_evidence(
        self, tmp_path: Path, log: Log, signer: Ed25519Signer
    ) -> None:
        """A fork carries both checkpoints and the failed consistency proof."""
        source = DirTileSource(log.write(tmp_path / "a"))
        first = verify_log(source, [signer.verifier()], origin=ORIGIN, state=None)
        other = DirTileSource(Log(signer, "x").grow(301).write(tmp_path / "b"))
        with pytest.raises(InconsistentLog) as caught:
            verify_log(other, [signer.verifier()], origin=ORIGIN, state=first.state)
        assert set(caught.value.evidence) == {
            "trusted checkpoint",
            "new checkpoint",
            "consistency proof",
        }


def mock_ledger(
    root: Path, *, partials: bool = True, seen: list[str] | None = None
) -> httpx.Client:
    """An httpx client whose transport serves the directory ``root`` under /v1/ledger."""

    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request.url.path)
        path = request.url.path.removeprefix("/v1/ledger/")
        file = root / path
        if (".p/" in path and not partials) or not file.is_file():
            return httpx.Response(404, json={"detail": "no"})
        return httpx.Response(200, content=file.read_bytes())

    return httpx.Client(transport=httpx.MockTransport(handler))


class TestHttpTileSource:
    def test_verifies_over_http(self, tmp_path: Path, log: Log, signer: Ed25519Signer) -> None:
        """The checkpoint and tiles come from {base}/v1/ledger/..."""
        client = mock_ledger(log.write(tmp_path))
        source = HttpTileSource("http://ledger.test/", client=client)
        result = verify_log(source, [signer.verifier()], origin=ORIGIN, state=None)
        assert result.checkpoint.size == 300
        assert len(prove_inclusion(source, result.checkpoint, hash_leaf(log.entries[3]), 3)) == 9

    def test_partial_falls_back_to_full(self, tmp_path: Path, log: Log) -> None:
        """A partial tile that 404s is cut from the full tile."""
        seen: list[str] = []
        source = HttpTileSource(
            "http://ledger.test", client=mock_ledger(log.write(tmp_path), partials=False, seen=seen)
        )
        assert source.read(TileRef(0, 0, 3)) == log.tiles[0, 0][:96]
        assert seen == ["/v1/ledger/tile/0/000.p/3", "/v1/ledger/tile/0/000"]

    def test_entry_bundle_fallback(self, tmp_path: Path, log: Log) -> None:
        """A partial entry bundle is cut from the full bundle by entries."""
        source = HttpTileSource(
            "http://ledger.test", client=mock_ledger(log.write(tmp_path), partials=False)
        )
        assert source.read(TileRef(ENTRIES, 0, 2)) == encode_bundle(log.entries[:2])

    def test_problem_document_becomes_its_error(self) -> None:
        """A problem answer raises the CouponError of its code."""
        body = {"code": "CPN-LOG-004", "detail": "bad tile"}
        transport = httpx.MockTransport(
            lambda r: httpx.Response(
                400, json=body, headers={"content-type": "application/problem+json"}
            )
        )
        source = HttpTileSource("http://ledger.test", client=httpx.Client(transport=transport))
        with pytest.raises(MalformedLogData):
            source.checkpoint()

    def test_unreachable(self) -> None:
        """A transport error is an environment problem."""

        def refuse(request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("refused", request=request)

        source = HttpTileSource(
            "http://ledger.test", client=httpx.Client(transport=httpx.MockTransport(refuse))
        )
        with pytest.raises(EnvironmentProblem):
            source.checkpoint()

    def test_api_key_header(self, tmp_path: Path) -> None:
        """The API key goes in X-API-Key."""
        headers: list[str | None] = []

        def handler(request: httpx.Request) -> httpx.Response:
            headers.append(request.headers.get("x-api-key"))
            return httpx.Response(200, content=b"x")

        client = httpx.Client(transport=httpx.MockTransport(handler))
        HttpTileSource("http://ledger.test", api_key="k1", client=client).checkpoint()
        assert headers == ["k1"]


def serve(served: Served, root: Path) -> None:
    """Put every file under ``root`` on the test server under /v1/ledger."""
    for file in root.rglob("*"):
        if file.is_file():
            served.routes[f"/v1/ledger/{file.relative_to(root).as_posix()}"] = (
                200,
                file.read_bytes(),
            )


class TestOverHttp:
    def test_verify_entry_by_url(
        self, cli: Cli, tmp_path: Path, log: Log, vkey: str, http_server: Served
    ) -> None:
        """Over HTTP the server is asked only for the index; the proof comes from tiles."""
        serve(http_server, log.write(tmp_path / "log"))
        leaf = hash_leaf(log.entries[42]).hex()
        answer = {"index": 42, "tree_size": 300, "leaf_hash": leaf, "proof": ["bogus"]}
        http_server.routes[f"/v1/ledger/proof/inclusion?leaf_hash={leaf}&tree_size=300"] = (
            200,
            json.dumps(answer).encode(),
        )
        (tmp_path / "e.json").write_bytes(log.entries[42])
        run = cli(
            "ledger",
            "verify",
            "--url",
            http_server.base,
            "--key",
            vkey,
            "--entry",
            str(tmp_path / "e.json"),
        )
        assert run.code == 0, run.err
        assert "OK: leaf 42" in run.err

    def test_lying_index(
        self, cli: Cli, tmp_path: Path, log: Log, vkey: str, http_server: Served
    ) -> None:
        """A wrong index from the server fails the recomputed proof (CPN-LOG-008)."""
        serve(http_server, log.write(tmp_path / "log"))
        leaf = hash_leaf(log.entries[42]).hex()
        http_server.routes[f"/v1/ledger/proof/inclusion?leaf_hash={leaf}&tree_size=300"] = (
            200,
            b'{"index": 41}',
        )
        run = cli("ledger", "verify", "--url", http_server.base, "--key", vkey, "--leaf-hash", leaf)
        assert run.code == 1
        assert "CPN-LOG-008" in run.err

    def test_checkpoint_and_key(
        self, cli: Cli, tmp_path: Path, log: Log, vkey: str, http_server: Served
    ) -> None:
        """`checkpoint` prints the note; `key` prints the vkeys."""
        serve(http_server, log.write(tmp_path / "log"))
        doc = {
            "origin": ORIGIN,
            "keys": [
                {"vkey": vkey, "key_id": "x", "created_ms": 1, "retire_ms": None, "active": True}
            ],
        }
        http_server.routes["/v1/ledger/key"] = (200, json.dumps(doc).encode())
        run = cli("ledger", "checkpoint", "--url", http_server.base, "--key", vkey)
        assert (run.code, run.out) == (0, log.note())
        assert cli("ledger", "key", "--url", http_server.base).out == f"{vkey}\n"
        assert cli("ledger", "key", "--url", http_server.base, "--json").json() == doc

    def test_search_writes_entries(self, cli: Cli, tmp_path: Path, http_server: Served) -> None:
        """Search prints one line a hit and saves each entry for `verify --entry`."""
        event = {
            "time": 1_800_000_000_000,
            "action": "coupon.revoke",
            "result": "ok",
            "actor": {"id": "admin"},
            "target": {"jti": "j1"},
        }
        hit = {
            "index": 7,
            "leaf_hash": "00",
            "entry": '{"v":1}',
            "event": event,
            "tree_size": 9,
            "proof": [],
        }
        body = json.dumps({"hits": [hit], "next": None, "checkpoint": ""}).encode()
        http_server.routes["/v1/ledger/search?action=coupon.revoke"] = (200, body)
        run = cli(
            "ledger",
            "search",
            "--url",
            http_server.base,
            "--api-key",
            "k",
            "--action",
            "coupon.revoke",
            "--entries-dir",
            str(tmp_path / "hits"),
        )
        assert run.code == 0, run.err
        assert run.out == "7\t2027-01-15T08:00:00.000Z\tcoupon.revoke\tok\tadmin\tjti=j1\n"
        assert (tmp_path / "hits" / "7.json").read_bytes() == b'{"v":1}'

    def test_mirror_then_verify_offline(
        self, cli: Cli, tmp_path: Path, log: Log, vkey: str, http_server: Served
    ) -> None:
        """A mirror holds the checkpoint, tiles and bundles; verify --tiles accepts it."""
        log.grow(300)
        serve(http_server, log.write(tmp_path / "log"))
        out = tmp_path / "mirror"
        run = cli(
            "ledger",
            "mirror",
            "--url",
            http_server.base,
            "--out",
            str(out),
            "--key",
            vkey,
            "--api-key",
            "k",
        )
        assert run.code == 0, run.err
        assert (out / "tile/0/002.p/88").is_file()
        assert (out / "tile/1/000.p/2").is_file()
        assert (out / "tile/entries/001").is_file()
        run = cli("ledger", "verify", "--tiles", str(out), "--key", vkey, "--index", "599")
        assert run.code == 0, run.err

    def test_unreachable_is_environment(self, cli: Cli, vkey: str) -> None:
        """Nothing listening is exit 3."""
        assert cli("ledger", "verify", "--url", "http://127.0.0.1:9", "--key", vkey).code == 3


class TestHelp:
    @pytest.mark.parametrize(
        "command", ["verify", "monitor", "checkpoint", "key", "search", "mirror"]
    )
    def test_help_and_json(self, cli: Cli, command: str) -> None:
        """Each ledger command documents its exit codes and offers --json."""
        run = cli("ledger", command, "--help")
        assert run.code == 0
        assert "Exit codes:" in run.out
        assert "--json" in run.out

    def test_main_returns_usage_error_without_key(self) -> None:
        """`ledger verify` without --key is a usage error."""
        assert main(["ledger", "verify", "--tiles", "."]) == 2
