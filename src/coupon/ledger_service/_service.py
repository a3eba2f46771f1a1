"""The Ledger service: appends, checkpoints, proofs, tiles, entries, audit search.

HTTP-free (routes in ``_routes``). Proofs are built from the tiles in storage with the pure
core (:mod:`coupon.ledger`); full tiles never change, so they are cached.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from coupon import codes
from coupon.errors import (
    CouponError,
    DependencyUnavailable,
    InvalidRequest,
    NotFound,
    UntrustedLogData,
)
from coupon.keys import MasterKey, Pkcs11Token
from coupon.ledger import (
    AUDIT_CONTEXT,
    HASH_SIZE,
    TILE_WIDTH,
    Checkpoint,
    TilePlan,
    TileRef,
    consistency_plan,
    encode_bundle,
    inclusion_plan,
    root_of,
    root_plan,
    sign_note,
    verify_consistency,
)
from coupon.observability import LedgerMetrics, get_logger, tracer_provider
from coupon.storage.ledger_sql import CheckpointRow, EntryRow, LedgerStore, SearchFilter

from ._entries import (
    Submission,
    build_leaf,
    check_commitment,
    event_columns,
    parse_event,
    parse_leaf,
)
from ._sequencer import Head, Receipt, Sequencer
from ._signing import CheckpointKeys
from ._subjects import SubjectVault

__all__ = ["Ledger", "LedgerConfig"]

_log = get_logger("coupon.ledger")
_TRACER = tracer_provider().get_tracer("coupon.ledger")
_TILE_CACHE = 4096  # tiles kept in memory: at most 32 MiB
_INTERIOR_CACHE = 256  # hashed tile interiors (16 KiB each): the upper tiles stay in it


@dataclass(frozen=True, slots=True)
class LedgerConfig:
    """The Ledger's settings (from :class:`coupon.settings.Settings`)."""

    database_url: str
    origin: str
    batch_size: int = 1024
    batch_wait: float = 0.0
    checkpoint_interval: float = 0.25
    checkpoint_max_age: float = 60.0
    key_overlap: float = 86_400.0
    subject_retention_days: int = 0
    #: False when ``origin`` is only derived from the URL: a log keeps the origin it was
    #: born with (its identity), whatever port it is started on later.
    origin_explicit: bool = True


class _Interiors(OrderedDict[bytes, list[list[bytes]]]):
    """A least-recently-used cache of hashed tile interiors: the upper tiles, which every
    proof reads, stay; the level-0 tiles of random proofs come and go."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity

    def get(self, key: bytes, default: Any = None) -> Any:
        value = super().get(key, default)
        if value is not default:
            self.move_to_end(key)
        return value

    def __setitem__(self, key: bytes, value: list[list[bytes]]) -> None:
        super().__setitem__(key, value)
        while len(self) > self.capacity:
            self.popitem(last=False)


class Ledger:
    """One Ledger process: the sequencer, the checkpoint publisher and the read side."""

    def __init__(
        self,
        config: LedgerConfig,
        store: LedgerStore,
        keys: CheckpointKeys,
        vault: SubjectVault,
        metrics: LedgerMetrics,
    ) -> None:
        self.config = config
        self.store = store
        self.keys = keys
        self.vault = vault
        self.metrics = metrics
        self.sequencer = Sequencer(
            store,
            batch_size=config.batch_size,
            batch_wait=config.batch_wait,
            on_commit=self._committed,
        )
        self.sequencer.changed_tiles = self._cache_tiles
        #: Trusted emitter keys by kid: events signed by anyone else are refused.
        self.emitters: dict[str, Ed25519PublicKey] = {}
        self._tiles: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        self._interiors = _Interiors(_INTERIOR_CACHE)
        self._uncheckpointed: list[tuple[int, float]] = []  # (tree size, commit time)
        self._latest: CheckpointRow | None = None
        self._seen_size = 0  # the largest stored size this process has read
        self._appended: dict[str, Any] = {}
        self._published = asyncio.Event()  # replaced after each checkpoint; waiters hold the old
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self.witnesses: list[object] = []  # hooks: each has async cosign(row) (see _witness)
        #: Closed at stop, after the tasks (e.g. the witnesses' HTTP client).
        self.closers: list[Callable[[], Awaitable[object]]] = []

    @classmethod
    async def start(
        cls,
        config: LedgerConfig,
        master: MasterKey,
        *,
        metrics: LedgerMetrics | None = None,
        hsm: Pkcs11Token | None = None,
    ) -> Ledger:
        """Connect, migrate, load keys and the head, start the sequencer and the publisher.

        With ``hsm``, checkpoint keys are generated and used inside that PKCS#11 token.
        """
        store = await LedgerStore.connect(config.database_url)
        try:
            await store.migrate()
            stored = await store.signing_keys()
            if stored and stored[0]["name"] != config.origin:
                if config.origin_explicit:
                    raise ValueError(
                        f"this log's origin is {stored[0]['name']!r}, not {config.origin!r}: "
                        "an origin is the log's identity and cannot change"
                    )
                config = replace(config, origin=stored[0]["name"])
            keys = CheckpointKeys(store, master, config.origin, hsm=hsm)
            await keys.load()
        except BaseException:
            await store.close()
            raise
        ledger = cls(config, store, keys, SubjectVault(store, master), metrics or LedgerMetrics())
        await ledger.sequencer.start()
        ledger._latest = await store.latest_checkpoint()
        try:
            await ledger.publish()
        except DependencyUnavailable as exc:  # an HSM that is down: start, unready; retried
            _log.warning("checkpoint_failed", code=exc.code.code, reason=exc.reason)
        ledger._tasks.append(
            asyncio.create_task(ledger._publisher(), name="coupon-ledger-checkpoints")
        )
        return ledger

    async def stop(self) -> None:
        """Stop the background tasks, then the sequencer, then close the database."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 3.0)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.sequencer.stop(), 3.0)
        for close in self.closers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(close(), 3.0)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.store.close(), 3.0)

    @property
    def head(self) -> Head:
        """The committed tree (it may be ahead of the newest checkpoint)."""
        return self.sequencer.head

    # -- appends ---------------------------------------------------------------------------------

    async def append(self, submission: Submission, *, verify: bool = True) -> Receipt:
        """Append one signed event; returns once it is durably committed.

        Args:
            submission: the event, its signature and its personal data.
            verify: check the signature against the trusted emitter keys (the in-process
                relay of the Authority's own events, already checked, skips this).

        Raises:
            MalformedLogData: ``CPN-LOG-005`` for a malformed event or personal data.
            UntrustedLogData: ``CPN-LOG-006`` for an unknown emitter or a bad signature.
            DependencyUnavailable: ``CPN-DEP-005`` when the log cannot take it now.
        """
        doc = parse_event(submission.event, canonical=verify)
        if verify:
            key = self.emitters.get(submission.kid)
            if key is None:
                raise UntrustedLogData(
                    codes.LOG_UNTRUSTED, f"unknown emitter key {submission.kid!r}"
                )
            try:
                key.verify(submission.signature, AUDIT_CONTEXT + submission.event)
            except InvalidSignature:
                raise UntrustedLogData(
                    codes.LOG_UNTRUSTED, "event signature does not verify"
                ) from None
        subject, plaintext = check_commitment(doc, submission.personal)
        pd = None
        columns = event_columns(doc)
        columns["subject_ref"] = None
        if plaintext:
            pd = await self.vault.encrypt(subject or "", plaintext, event_id=doc["id"])
            columns["subject_ref"] = pd["ref"]
        leaf = build_leaf(submission, pd)
        receipt = await self.sequencer.submit(leaf, columns, f"{submission.kid}:{doc['id']}"[:200])
        counter = self._appended.get(doc["service"])
        if counter is None:  # one child per emitting service (a handful)
            counter = self._appended[doc["service"]] = self.metrics.appended.labels(
                doc["service"][:32]
            )
        counter.inc()
        return receipt

    def _committed(self, head: Head, seconds: float) -> None:
        self.metrics.batch_seconds.observe(seconds)
        self.metrics.tree_size.set(head.size)
        self._uncheckpointed.append((head.size, time.monotonic()))
        if len(self._uncheckpointed) > 10_000:
            del self._uncheckpointed[:5_000]

    # -- checkpoints -----------------------------------------------------------------------------

    async def _publisher(self) -> None:
        next_retention = 0.0
        while True:
            await asyncio.sleep(self.config.checkpoint_interval)
            try:
                await self.publish()
                if time.monotonic() >= next_retention:
                    next_retention = time.monotonic() + 3600
                    if expired := await self.expire_subjects():
                        _log.info("subject_keys_expired", count=expired)
            except CouponError as exc:
                _log.warning("checkpoint_failed", code=exc.code.code, reason=exc.reason)
            except Exception as exc:  # the loop survives; the next round retries
                _log.error("checkpoint_error", error=repr(exc))

    async def publish(self, *, force: bool = False) -> CheckpointRow | None:
        """Sign and store a checkpoint when the tree grew, or when the newest is stale.

        Before signing, the new tree is proven consistent with the previous checkpoint: a
        log must never sign two views that cannot both be true.
        """
        now_ms = int(time.time() * 1000)
        latest = self._latest
        stale = (
            latest is None or now_ms - latest.published_ms >= self.config.checkpoint_max_age * 1000
        )
        if not force and not stale and latest is not None and self.head.size <= latest.size:
            self._gauges(now_ms)
            return None
        with _TRACER.start_as_current_span("coupon.ledger.checkpoint") as span:
            async with self.store.writing() as write:
                latest = await write.latest_checkpoint()
                size = await write.size()
                plan = root_plan(size)
                tiles = await write.tiles(ref.key for ref in plan.tiles())
                root = root_of(plan.hashes(tiles))
                if latest is not None:
                    if latest.size > size:
                        raise InvalidRequest(
                            codes.LOG_RANGE, f"log is behind its checkpoint {latest.size}"
                        )
                    fresh = now_ms - latest.published_ms < self.config.checkpoint_max_age * 1000
                    if latest.size == size and fresh and not force:
                        self._seen_checkpoint(latest)
                        return None
                    nodes, cplan = consistency_plan(latest.size, size)
                    proof_tiles = await write.tiles(ref.key for ref in cplan.tiles())
                    verify_consistency(
                        latest.size,
                        size,
                        nodes.rehash(cplan.hashes(proof_tiles)),
                        latest.root_hash,
                        root,
                    )
                text = Checkpoint(self.config.origin, size, root).text()
                note = sign_note(text, *self.keys.active(now_ms)).encode()
                seq = await write.add_checkpoint(size, root, note, now_ms)
            span.set_attribute("coupon.ledger.size", size)
        row = CheckpointRow(seq, size, root, note, now_ms)
        self._seen_checkpoint(row)
        done = time.monotonic()
        keep = []
        for tree_size, at in self._uncheckpointed:
            if tree_size <= size:
                self.metrics.integration_seconds.observe(done - at)
            else:
                keep.append((tree_size, at))
        self._uncheckpointed = keep
        self._gauges(now_ms)
        for witness in self.witnesses:
            cosign = getattr(witness, "cosign", None)
            if cosign is not None:
                task = asyncio.create_task(cosign(row), name="coupon-ledger-witness")
                task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)
        return row

    def _seen_checkpoint(self, row: CheckpointRow) -> None:
        self._latest = row
        self._published.set()
        self._published = asyncio.Event()

    async def wait_for_checkpoint(self, size: int, *, timeout: float) -> CheckpointRow | None:
        """The first checkpoint of at least ``size`` entries, or None after ``timeout`` s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._latest is None or self._latest.size < size:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._published.wait(), remaining)
        return self._latest

    def _gauges(self, now_ms: int) -> None:
        if self._latest is not None:
            self.metrics.checkpoint_size.set(self._latest.size)
            self.metrics.checkpoint_age.set((now_ms - self._latest.published_ms) / 1000)

    async def checkpoint(self) -> CheckpointRow:
        """The newest checkpoint with its cosignatures attached."""
        row = await self.store.latest_checkpoint()
        if row is None:
            raise NotFound(codes.NOT_FOUND, "no checkpoint yet")
        return row

    # -- tiles and proofs ------------------------------------------------------------------------

    def _cache_tiles(self, tiles: dict[tuple[int, int], bytes]) -> None:
        # Tiles only grow and a prefix never changes, so any cached version serves every
        # tree size it is wide enough for: the right edge's partial tiles are cached too.
        for key, value in tiles.items():
            cached = self._tiles.get(key)
            if cached is None or len(value) > len(cached):
                self._tiles[key] = value
            self._tiles.move_to_end(key)
        while len(self._tiles) > _TILE_CACHE:
            self._tiles.popitem(last=False)

    async def _fetch(self, refs: Sequence[TileRef]) -> dict[tuple[int, int], bytes]:
        found: dict[tuple[int, int], bytes] = {}
        missing = []
        for ref in refs:
            cached = self._tiles.get(ref.key)
            if cached is not None and len(cached) >= ref.width * HASH_SIZE:
                found[ref.key] = cached
            else:
                missing.append(ref.key)
        if missing:
            fetched = await self.store.tiles(missing)
            found.update(fetched)
            self._cache_tiles(fetched)
        return found

    async def _hashes(self, plan: TilePlan) -> list[bytes]:
        return plan.hashes(await self._fetch(plan.tiles()), interiors=self._interiors)

    async def stored_size(self, wanted: int = 0) -> int:
        """The committed tree size, asking the database when ``wanted`` is beyond what this
        process has sequenced itself (another process may have appended since)."""
        known = max(self.head.size, self._seen_size)
        if wanted > known:
            self._seen_size = known = max(known, await self.store.size())
        return known

    async def _check_size(self, size: int) -> None:
        known = await self.stored_size(size)
        if not 0 < size <= known:
            raise InvalidRequest(codes.LOG_RANGE, f"tree size {size} is not in 1..{known}")

    async def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """The inclusion proof of entry ``index`` in the tree of ``size``."""
        await self._check_size(size)
        started = time.perf_counter()
        nodes, plan = inclusion_plan(index, size)
        proof = nodes.rehash(await self._hashes(plan))
        self.metrics.proof_seconds.labels("inclusion").observe(time.perf_counter() - started)
        return proof

    async def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        """The consistency proof from tree size ``size1`` to ``size2``."""
        await self._check_size(size2)
        started = time.perf_counter()
        nodes, plan = consistency_plan(size1, size2)
        proof = nodes.rehash(await self._hashes(plan)) if nodes.ids else []
        self.metrics.proof_seconds.labels("consistency").observe(time.perf_counter() - started)
        return proof

    async def root(self, size: int) -> bytes:
        """The root of the tree of ``size``."""
        await self._check_size(size)
        return root_of(await self._hashes(root_plan(size)))

    async def tile(self, ref: TileRef) -> bytes:
        """A hash tile or an entry bundle exactly as tlog-tiles serves it.

        Raises:
            NotFound: ``CPN-REQ-008`` when the log has no such tile (yet).
        """
        level = max(ref.level, 0)
        needed = (ref.index * TILE_WIDTH + ref.width) << (8 * level)
        available = (await self.stored_size(needed)) >> (8 * level)
        if (ref.index * TILE_WIDTH + ref.width) > available:
            raise NotFound(codes.NOT_FOUND, "no such tile in the log (yet)")
        if ref.level < 0:
            start = ref.index * TILE_WIDTH
            rows = await self.store.entries(start, start + ref.width)
            return encode_bundle(r.data for r in rows)
        tiles = await self._fetch([ref])
        return tiles[ref.key][: ref.width * 32]

    # -- entries and search ----------------------------------------------------------------------

    async def entries(self, start: int, end: int) -> list[EntryRow]:
        """Entries ``[start, end)`` (at most 1000)."""
        if not 0 <= start < end or end - start > 1000:
            raise InvalidRequest(codes.LOG_RANGE, "ask for 1 to 1000 entries from index >= 0")
        return await self.store.entries(start, min(end, await self.stored_size(end)))

    async def find(self, leaf_hash: bytes) -> int:
        """The index of the entry with ``leaf_hash``."""
        index = await self.store.find_leaf(leaf_hash)
        if index is None or index >= await self.stored_size(index + 1):
            raise NotFound(codes.NOT_FOUND, "no entry with that leaf hash")
        return index

    async def search(self, where: SearchFilter, *, after: int, limit: int) -> list[EntryRow]:
        """Audit search (who / what / when / why / result)."""
        return await self.store.search(where, after=after, limit=limit)

    async def personal_data(self, row: EntryRow) -> bytes:
        """The decrypted personal data of an entry (``CPN-LOG-012`` once erased)."""
        leaf = parse_leaf(row.data)
        if leaf.pd_ref is None or leaf.pd_ciphertext is None:
            raise NotFound(codes.NOT_FOUND, "the entry has no personal data")
        return await self.vault.decrypt(
            leaf.pd_ref, leaf.pd_ciphertext, event_id=str(leaf.event.get("id"))
        )

    async def readiness(self) -> str:
        """``"ok"``, or why not: the database answers and the newest checkpoint is fresh."""
        try:
            await self.store.ping()
        except CouponError as exc:
            return exc.reason
        if self._latest is None:
            return "no checkpoint yet"
        age = time.time() - self._latest.published_ms / 1000
        if age > 2 * self.config.checkpoint_max_age + 5:
            return f"checkpoint is {age:.0f}s old"
        return "ok"

    # -- housekeeping ----------------------------------------------------------------------------

    async def expire_subjects(self) -> int:
        """Shred the keys of subjects unseen for longer than the retention period."""
        days = self.config.subject_retention_days
        if days <= 0:
            return 0
        return await self.store.expire_subject_keys(int((time.time() - days * 86_400) * 1000))
