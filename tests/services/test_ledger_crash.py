"""Nothing acknowledged is lost from the Ledger, and it never contradicts itself.

Many cycles of heavy appends (and revocations, relayed from the Authority's outbox), a
``kill -9`` at a random moment, and a restart; afterwards every acknowledged entry is at
the index its receipt named, every acknowledged revocation is in the log exactly once, and
every new checkpoint is consistent with every earlier one (PRODUCT.md §6, issue: the
Ledger). The same on PostgreSQL, including a restart of PostgreSQL in the middle of a stream.
"""

from __future__ import annotations

import base64
import random
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from tests.services.conftest import unavailable
from tests.services.harness import AuthorityProcess, Launcher
from tests.services.ledger_support import emitter_setting, event, wire

from coupon.ledger import (
    Checkpoint,
    Ed25519Verifier,
    hash_leaf,
    open_checkpoint,
    verify_consistency,
)

BATCH = 40
APPENDERS = 3
LEDGER = {
    "COUPON_LEDGER_EMITTERS": f'["{emitter_setting()}"]',
    "COUPON_LEDGER_CHECKPOINT_INTERVAL": "0.05",
}


@dataclass
class Observed:
    """What the test was told: receipts, revocations and checkpoints."""

    receipts: dict[int, str] = field(default_factory=dict)  # index -> leaf hash hex
    revoked: set[str] = field(default_factory=set)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    counter: int = 0

    def next_ids(self, n: int) -> range:
        with self.lock:
            start = self.counter
            self.counter += n
        return range(start, start + n)


def _append_until_dead(proc: AuthorityProcess, seen: Observed, stop: threading.Event) -> None:
    with httpx.Client(
        base_url=proc.base_url, headers={"X-API-Key": proc.admin_key}, timeout=10
    ) as client:
        while not stop.is_set():
            body = {"entries": [wire(event(n)) for n in seen.next_ids(BATCH)]}
            try:
                response = client.post("/v1/ledger/entries", json=body)
            except httpx.HTTPError:
                return
            if response.status_code != 201:
                continue  # refused (e.g. 503 while the database restarts): not acknowledged
            with seen.lock:
                for receipt in response.json()["receipts"]:
                    seen.receipts[receipt["index"]] = receipt["leaf_hash"]


def _revoke_until_dead(proc: AuthorityProcess, seen: Observed, stop: threading.Event) -> None:
    with httpx.Client(
        base_url=proc.base_url, headers={"X-API-Key": proc.admin_key}, timeout=10
    ) as client:
        while not stop.is_set():
            value = f"crash-{seen.next_ids(1)[0]}"
            try:
                response = client.post(
                    "/v1/revocations", json={"kind": "jti", "value": value, "reason": "crash loop"}
                )
            except httpx.HTTPError:
                return
            if response.status_code == 201:
                with seen.lock:
                    seen.revoked.add(value)


def _stream(
    proc: AuthorityProcess, seen: Observed, *, seconds: float, crash: bool, during: object = None
) -> None:
    stop = threading.Event()
    workers = [
        threading.Thread(target=_append_until_dead, args=(proc, seen, stop))
        for _ in range(APPENDERS)
    ]
    workers.append(threading.Thread(target=_revoke_until_dead, args=(proc, seen, stop)))
    for worker in workers:
        worker.start()
    time.sleep(seconds)
    if callable(during):
        during()
        time.sleep(seconds)
    if crash:
        proc.kill9()
    stop.set()
    for worker in workers:
        worker.join(timeout=30)


def _checkpoint(proc: AuthorityProcess, vkey: str, at_least: int) -> Checkpoint:
    deadline = time.monotonic() + 15
    while True:
        note = proc.anon.get("/v1/ledger/checkpoint").text
        checkpoint, _, _ = open_checkpoint(note, [Ed25519Verifier.from_vkey(vkey)])
        if checkpoint.size >= at_least or time.monotonic() > deadline:
            return checkpoint
        time.sleep(0.05)


def _check(proc: AuthorityProcess, vkey: str, seen: Observed) -> None:
    """Every acknowledged entry and revocation is there; the log agrees with its past."""
    with seen.lock:
        receipts = dict(seen.receipts)
        revoked = set(seen.revoked)
    checkpoint = _checkpoint(proc, vkey, max(receipts, default=-1) + 1)
    assert checkpoint.size > max(receipts, default=-1), "a checkpoint covers every receipt"
    stored: dict[int, str] = {}
    for start in range(0, checkpoint.size, 1000):
        page = proc.client.get("/v1/ledger/entries", params={"start": start, "end": start + 1000})
        assert page.status_code == 200, page.text
        for entry in page.json()["entries"]:
            assert hash_leaf(entry["entry"].encode()).hex() == entry["leaf_hash"]
            stored[entry["index"]] = entry["leaf_hash"]
    lost = {i: h for i, h in receipts.items() if stored.get(i) != h}
    assert not lost, f"acknowledged entries missing or changed: {sorted(lost)[:10]}"
    # Revocations go through the Authority's outbox: each exactly once in the log.
    deadline = time.monotonic() + 15
    while True:
        found: list[str] = []
        after = -1
        while True:
            page = proc.client.get(
                "/v1/ledger/search",
                params={"action": "revocation.create", "after": after, "limit": 200},
            ).json()
            found += [h["event"]["target"]["value"] for h in page["hits"]]
            if page["next"] is None:
                break
            after = page["next"]
        if revoked <= set(found) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert revoked <= set(found), (
        f"acknowledged revocations not in the log: {sorted(revoked - set(found))[:5]}"
    )
    assert len(found) == len(set(found)), "a relayed event appears twice"
    for old in seen.checkpoints:
        if old.size == 0:
            continue
        answer = proc.anon.get(
            "/v1/ledger/proof/consistency", params={"first": old.size, "second": checkpoint.size}
        ).json()
        proof = [base64.b64decode(h) for h in answer["proof"]]
        verify_consistency(old.size, checkpoint.size, proof, old.root_hash, checkpoint.root_hash)
    seen.checkpoints.append(checkpoint)


def _crash_loop(proc: AuthorityProcess, cycles: int, *, during: object = None) -> Observed:
    vkey = proc.anon.get("/v1/ledger/key").json()["keys"][0]["vkey"]
    seen = Observed()
    rng = random.Random(20261205)
    for cycle in range(cycles):
        _stream(
            proc,
            seen,
            seconds=rng.uniform(0.4, 1.2),
            crash=True,
            during=during if cycle == 1 else None,
        )
        proc.restart()
        _check(proc, vkey, seen)
    assert len(seen.receipts) > cycles * BATCH, "the stream was heavy enough to matter"
    return seen


@pytest.mark.slow
class TestCrashLoop:
    """kill -9 during heavy appends, restart, check; many times."""

    def test_embedded(self, launcher: Launcher) -> None:
        """SQLite: no acknowledged entry or revocation lost; checkpoints always consistent."""
        proc = launcher.start("embedded", extra=LEDGER)
        seen = _crash_loop(proc, 8)
        assert len(seen.checkpoints) == 8

    def test_postgresql(self, launcher: Launcher) -> None:
        """PostgreSQL: the same, with the database itself restarted in the middle of a stream."""
        if shutil.which("pg_ctlcluster") is None:
            unavailable("pg_ctlcluster (to restart PostgreSQL)", FileNotFoundError("pg_ctlcluster"))
        proc = launcher.start("production", extra=LEDGER)
        version = sorted(p.name for p in Path("/etc/postgresql").iterdir())[-1]

        def restart_postgres() -> None:
            subprocess.run(
                ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
                check=True,
                timeout=120,
                capture_output=True,
            )

        _crash_loop(proc, 4, during=restart_postgres)
