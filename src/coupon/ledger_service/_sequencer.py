"""Sequencing and integration: group commit of entries into the tree.

Appends queue up; one task takes up to ``batch_size`` of them (whatever is queued, plus what
arrives within ``batch_wait``, 0 by default: the appends that arrive while a commit runs are
the next batch) and writes them in ONE transaction, under the log's write lock: the
entries with their indices, and every tile the new leaves change. An append is
acknowledged only after that commit, with a receipt (index, leaf hash, the tree size it
is in). Integration is part of sequencing, so a crash can never leave entries without
their tiles, and the head after a restart is simply what was committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from coupon import codes
from coupon.errors import Conflict, CouponError, DependencyUnavailable
from coupon.ledger import (
    TILE_HEIGHT,
    TILE_WIDTH,
    RightBorder,
    TileBuilder,
    hash_leaf,
    root_of,
    root_plan,
    tile_width,
)
from coupon.observability import get_logger, tracer_provider
from coupon.storage.ledger_sql import EntryRow, LedgerStore, LedgerWrite

__all__ = ["Head", "Pending", "Receipt", "Sequencer"]

_log = get_logger("coupon.ledger")
_TRACER = tracer_provider().get_tracer("coupon.ledger")


@dataclass(frozen=True, slots=True)
class Receipt:
    """The acknowledgement of a durable append."""

    index: int
    leaf_hash: bytes
    tree_size: int  # the first tree that includes it (prove inclusion at any size >= this)
    duplicate: bool = False  # it was in the log already (same emitter and event id)


@dataclass(frozen=True, slots=True)
class Head:
    """The committed tree: its size and root."""

    size: int
    root: bytes


@dataclass(slots=True)
class Pending:
    """One entry waiting to be sequenced: its leaf and search columns."""

    leaf: bytes
    columns: dict[str, Any]
    event_key: str | None
    future: asyncio.Future[Receipt]


async def load_state(write: LedgerWrite, size: int) -> tuple[TileBuilder, RightBorder]:
    """The right-edge tiles and border of the committed tree of ``size``, from storage."""
    edges: dict[int, tuple[int, int]] = {}
    level = 0
    while size >> (TILE_HEIGHT * level):
        index = size >> (TILE_HEIGHT * (level + 1))
        if tile_width(level, index, size) % TILE_WIDTH:
            edges[level] = (level, index)
        level += 1
    plan = root_plan(size)
    keys = {ref.key for ref in plan.tiles()} | set(edges.values())
    tiles = await write.tiles(keys)
    border = RightBorder(size, plan.hashes(tiles) if size else [])
    builder = TileBuilder(
        size,
        {lv: tiles[key][: tile_width(lv, key[1], size) * 32] for lv, key in edges.items()},
    )
    return builder, border


class Sequencer:
    """The one writer of the log in this process."""

    def __init__(
        self,
        store: LedgerStore,
        *,
        batch_size: int = 1024,
        batch_wait: float = 0.0,
        max_queue: int = 100_000,
        on_commit: Callable[[Head, float], None] | None = None,
    ) -> None:
        self._store = store
        self._batch_size = batch_size
        self._batch_wait = batch_wait
        self._queue: asyncio.Queue[Pending] = asyncio.Queue(max_queue)
        self._builder = TileBuilder()
        self._border = RightBorder()
        self._loaded = False
        self._task: asyncio.Task[None] | None = None
        self._on_commit = on_commit
        self.head = Head(0, root_of([]))
        #: Told every tile a commit changed (the service keeps a cache of them).
        self.changed_tiles: Callable[[dict[tuple[int, int], bytes]], None] | None = None

    async def start(self) -> None:
        """Load the committed head and start the writer."""
        async with self._store.writing() as write:
            size = await write.size()
            self._builder, self._border = await load_state(write, size)
        self._loaded = True
        self.head = Head(size, self._border.root())
        self._task = asyncio.create_task(self._run(), name="coupon-ledger-sequencer")

    async def stop(self) -> None:
        """Stop taking appends; those still queued fail with ``CPN-DEP-005``."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.future.done():
                pending.future.set_exception(_unavailable("the ledger is stopping"))

    def submit(
        self, leaf: bytes, columns: dict[str, Any], event_key: str | None
    ) -> Awaitable[Receipt]:
        """Queue one entry; the awaitable resolves once it is committed.

        Raises:
            DependencyUnavailable: ``CPN-DEP-005`` when the queue is full or stopped.
        """
        if self._task is None or self._task.done():
            raise _unavailable("the ledger is not running")
        future: asyncio.Future[Receipt] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(Pending(leaf, columns, event_key, future))
        except asyncio.QueueFull:
            raise _unavailable("the ledger's queue is full") from None
        return future

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            deadline = time.monotonic() + self._batch_wait
            while len(batch) < self._batch_size:
                if self._queue.empty():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    await asyncio.sleep(min(remaining, 0.0005))
                    continue
                batch.append(self._queue.get_nowait())
            try:
                with _TRACER.start_as_current_span("coupon.ledger.commit") as span:
                    span.set_attribute("coupon.ledger.batch", len(batch))
                    await self._write(batch)
                    span.set_attribute("coupon.ledger.size", self.head.size)
            except asyncio.CancelledError:
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(_unavailable("the ledger stopped"))
                raise
            except CouponError as exc:
                _log.error("ledger_batch_failed", code=exc.code.code, reason=exc.reason)
                self._fail(batch, exc)
            except Exception as exc:  # never leave an appender waiting forever
                _log.error("ledger_batch_error", error=repr(exc))
                self._fail(batch, _unavailable(f"append failed: {type(exc).__name__}"))

    @staticmethod
    def _fail(batch: Sequence[Pending], exc: CouponError) -> None:
        for pending in batch:
            if not pending.future.done():
                pending.future.set_exception(exc)

    async def _write(self, batch: list[Pending]) -> None:
        started = time.perf_counter()
        try:
            # Optimistic: the head is ours and the events are new. If not, the entries'
            # unique index and event-key constraint refuse the insert, and nothing commits.
            receipts, builder, border, changed = await self._commit(batch, careful=False)
        except Conflict:
            receipts, builder, border, changed = await self._commit(batch, careful=True)
        # Committed: only now does the process believe it, and answer.
        self._builder, self._border = builder, border
        self.head = Head(border.size, border.root())
        if self.changed_tiles is not None:
            self.changed_tiles(changed)
        for pending, receipt in receipts:
            if not receipt.duplicate:
                receipt = Receipt(receipt.index, receipt.leaf_hash, border.size)
            if not pending.future.done():
                pending.future.set_result(receipt)
        if self._on_commit is not None:
            self._on_commit(self.head, time.perf_counter() - started)

    async def _commit(
        self, batch: list[Pending], *, careful: bool
    ) -> tuple[
        list[tuple[Pending, Receipt]], TileBuilder, RightBorder, dict[tuple[int, int], bytes]
    ]:
        """One transaction: the new entries and every tile they change.

        ``careful``: first read the stored head (another process may have appended) and
        which events are stored already (a relay repeated after a crash).
        """
        receipts: list[tuple[Pending, Receipt]] = []
        async with self._store.writing() as write:
            builder, border = self._builder, self._border
            existing: dict[str, tuple[int, bytes]] = {}
            if careful:
                size = await write.size()
                if size != builder.size:  # another process sequenced since: take its head
                    builder, border = await load_state(write, size)
                keys = [p.event_key for p in batch if p.event_key is not None]
                existing = await write.existing(keys)
            size = builder.size
            builder = TileBuilder(
                builder.size, {lv: builder.edge(lv) for lv in range(8) if builder.edge(lv)}
            )
            border = border.copy()
            rows: list[EntryRow] = []
            hashes: list[bytes] = []
            seen: dict[str, int] = {}
            for pending in batch:
                key = pending.event_key
                if key is not None and key in existing:
                    index, leaf_hash = existing[key]
                    receipts.append((pending, Receipt(index, leaf_hash, index + 1, True)))
                    continue
                if key is not None and key in seen:  # the same event twice in one batch
                    index = seen[key]
                    receipts.append(
                        (pending, Receipt(index, hashes[index - size], index + 1, True))
                    )
                    continue
                index = size + len(rows)
                leaf_hash = hash_leaf(pending.leaf)
                if key is not None:
                    seen[key] = index
                rows.append(
                    EntryRow(
                        idx=index,
                        leaf_hash=leaf_hash,
                        data=pending.leaf,
                        event_key=key,
                        **pending.columns,
                    )
                )
                hashes.append(leaf_hash)
                receipts.append((pending, Receipt(index, leaf_hash, 0)))
            changed = builder.append(hashes)
            border.extend(hashes)
            await write.add_entries(rows)
            await write.put_tiles(changed)
        return receipts, builder, border, changed


def _unavailable(reason: str) -> DependencyUnavailable:
    return DependencyUnavailable(codes.UNAVAILABLE_LEDGER, reason)
