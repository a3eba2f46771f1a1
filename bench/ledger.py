"""The Ledger: durable ingest, proof latency at large sizes, and pymerkle side by side.

Three parts, one process, one machine, one run:

a. **Ingest.** ``--entries`` signed audit events go through :meth:`Ledger.append` on SQLite
   (a temp dir, WAL, ``synchronous=FULL``) from ``--concurrency`` coroutines (1024 in
   flight: many services appending at once; with only as many in flight as one batch
   holds, each batch waits for the previous one's receipts, so nothing overlaps).
   An entry counts only when its receipt arrives, and a receipt is only handed out after the
   batch holding it is committed. The ledger runs with its default checkpoint interval
   (0.25 s); ``Ledger.publish`` is wrapped to timestamp every checkpoint, and an entry's
   *integration latency* is the time from its receipt to the first checkpoint whose size
   covers it. Events are built and signed (as ``StoreAuditSink.prepare`` does) before timing.

b. **Proofs at large sizes** (``--sizes``, default 1M and 10M). Appending 10M entries through
   the service would take hours, so the tree is built directly: ``TileBuilder`` over
   synthetic leaves (leaf ``i`` is ``hash_leaf(i.to_bytes(8, "big"))``) writes its tiles
   straight into a Ledger SQLite database (``LedgerWrite.put_tiles``, in batches of 64 Ki
   leaves). There are no entry rows, so the service's head is set by hand: a ``Ledger`` object
   is built over that store (sequencer and publisher not started) and its
   ``sequencer.head`` set to the built tree; the timed calls are then the real
   ``Ledger.inclusion_proof`` / ``Ledger.consistency_proof`` (plan, the tile cache of 4096
   tiles and the cache of hashed tile interiors, ``LedgerStore.tiles``, ``TilePlan.hashes``,
   ``Nodes.rehash``). Two cache regimes: ``lru`` starts with empty caches and keeps them
   across the series (the service), ``uncached`` empties the tile cache before every proof
   (every tile read from SQLite). The database
   was just written, so its pages are in the OS page cache in both. A sample of proofs is
   verified against the root computed independently (``RightBorder``) while building.

c. **pymerkle 7.0.0** (``SqliteTree``), side by side: append throughput into its SQLite tree
   versus ours, and inclusion/consistency proof times on the same tree (``--peer-size``
   leaves: the same leaf bytes in both, so the roots must be equal) for the same random
   challenges, with ratios ours/theirs. The durability each offers is stated in the output.

Usage::

    .venv/bin/python bench/ledger.py                 # 1M and 10M, about 8-10 minutes
    .venv/bin/python bench/ledger.py --quick         # 100k and 1M, under a minute
    .venv/bin/python bench/ledger.py --entries 50000 --sizes 1000000 --proofs 5000

One JSON document goes to stdout (``--json FILE`` also writes it to FILE); a short table and
progress go to stderr. Not run in CI.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import gc
import hashlib
import json
import math
import os
import platform
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any, cast

import pymerkle

from coupon.authority._audit import AuditEvent, AuditSigner, StoreAuditSink
from coupon.keys import MasterKey
from coupon.ledger import (
    RightBorder,
    TileBuilder,
    hash_leaf,
    verify_consistency,
    verify_inclusion,
)
from coupon.ledger_service import Head, Ledger, LedgerConfig, Receipt, Submission
from coupon.ledger_service._signing import CheckpointKeys
from coupon.ledger_service._subjects import SubjectVault
from coupon.observability import LedgerMetrics
from coupon.storage.ledger_sql import CheckpointRow, LedgerStore

ORIGIN = "bench.example/ledger"
BUILD_CHUNK = 1 << 16  # leaves per TileBuilder.append / put_tiles transaction
VERIFY_SAMPLE = 200  # proofs per series checked against the root
TARGETS = {"ingest_entries_per_s": 10_000, "integration_p99_s": 1.0, "proof_p99_ms": 5.0}


def log(message: str) -> None:
    print(f"[ledger] {message}", file=sys.stderr, flush=True)


# -- statistics ----------------------------------------------------------------------------------


def _percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted samples."""
    if not ordered:
        return math.nan
    index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[index]


def summary_ms(seconds: Sequence[float]) -> dict[str, Any]:
    """p50/p99/p99.9/max/mean in milliseconds (3 decimals) and the sample count."""
    ordered = sorted(seconds)
    if not ordered:
        return {"n": 0}

    def ms(value: float) -> float:
        return round(value * 1000.0, 3)

    return {
        "p50_ms": ms(_percentile(ordered, 0.50)),
        "p99_ms": ms(_percentile(ordered, 0.99)),
        "p999_ms": ms(_percentile(ordered, 0.999)),
        "max_ms": ms(ordered[-1]),
        "mean_ms": ms(sum(ordered) / len(ordered)),
        "n": len(ordered),
    }


def ratio(ours: float | None, theirs: float | None) -> float | None:
    if ours is None or theirs is None or theirs == 0:
        return None
    return round(ours / theirs, 4)


def machine_info(loadavg_at_start: tuple[float, float, float]) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "os": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "loadavg_at_start": [round(x, 2) for x in loadavg_at_start],
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "versions": {
            name: metadata.version(name)
            for name in ("coupon-authority", "pymerkle", "sqlalchemy", "aiosqlite")
        },
        "sqlite": __import__("sqlite3").sqlite_version,
    }


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


# -- a. ingest -----------------------------------------------------------------------------------


def make_submissions(n: int) -> list[Submission]:
    """``n`` signed v1 audit events, built exactly as ``StoreAuditSink.prepare`` builds them."""
    sink = StoreAuditSink(store=cast(Any, None), signer=AuditSigner.from_seed(b"\x01" * 32))
    out = []
    for i in range(n):
        record = sink.prepare(
            AuditEvent(
                action="coupon.issue" if i % 3 else "coupon.verify",
                result="ok" if i % 17 else "denied",
                actor={"type": "api_key", "id": f"key-{i % 100}"},
                target={"jti": uuid.uuid4().hex, "tenant": "acme", "audience": "orders-api"},
                reason="" if i % 17 else "policy denied the request",
                code=None if i % 17 else "CPN-POL-001",
                trace_id=uuid.uuid4().hex,
                request_id=uuid.uuid4().hex[:16],
                lineage=uuid.uuid4().hex[:22],
                policy_version="builtin-1",
            )
        )
        out.append(Submission(record.event, record.signature, record.kid, record.personal))
    return out


async def _append_all(
    ledger: Ledger, subs: Sequence[Submission], concurrency: int
) -> tuple[float, list[tuple[float, int]]]:
    """Append ``subs`` from ``concurrency`` coroutines; (elapsed s, [(receipt time, index)])."""
    receipts: list[tuple[float, int]] = []
    next_item = 0

    async def worker() -> None:
        nonlocal next_item
        while next_item < len(subs):
            sub = subs[next_item]
            next_item += 1
            receipt: Receipt = await ledger.append(sub, verify=False)
            receipts.append((time.perf_counter(), receipt.index))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(subs)))))
    return time.perf_counter() - started, receipts


def _commit_stats(ledger: Ledger) -> dict[str, Any]:
    count = total = 0.0
    for metric in ledger.metrics.batch_seconds.collect():
        for sample in metric.samples:
            if sample.name.endswith("_count"):
                count = sample.value
            elif sample.name.endswith("_sum"):
                total = sample.value
    return {
        "commits": int(count),
        "mean_commit_ms": round(total / count * 1000, 3) if count else None,
    }


async def run_ingest(
    args: argparse.Namespace, workdir: Path, subs: Sequence[Submission], warmup: int
) -> dict[str, Any]:
    sequential = subs[: args.sequential]
    ledger = await Ledger.start(
        LedgerConfig(database_url=sqlite_url(workdir / "ingest.db"), origin=ORIGIN),
        MasterKey(os.urandom(32)),
    )
    checkpoints: list[tuple[float, int]] = []  # (published at, size)
    original = ledger.publish

    async def publish(*, force: bool = False) -> CheckpointRow | None:
        row = await original(force=force)
        if row is not None:
            checkpoints.append((time.perf_counter(), row.size))
        return row

    setattr(ledger, "publish", publish)  # noqa: B010  the publisher task looks it up per round
    try:
        await _append_all(ledger, subs[:warmup], args.concurrency)
        gc.collect()
        commits0 = _commit_stats(ledger)["commits"]
        cpu0 = time.process_time()
        elapsed, receipts = await _append_all(ledger, subs[warmup:], args.concurrency)
        cpu = time.process_time() - cpu0
        stats = _commit_stats(ledger)
        log(f"ingest: {args.entries} entries in {elapsed:.2f} s; waiting for the checkpoint")
        deadline = time.monotonic() + 10
        last = max(index for _, index in receipts)
        while time.monotonic() < deadline and not (checkpoints and checkpoints[-1][1] > last):
            await asyncio.sleep(0.05)
        # Sequential appends: one in flight, each awaiting its own commit (pymerkle's shape).
        seq_started = time.perf_counter()
        seq_latency = []
        for sub in sequential:
            t0 = time.perf_counter()
            await ledger.append(sub, verify=False)
            seq_latency.append(time.perf_counter() - t0)
            if time.perf_counter() - seq_started > args.peer_seconds:
                break
        seq_elapsed = time.perf_counter() - seq_started
    finally:
        await ledger.stop()
    sizes = [size for _, size in checkpoints]
    integration, early, missing = [], 0, 0
    for at, index in receipts:
        k = bisect.bisect_right(sizes, index)  # first checkpoint with size > index
        if k == len(sizes):
            missing += 1
            continue
        delta = checkpoints[k][0] - at
        early += delta < 0
        integration.append(max(delta, 0.0))
    rate = len(receipts) / elapsed
    return {
        "entries": len(receipts),
        "warmup_entries": warmup,
        "concurrency": args.concurrency,
        "elapsed_s": round(elapsed, 3),
        "entries_per_s": round(rate),
        "cpu_util": round(cpu / elapsed, 3),
        "cpu_us_per_entry": round(cpu / len(receipts) * 1e6, 2),
        "commits": stats["commits"] - commits0,
        "mean_commit_ms_incl_warmup": stats["mean_commit_ms"],
        "mean_entries_per_commit": round(len(receipts) / max(stats["commits"] - commits0, 1), 1),
        "event_bytes_mean": round(sum(len(s.event) for s in subs) / len(subs)),
        "integration": {
            **summary_ms(integration),
            "checkpoints": len(checkpoints),
            "checkpoint_interval_s": LedgerConfig("", "").checkpoint_interval,
            "checkpoint_before_receipt": early,
            "never_checkpointed": missing,
            "meaning": "receipt (after commit) -> first signed checkpoint covering the entry;"
            " a checkpoint that landed before the appender resumed counts as 0",
        },
        "sequential": {
            "entries": len(seq_latency),
            "entries_per_s": round(len(seq_latency) / seq_elapsed) if seq_latency else None,
            "latency": summary_ms(seq_latency),
            "meaning": "one append in flight, each awaiting its own commit",
        },
        "durability": "SQLite WAL + synchronous=FULL; a receipt is returned only after the "
        "COMMIT of the batch holding the entry (group commit, <= 1024 per batch), which also "
        "stores its search columns and every changed tile",
        "events": "signed v1 audit events without personal data (no subject key work)",
    }


# -- b. proofs from tiles ------------------------------------------------------------------------


def leaf_data(i: int) -> bytes:
    return i.to_bytes(8, "big")


def leaf_hashes(start: int, end: int) -> list[bytes]:
    sha = hashlib.sha256
    return [sha(b"\x00" + i.to_bytes(8, "big")).digest() for i in range(start, end)]


class TileTree:
    """A Ledger tile database grown by ``TileBuilder`` over the synthetic leaves."""

    def __init__(self, store: LedgerStore) -> None:
        self.store = store
        self.builder = TileBuilder()
        self.border = RightBorder()

    async def grow(self, size: int) -> float:
        started = time.perf_counter()
        while self.builder.size < size:
            start = self.builder.size
            end = min(size, start + BUILD_CHUNK)
            hashes = leaf_hashes(start, end)
            changed = self.builder.append(hashes)
            self.border.extend(hashes)
            async with self.store.writing() as write:
                await write.put_tiles(changed)
            if end % (BUILD_CHUNK * 32) == 0:
                log(f"  tiles: {end:,} leaves ({time.perf_counter() - started:.1f} s)")
        return time.perf_counter() - started

    def root(self) -> bytes:
        return self.border.root()


def proof_ledger(store: LedgerStore, size: int, root: bytes) -> Ledger:
    """A Ledger over ``store`` (not started) whose head is the tile-built tree."""
    master = MasterKey(os.urandom(32))
    config = LedgerConfig(database_url="sqlite://", origin=ORIGIN)
    ledger = Ledger(
        config,
        store,
        CheckpointKeys(store, master, ORIGIN),
        SubjectVault(store, master),
        LedgerMetrics(),
    )
    ledger.sequencer.head = Head(size, root)
    return ledger


Call = Callable[[], Awaitable[list[bytes]]]


async def timed_series(
    ledger: Ledger, calls: Sequence[Call], *, uncached: bool
) -> tuple[list[float], list[list[bytes]]]:
    ledger._tiles.clear()  # the tile cache and the interiors cache start cold
    ledger._interiors.clear()
    gc.collect()
    gc.disable()
    times, proofs = [], []
    try:
        for call in calls:
            if uncached:
                ledger._tiles.clear()
            t0 = time.perf_counter()
            proof = await call()
            times.append(time.perf_counter() - t0)
            proofs.append(proof)
    finally:
        gc.enable()
    return times, proofs


def challenges(size: int, n: int, seed: int) -> tuple[list[int], list[int]]:
    rng = random.Random(seed)
    return [rng.randrange(size) for _ in range(n)], [rng.randint(1, size - 1) for _ in range(n)]


async def our_proofs(
    tree: TileTree, size: int, indices: list[int], olds: list[int]
) -> dict[str, Any]:
    root = tree.root()
    ledger = proof_ledger(tree.store, size, root)
    out: dict[str, Any] = {}
    for kind in ("inclusion", "consistency"):
        if kind == "inclusion":
            calls: list[Call] = [partial(ledger.inclusion_proof, i, size) for i in indices]
        else:
            calls = [partial(ledger.consistency_proof, s, size) for s in olds]
        out[kind] = {}
        for regime in ("lru", "uncached"):
            times, proofs = await timed_series(ledger, calls, uncached=regime == "uncached")
            out[kind][regime] = summary_ms(times)
            if regime == "lru":
                out[kind]["first_proof_cold_ms"] = round(times[0] * 1000, 3)
                out[kind]["proof_hashes_mean"] = round(sum(map(len, proofs)) / len(proofs), 2)
                checked = 0
                for j in range(min(VERIFY_SAMPLE, len(proofs))):
                    if kind == "inclusion":
                        i = indices[j]
                        verify_inclusion(i, size, hash_leaf(leaf_data(i)), proofs[j], root)
                    else:
                        old_root = await ledger.root(olds[j])
                        verify_consistency(olds[j], size, proofs[j], old_root, root)
                    checked += 1
                out[kind]["verified"] = checked
    return out


# -- c. pymerkle ---------------------------------------------------------------------------------


def pymerkle_appends(
    workdir: Path, subs: Sequence[Submission], seconds: float, batch: int
) -> dict[str, Any]:
    """pymerkle's SqliteTree: append_entry one by one, then append_entries in batches."""
    data = [s.event for s in subs]
    tree = pymerkle.SqliteTree(str(workdir / "pymerkle-append-1.db"))
    started = time.perf_counter()
    latency = []
    for entry in data:
        t0 = time.perf_counter()
        tree.append_entry(entry)
        latency.append(time.perf_counter() - t0)
        if time.perf_counter() - started > seconds:
            break
    single_elapsed = time.perf_counter() - started
    tree.close()
    tree = pymerkle.SqliteTree(str(workdir / "pymerkle-append-batch.db"))
    started = time.perf_counter()
    for k in range(0, len(data), batch):
        tree.append_entries(data[k : k + batch])
    batch_elapsed = time.perf_counter() - started
    tree.close()
    return {
        "append_entry": {
            "entries": len(latency),
            "entries_per_s": round(len(latency) / single_elapsed),
            "latency": summary_ms(latency),
            "meaning": f"one call per entry, one thread, for at most {seconds} s",
        },
        "append_entries_batched": {
            "entries": len(data),
            "batch": batch,
            "entries_per_s": round(len(data) / batch_elapsed),
            "meaning": "append_entries() per batch: one transaction per batch",
        },
        "durability": "sqlite3 defaults: rollback journal (journal_mode=DELETE), "
        "synchronous=FULL; append_entry commits one row per call, append_entries one "
        "transaction per call; stores the entry and its leaf hash only (no tree nodes)",
    }


def pymerkle_build(workdir: Path, size: int) -> tuple[Any, float]:
    path = workdir / f"pymerkle-{size}.db"
    tree = pymerkle.SqliteTree(str(path))
    started = time.perf_counter()
    tree.append_entries(leaf_data(i) for i in range(size))
    elapsed = time.perf_counter() - started
    tree.close()
    return path, elapsed


def pymerkle_proofs(
    path: Path, size: int, indices: list[int], olds: list[int], our_root: bytes
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    tree = pymerkle.SqliteTree(str(path))
    theirs_root = tree.get_root(size)
    out["roots_equal"] = theirs_root == our_root
    tree.close()
    for kind in ("inclusion", "consistency"):
        tree = pymerkle.SqliteTree(str(path))  # a fresh object: empty subroot cache
        gc.collect()
        gc.disable()
        times, proofs = [], []
        try:
            for j in range(len(indices)):
                t0 = time.perf_counter()
                if kind == "inclusion":
                    proof = tree.prove_inclusion(indices[j] + 1, size)  # 1-based
                else:
                    proof = tree.prove_consistency(olds[j], size)
                times.append(time.perf_counter() - t0)
                proofs.append(proof)
        finally:
            gc.enable()
        # Their verifier on a sample, so that the proofs timed are real ones.
        for j in range(min(20, len(proofs))):
            if kind == "inclusion":
                base = tree.get_leaf(indices[j] + 1)
                pymerkle.verify_inclusion(base, theirs_root, proofs[j])
            else:
                pymerkle.verify_consistency(tree.get_root(olds[j]), theirs_root, proofs[j])
        out[kind] = {
            "warming": summary_ms(times),
            "first_proof_cold_ms": round(times[0] * 1000, 3),
            "cache": str(tree.get_cache_info()),
        }
        tree.close()
    return out


# -- the run -------------------------------------------------------------------------------------


async def run_proofs(args: argparse.Namespace, workdir: Path) -> tuple[dict[str, Any], Any]:
    store = await LedgerStore.connect(sqlite_url(workdir / "tiles.db"))
    await store.migrate()
    tree = TileTree(store)
    assert leaf_hashes(5, 6)[0] == hash_leaf(leaf_data(5))
    results: dict[str, Any] = {}
    peer: dict[str, Any] = {}
    try:
        for size in sorted({*args.sizes, args.peer_size}):
            log(f"proofs: building tiles to {size:,} leaves")
            build_s = await tree.grow(size)
            log(f"proofs: built in {build_s:.1f} s")
            indices, olds = challenges(size, args.proofs, seed=size)
            log(f"proofs: {args.proofs} inclusion + consistency proofs at {size:,}")
            ours = await our_proofs(tree, size, indices, olds)
            ours["build_s"] = round(build_s, 2)
            if size in args.sizes:
                results[str(size)] = ours
            if size == args.peer_size:
                log(f"pymerkle: building SqliteTree of {size:,} leaves")
                path, their_build = pymerkle_build(workdir, size)
                n = min(args.proofs, args.peer_proofs)
                log(f"pymerkle: {n} inclusion + consistency proofs at {size:,}")
                theirs = pymerkle_proofs(path, size, indices[:n], olds[:n], tree.root())
                theirs["build_s"] = round(their_build, 2)
                ours_same = (
                    ours
                    if n == len(indices)
                    else await our_proofs(tree, size, indices[:n], olds[:n])
                )
                peer = {"size": size, "proofs": n, "ours": ours_same, "pymerkle": theirs}
                peer["ratios_ours_over_theirs"] = {
                    f"{kind}_{stat}": ratio(
                        ours_same[kind]["lru"][stat], theirs[kind]["warming"][stat]
                    )
                    for kind in ("inclusion", "consistency")
                    for stat in ("p50_ms", "p99_ms", "p999_ms", "mean_ms")
                } | {
                    f"{kind}_first_proof_cold": ratio(
                        ours_same[kind]["first_proof_cold_ms"],
                        theirs[kind]["first_proof_cold_ms"],
                    )
                    for kind in ("inclusion", "consistency")
                }
    finally:
        await store.close()
    return results, peer


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    load_at_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="coupon-bench-ledger-") as tmp:
        workdir = Path(tmp)
        warmup = min(2_000, max(args.entries // 10, 100))
        log(f"signing {args.entries + warmup} audit events (not timed)")
        subs = make_submissions(args.entries + warmup)
        ingest = await run_ingest(args, workdir, subs, warmup)
        log(
            f"ingest: {ingest['entries_per_s']} entries/s, integration p50 "
            f"{ingest['integration'].get('p50_ms')} ms p99 {ingest['integration'].get('p99_ms')} ms"
        )
        log("pymerkle: appends")
        appends = pymerkle_appends(workdir, subs[warmup:], args.peer_seconds, args.batch)
        proofs, peer = await run_proofs(args, workdir)
    peer["appends"] = {
        "pymerkle": appends,
        "ours": {
            "concurrent": {
                "entries_per_s": ingest["entries_per_s"],
                "meaning": f"{args.concurrency} appends in flight, group commit",
            },
            "sequential": ingest["sequential"],
            "durability": ingest["durability"],
        },
        "ratios_ours_over_theirs": {
            "concurrent_vs_append_entry": ratio(
                ingest["entries_per_s"], appends["append_entry"]["entries_per_s"]
            ),
            "concurrent_vs_append_entries_batched": ratio(
                ingest["entries_per_s"], appends["append_entries_batched"]["entries_per_s"]
            ),
            "sequential_vs_append_entry": ratio(
                ingest["sequential"]["entries_per_s"], appends["append_entry"]["entries_per_s"]
            ),
        },
        "note": "pymerkle is synchronous and does no event parsing, canonical-JSON check, "
        "search columns or tile writes; ours goes through Ledger.append (verify=False)",
    }
    worst_p99 = max(
        (
            proofs[s][k][r]["p99_ms"]
            for s in proofs
            for k in ("inclusion", "consistency")
            for r in ("lru", "uncached")
        ),
        default=math.nan,
    )
    integration_p99 = ingest["integration"].get("p99_ms", math.inf) / 1000
    return {
        "benchmark": "ledger",
        "service": "as shipped",
        "machine": machine_info(load_at_start),
        "config": {
            "entries": args.entries,
            "concurrency": args.concurrency,
            "sizes": args.sizes,
            "proofs": args.proofs,
            "peer_size": args.peer_size,
            "peer_proofs": args.peer_proofs,
            "quick": args.quick,
        },
        "ingest": ingest,
        "proofs": {
            "method": "tiles written by TileBuilder over synthetic leaves straight into a "
            "Ledger SQLite DB (no entry rows); timed calls are the real "
            "Ledger.inclusion_proof/consistency_proof on a Ledger object (not started) whose "
            "sequencer.head is set to the built tree. lru: the service's 4096-full-tile LRU, "
            "empty at the start of each series; uncached: emptied before every proof. The DB "
            "file is in the OS page cache. Challenges: uniform random index / old size.",
            "sizes": proofs,
        },
        "peer": peer,
        "targets": {
            "ingest_entries_per_s>=10000": ingest["entries_per_s"]
            >= TARGETS["ingest_entries_per_s"],
            "integration_p99<1s": integration_p99 < TARGETS["integration_p99_s"],
            "proof_p99<5ms(all sizes, both regimes)": worst_p99 < TARGETS["proof_p99_ms"],
        },
    }


def table(doc: dict[str, Any]) -> str:
    ing = doc["ingest"]
    lines = [
        f"ingest  {ing['entries']:>9,} entries  {ing['entries_per_s']:>7,}/s  "
        f"integration p50 {ing['integration'].get('p50_ms')} ms  "
        f"p99 {ing['integration'].get('p99_ms')} ms  "
        f"(sequential {ing['sequential']['entries_per_s']}/s)",
        f"{'size':>11} {'proof':<12} {'cache':<9} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9}",
    ]
    for size, res in doc["proofs"]["sizes"].items():
        for kind in ("inclusion", "consistency"):
            for regime in ("lru", "uncached"):
                s = res[kind][regime]
                lines.append(
                    f"{int(size):>11,} {kind:<12} {regime:<9} {s['p50_ms']:>8} "
                    f"{s['p99_ms']:>8} {s['p999_ms']:>9}"
                )
    peer = doc["peer"]
    if "pymerkle" in peer:
        for kind in ("inclusion", "consistency"):
            o, t = peer["ours"][kind]["lru"], peer["pymerkle"][kind]["warming"]
            lines.append(
                f"{peer['size']:>11,} {kind:<12} ours p50/p99 {o['p50_ms']}/{o['p99_ms']} ms, "
                f"pymerkle {t['p50_ms']}/{t['p99_ms']} ms "
                f"(first {peer['pymerkle'][kind]['first_proof_cold_ms']} ms)"
            )
    ap = peer["appends"]["pymerkle"]
    lines.append(
        f"appends  ours {ing['entries_per_s']:,}/s concurrent, {ing['sequential']['entries_per_s']}"
        f"/s sequential; pymerkle {ap['append_entry']['entries_per_s']}/s append_entry, "
        f"{ap['append_entries_batched']['entries_per_s']:,}/s append_entries batched"
    )
    lines.append(f"targets {doc['targets']}")
    return "\n".join(lines)


def _int_list(text: str) -> list[int]:
    return [int(part.replace("_", "")) for part in text.split(",") if part.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=100_000, help="appends in the ingest run")
    parser.add_argument("--concurrency", type=int, default=1024, help="appends in flight")
    parser.add_argument(
        "--sizes", type=_int_list, default=None, help="tree sizes for proofs (1000000,10000000)"
    )
    parser.add_argument("--proofs", type=int, default=2_000, help="proofs per series and size")
    parser.add_argument("--peer-size", type=int, default=None, help="tree size vs pymerkle (1M)")
    parser.add_argument("--peer-proofs", type=int, default=2_000, help="proofs per peer series")
    parser.add_argument("--peer-seconds", type=float, default=5.0, help="bound on 1-by-1 runs")
    parser.add_argument("--sequential", type=int, default=5_000, help="1-in-flight appends")
    parser.add_argument("--batch", type=int, default=1024, help="pymerkle append_entries batch")
    parser.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="FILE",
        help="the JSON document always goes to stdout; with FILE, also to FILE",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run (about a minute)")
    args = parser.parse_args(argv)
    if args.quick:
        args.entries = min(args.entries, 20_000)
        args.sizes = args.sizes or [100_000, 1_000_000]
        args.proofs = min(args.proofs, 1_000)
        args.peer_size = args.peer_size or 100_000
        args.peer_proofs = min(args.peer_proofs, 1_000)
        args.peer_seconds = min(args.peer_seconds, 2.0)
        args.sequential = min(args.sequential, 1_000)
    args.sizes = args.sizes or [1_000_000, 10_000_000]
    args.peer_size = args.peer_size or 1_000_000
    if args.entries < 1 or args.concurrency < 1 or args.proofs < 1 or min(args.sizes) < 2:
        parser.error("--entries, --concurrency, --proofs must be positive, sizes >= 2")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    doc = asyncio.run(main_async(args))
    text = json.dumps(doc, indent=2)
    if args.json and args.json != "-":
        Path(args.json).write_text(text + "\n")
    print(table(doc), file=sys.stderr)
    sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
