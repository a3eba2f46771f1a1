"""The Ledger over HTTP in a running ``coupon up``: the auditor's walkthrough with the CLI,
who may read what, key rotation, erasure, a witness, and bad input."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.services.harness import (
    AuthorityProcess,
    Holder,
    Launcher,
    add_api_key,
    issue,
    revoke,
    unique,
)
from tests.services.ledger_support import emitter_setting, event, wire

from coupon.cli import main
from coupon.ledger import (
    CosignatureVerifier,
    Ed25519Verifier,
    hash_leaf,
    open_checkpoint,
    parse_note,
    verify_inclusion,
    verify_note,
)

LEDGER = {
    "COUPON_LEDGER_EMITTERS": f'["{emitter_setting()}"]',
    "COUPON_LEDGER_CHECKPOINT_INTERVAL": "0.05",
}


@pytest.fixture(scope="module")
def proc(module_launcher: Launcher) -> Iterator[AuthorityProcess]:
    """One embedded Authority with its Ledger for this module."""
    authority = module_launcher.start("embedded", name="ledger-http", extra=LEDGER)
    yield authority
    authority.close()


def vkey(proc: AuthorityProcess) -> str:
    """The log's first verifier key."""
    return str(proc.anon.get("/v1/ledger/key").json()["keys"][0]["vkey"])


def wait_for(
    proc: AuthorityProcess, action: str, target: str, *, api_key: str | None = None
) -> list[dict[str, Any]]:
    """Search hits for ``action`` on ``target`` once they are in a checkpoint."""
    client = proc.client if api_key is None else proc.client_with(api_key)
    deadline = time.monotonic() + 10
    while True:
        hits = client.get("/v1/ledger/search", params={"action": action, "target": target}).json()[
            "hits"
        ]
        if (hits and all(h["proof"] is not None for h in hits)) or time.monotonic() > deadline:
            return list(hits)
        time.sleep(0.05)


class TestAuditorWalkthrough:
    """An auditor proves that a revocation is in the log, trusting only the log's key."""

    def test_cli(
        self,
        proc: AuthorityProcess,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """verify (first use), revoke, search, verify --entry: OK, and the state moves on."""
        monkeypatch.setenv("COUPON_URL", proc.base_url)
        monkeypatch.setenv("COUPON_API_KEY", proc.admin_key)
        state = tmp_path / "trust.json"
        assert main(["ledger", "verify", "--key", vkey(proc), "--state", str(state)]) == 0
        jti = unique("lost-laptop")
        revoke(proc, "jti", jti)
        assert wait_for(proc, "revocation.create", f"value={jti}")
        assert (
            main(
                [
                    "ledger",
                    "search",
                    "--action",
                    "revocation.create",
                    "--target",
                    f"value={jti}",
                    "--entries-dir",
                    str(tmp_path / "hits"),
                ]
            )
            == 0
        )
        (entry,) = sorted((tmp_path / "hits").iterdir())
        assert json.loads(entry.read_text())["event"]["target"]["value"] == jti
        capsys.readouterr()
        audit_key = proc.anon.get("/v1/audit/key").json()["x"]
        args = ["ledger", "verify", "--key", vkey(proc), "--state", str(state)]
        code = main([*args, "--entry", str(entry), "--audit-key", audit_key])
        err = capsys.readouterr().err
        assert code == 0, err
        assert "is in the log" in err
        assert "carry a valid emitter signature" in err
        stranger = "A" * 43  # a valid key, not the Authority's
        assert main([*args, "--entry", str(entry), "--audit-key", stranger]) == 1
        assert "CPN-LOG-006" in capsys.readouterr().err
        trusted = json.loads(state.read_text())
        assert trusted["size"] >= 1

    def test_search_hit_proves_itself(self, proc: AuthorityProcess) -> None:
        """A search hit's proof verifies against the signed checkpoint it came with."""
        jti = unique("hit")
        revoke(proc, "jti", jti)
        page = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            page = proc.client.get("/v1/ledger/search", params={"target": f"value={jti}"}).json()
            if page["hits"] and page["hits"][0]["proof"] is not None:
                break
            time.sleep(0.05)
        assert page is not None
        (hit,) = page["hits"]
        checkpoint, _, _ = open_checkpoint(
            page["checkpoint"], [Ed25519Verifier.from_vkey(vkey(proc))]
        )
        proof = [base64.b64decode(h) for h in hit["proof"]]
        verify_inclusion(
            hit["index"],
            checkpoint.size,
            hash_leaf(hit["entry"].encode()),
            proof,
            checkpoint.root_hash,
        )


class TestWhoReadsWhat:
    """Hashes and checkpoints are public; entries and search are for auditors."""

    def test_roles(self, proc: AuthorityProcess) -> None:
        """Anonymous: 401 on entries; a verifier: 403; an auditor: 200; appends need emitter."""
        proc.client.post(
            "/v1/ledger/entries", json={"entries": [wire(event(1))]}
        ).raise_for_status()
        auditor = add_api_key(proc.database_url, ["auditor"])
        verifier = add_api_key(proc.database_url, ["verifier"])
        for path in ("/v1/ledger/tile/entries/000.p/1", "/v1/ledger/entries", "/v1/ledger/search"):
            assert proc.anon.get(path).status_code == 401, path
            assert proc.client_with(verifier).get(path).status_code == 403, path
            assert proc.client_with(auditor).get(path).status_code == 200, path
        assert proc.anon.get("/v1/ledger/tile/0/000.p/1").status_code == 200
        denied = proc.client_with(auditor).post(
            "/v1/ledger/entries", json={"entries": [wire(event(2))]}
        )
        assert denied.status_code == 403
        personal = proc.client_with(auditor).get("/v1/ledger/search", params={"personal": "true"})
        assert personal.status_code == 403


class TestReceipts:
    """An append's receipt, and with wait=true its proof in a signed checkpoint."""

    def test_wait_for_proof(self, proc: AuthorityProcess) -> None:
        """Each receipt's proof verifies against the checkpoint returned with it."""
        subs = [event(n) for n in range(100, 105)]
        answer = proc.client.post(
            "/v1/ledger/entries", params={"wait": "true"}, json={"entries": [wire(s) for s in subs]}
        ).json()
        checkpoint, _, _ = open_checkpoint(
            answer["checkpoint"], [Ed25519Verifier.from_vkey(vkey(proc))]
        )
        for receipt in answer["receipts"]:
            assert receipt["tree_size"] <= checkpoint.size
            proof = [base64.b64decode(h) for h in receipt["proof"]]
            leaf = bytes.fromhex(receipt["leaf_hash"])
            verify_inclusion(receipt["index"], checkpoint.size, leaf, proof, checkpoint.root_hash)


class TestBadInput:
    """Bad parameters get a 4xx with a code, never a 500."""

    @pytest.mark.parametrize(
        ("path", "params", "status", "code"),
        [
            ("/v1/ledger/proof/inclusion", {"index": 10**9, "tree_size": 1}, 400, "CPN-LOG-011"),
            ("/v1/ledger/proof/inclusion", {"index": 0, "tree_size": 10**12}, 400, "CPN-LOG-011"),
            ("/v1/ledger/proof/inclusion", {"leaf_hash": "zz", "tree_size": 1}, 400, "CPN-LOG-003"),
            ("/v1/ledger/proof/inclusion", {"leaf_hash": "00" * 32}, 404, "CPN-REQ-008"),
            ("/v1/ledger/proof/inclusion", {}, 422, "CPN-REQ-009"),
            ("/v1/ledger/proof/consistency", {"first": 5, "second": 2}, 400, "CPN-LOG-011"),
            ("/v1/ledger/tile/0/x000/001", {}, 400, "CPN-LOG-004"),
            ("/v1/ledger/tile/0/999", {}, 404, "CPN-REQ-008"),
            ("/v1/ledger/tile/0/..%2F..%2Fetc%2Fpasswd", {}, 400, "CPN-LOG-004"),
        ],
    )
    def test_problem(
        self, proc: AuthorityProcess, path: str, params: dict[str, Any], status: int, code: str
    ) -> None:
        """Each answers a problem document with its stable code."""
        proc.client.post(
            "/v1/ledger/entries", json={"entries": [wire(event(7))]}
        ).raise_for_status()
        response = proc.anon.get(path, params=params)
        assert response.status_code == status, response.text
        assert response.json()["code"] == code

    def test_untrusted_event(self, proc: AuthorityProcess) -> None:
        """An event signed by an unknown key is refused with CPN-LOG-006."""
        body = wire(event(3))
        body["kid"] = "audit:stranger"
        response = proc.client.post("/v1/ledger/entries", json={"entries": [body]})
        assert response.status_code == 403
        assert response.json()["code"] == "CPN-LOG-006"


class TestRotationAndErasure:
    """Checkpoint-key rotation with overlap; crypto-shredding of a subject."""

    def test_rotation(self, proc: AuthorityProcess) -> None:
        """After a rotation both keys sign; the rotation is an entry naming the new key."""
        old = vkey(proc)
        rotated = proc.client.post("/v1/ledger/keys/rotate").json()
        new = rotated["new"]
        assert rotated["retiring"][0]["vkey"] == old
        note = proc.anon.get("/v1/ledger/checkpoint").text
        _, sigs = verify_note(
            note, [Ed25519Verifier.from_vkey(old), Ed25519Verifier.from_vkey(new)]
        )
        assert len(sigs) == 2
        (hit,) = wait_for(proc, "ledger.key.rotate", f"new_vkey={new}")
        assert hit["event"]["service"] == "ledger"
        keys = proc.anon.get("/v1/ledger/key").json()["keys"]
        assert [k["active"] for k in keys] == [True, True]

    def test_erasure(self, proc: AuthorityProcess) -> None:
        """Erasing a coupon holder shreds their data; the entry and its proof remain."""
        holder = Holder()
        subject = unique("alice")
        issued = issue(proc, holder, subject=subject)
        search = {"subject": subject, "personal": "true"}
        deadline = time.monotonic() + 10
        while True:
            hits = proc.client.get("/v1/ledger/search", params=search).json()["hits"]
            if hits or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        (hit,) = hits
        assert hit["event"]["target"]["jti"] == issued["jti"]
        assert hit["personal"]["subject"] == subject
        assert subject not in hit["entry"]
        erased = proc.client.delete(f"/v1/ledger/subjects/{subject}").json()
        assert erased["erased"] is True
        (after,) = proc.client.get("/v1/ledger/search", params=search).json()["hits"]
        assert after["personal"] == {"error": "CPN-LOG-012"}
        assert after["entry"] == hit["entry"]


class TestWitness:
    """A witness cosigns the log's checkpoints; the cosignature travels with the checkpoint."""

    def test_cosigned(self, launcher: Launcher, tmp_path: Path) -> None:
        """coupon ledger witness + COUPON_LEDGER_WITNESSES: the served checkpoint is cosigned."""
        first = launcher.start("embedded", name="witnessed", extra=LEDGER)
        log_vkey = vkey(first)
        first.terminate()
        witness = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "coupon.cli",
                "ledger",
                "witness",
                "--key-file",
                str(tmp_path / "w.key"),
                "--name",
                "witness.test/w1",
                "--log-key",
                log_vkey,
                "--state",
                str(tmp_path / "w.db"),
                "--port",
                "0",
            ],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert witness.stderr is not None
            witness_vkey = witness.stderr.readline().strip()
            port = None
            deadline = time.monotonic() + 20
            while port is None and time.monotonic() < deadline:
                line = witness.stderr.readline()
                if "running on" in line:
                    port = int(line.rsplit(":", 1)[1].split()[0])
            assert port is not None
            first.env["COUPON_LEDGER_WITNESSES"] = json.dumps(
                [f"{witness_vkey} http://127.0.0.1:{port}"]
            )
            first.start()
            revoke(first, "jti", unique("w"))
            deadline = time.monotonic() + 10
            cosigned: tuple[Any, ...] = ()
            while not cosigned and time.monotonic() < deadline:
                note = first.anon.get("/v1/ledger/checkpoint").text
                try:
                    _, cosigned = verify_note(note, [CosignatureVerifier.from_vkey(witness_vkey)])
                except Exception:
                    time.sleep(0.1)
            assert cosigned, "the checkpoint carries the witness's cosignature"
            args = ["ledger", "verify", "--url", first.base_url, "--key", log_vkey]
            assert main([*args, "--key", witness_vkey, "--witness-quorum", "1"]) == 0
            assert main([*args, "--witness-quorum", "1"]) == 1  # the witness is not trusted
            assert len(parse_note(note).signatures) == 2
            metrics = httpx.get(f"{first.base_url}/metrics").text
            assert (
                'coupon_ledger_witness_requests_total{outcome="ok",witness="witness.test/w1"}'
                in metrics
            )
        finally:
            witness.terminate()
            witness.wait(timeout=10)
            if witness.stderr is not None:
                witness.stderr.close()
